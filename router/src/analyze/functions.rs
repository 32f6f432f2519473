//! Which functions a replica may run: built-ins that neither write, take
//! locks, touch sequences nor change session state. Everything else, user
//! functions included, sends the statement to the primary.
//!
//! Volatile is not the same as unsafe here: `random()`, `clock_timestamp()`
//! and `pg_sleep()` give a replica's answer that is as good as the
//! primary's, so they are on the list. So are `inet_server_port()` and
//! `pg_is_in_recovery()`: they report which server answered, which is what
//! a caller asks them for (and how the tests watch routing). Functions that
//! fail on a standby or whose answer is the primary's business
//! (`pg_current_wal_lsn()`, `txid_current()`) are not.

use sqlparser::ast::{ObjectName, ObjectNamePart};

/// Is the function named `name` (as written: unquoted parts are folded to
/// lower case, `pg_catalog.` may qualify it) known to be read-safe?
pub(crate) fn is_read_safe(name: &ObjectName) -> bool {
    let ident = match name.0.as_slice() {
        [ObjectNamePart::Identifier(f)] => f,
        [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(f)] if is_pg_catalog(schema) => f,
        _ => return false,
    };
    let mut buf = [0u8; 48];
    let Some(lower) = fold(&ident.value, ident.quote_style.is_some(), &mut buf) else {
        return false;
    };
    is_safe_builtin(lower)
}

fn is_pg_catalog(schema: &sqlparser::ast::Ident) -> bool {
    if schema.quote_style.is_some() {
        schema.value == "pg_catalog"
    } else {
        schema.value.eq_ignore_ascii_case("pg_catalog")
    }
}

/// `s` folded to lower case as PostgreSQL folds an unquoted identifier, in
/// `buf`; `None` when it does not fit (no built-in has so long a name).
fn fold<'b>(s: &str, quoted: bool, buf: &'b mut [u8; 48]) -> Option<&'b str> {
    let b = s.as_bytes();
    if b.len() > buf.len() || !s.is_ascii() {
        return None;
    }
    let out = &mut buf[..b.len()];
    out.copy_from_slice(b);
    if !quoted {
        out.make_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// The allowlist, by lower-case name.
pub(crate) fn is_safe_builtin(name: &str) -> bool {
    matches!(
        name,
        // Aggregates.
        "count" | "sum" | "avg" | "min" | "max" | "array_agg" | "string_agg" | "bool_and" | "bool_or" | "every"
            | "bit_and" | "bit_or" | "bit_xor" | "json_agg" | "jsonb_agg" | "json_agg_strict" | "jsonb_agg_strict"
            | "json_object_agg" | "jsonb_object_agg" | "json_object_agg_strict" | "jsonb_object_agg_strict"
            | "json_object_agg_unique" | "jsonb_object_agg_unique" | "json_object_agg_unique_strict"
            | "jsonb_object_agg_unique_strict" | "json_arrayagg" | "json_objectagg" | "xmlagg" | "any_value"
            | "range_agg" | "range_intersect_agg" | "stddev" | "stddev_pop" | "stddev_samp" | "variance"
            | "var_pop" | "var_samp" | "corr" | "covar_pop" | "covar_samp" | "regr_avgx" | "regr_avgy"
            | "regr_count" | "regr_intercept" | "regr_r2" | "regr_slope" | "regr_sxx" | "regr_sxy" | "regr_syy"
            | "mode" | "percentile_cont" | "percentile_disc" | "grouping"
        // Window functions.
            | "row_number" | "rank" | "dense_rank" | "percent_rank" | "cume_dist" | "ntile" | "lag" | "lead"
            | "first_value" | "last_value" | "nth_value"
        // Conditionals and comparison.
            | "coalesce" | "nullif" | "greatest" | "least" | "num_nulls" | "num_nonnulls"
        // Math.
            | "abs" | "cbrt" | "ceil" | "ceiling" | "degrees" | "div" | "exp" | "factorial" | "floor" | "gcd"
            | "lcm" | "ln" | "log" | "log10" | "min_scale" | "mod" | "pi" | "power" | "pow" | "radians" | "round"
            | "scale" | "sign" | "sqrt" | "trim_scale" | "trunc" | "width_bucket" | "random" | "random_normal"
            | "acos" | "acosd" | "asin" | "asind" | "atan" | "atand" | "atan2" | "atan2d" | "cos" | "cosd" | "cot"
            | "cotd" | "sin" | "sind" | "tan" | "tand" | "sinh" | "cosh" | "tanh" | "asinh" | "acosh" | "atanh"
            | "erf" | "erfc" | "gamma" | "lgamma"
        // Strings and bytes.
            | "ascii" | "bit_length" | "btrim" | "char_length" | "character_length" | "chr" | "concat"
            | "concat_ws" | "format" | "initcap" | "left" | "length" | "lower" | "lpad" | "ltrim" | "md5"
            | "normalize" | "octet_length" | "overlay" | "parse_ident" | "position" | "quote_ident"
            | "quote_literal" | "quote_nullable" | "regexp_count" | "regexp_instr" | "regexp_like"
            | "regexp_match" | "regexp_matches" | "regexp_replace" | "regexp_split_to_array"
            | "regexp_split_to_table" | "regexp_substr" | "repeat" | "replace" | "reverse" | "right" | "rpad"
            | "rtrim" | "split_part" | "starts_with" | "string_to_array" | "string_to_table" | "strpos" | "substr"
            | "substring" | "to_ascii" | "to_hex" | "to_bin" | "to_oct" | "translate" | "trim" | "unistr"
            | "upper" | "casefold" | "encode" | "decode" | "convert" | "convert_from" | "convert_to" | "sha224"
            | "sha256" | "sha384" | "sha512" | "crc32" | "crc32c" | "get_bit" | "get_byte" | "set_bit"
            | "set_byte" | "bit_count" | "to_number" | "to_char"
        // UUIDs.
            | "gen_random_uuid" | "uuidv4" | "uuidv7" | "uuid_extract_timestamp" | "uuid_extract_version"
        // Date and time.
            | "age" | "clock_timestamp" | "current_date" | "current_time" | "current_timestamp" | "date_add"
            | "date_bin" | "date_part" | "date_subtract" | "date_trunc" | "extract" | "isfinite" | "justify_days"
            | "justify_hours" | "justify_interval" | "localtime" | "localtimestamp" | "make_date"
            | "make_interval" | "make_time" | "make_timestamp" | "make_timestamptz" | "now"
            | "statement_timestamp" | "timeofday" | "transaction_timestamp" | "to_timestamp" | "to_date"
            | "timezone" | "overlaps" | "pg_sleep" | "pg_sleep_for" | "pg_sleep_until"
        // JSON.
            | "to_json" | "to_jsonb" | "array_to_json" | "row_to_json" | "json_build_array" | "jsonb_build_array"
            | "json_build_object" | "jsonb_build_object" | "json_object" | "jsonb_object" | "json_array"
            | "json_array_elements" | "jsonb_array_elements" | "json_array_elements_text"
            | "jsonb_array_elements_text" | "json_array_length" | "jsonb_array_length" | "json_each"
            | "jsonb_each" | "json_each_text" | "jsonb_each_text" | "json_extract_path" | "jsonb_extract_path"
            | "json_extract_path_text" | "jsonb_extract_path_text" | "json_object_keys" | "jsonb_object_keys"
            | "json_populate_record" | "jsonb_populate_record" | "jsonb_populate_record_valid"
            | "json_populate_recordset" | "jsonb_populate_recordset" | "json_to_record" | "jsonb_to_record"
            | "json_to_recordset" | "jsonb_to_recordset" | "json_strip_nulls" | "jsonb_strip_nulls" | "jsonb_set"
            | "jsonb_set_lax" | "jsonb_insert" | "jsonb_pretty" | "json_typeof" | "jsonb_typeof"
            | "jsonb_path_exists" | "jsonb_path_match" | "jsonb_path_query" | "jsonb_path_query_array"
            | "jsonb_path_query_first" | "jsonb_path_exists_tz" | "jsonb_path_match_tz" | "jsonb_path_query_tz"
            | "jsonb_path_query_array_tz" | "jsonb_path_query_first_tz" | "json_scalar" | "json_serialize"
            | "json_query" | "json_value" | "json_exists"
        // Arrays, rows and set-returning helpers.
            | "array" | "row" | "array_append" | "array_cat" | "array_dims" | "array_fill" | "array_length"
            | "array_lower" | "array_ndims" | "array_position" | "array_positions" | "array_prepend"
            | "array_remove" | "array_replace" | "array_reverse" | "array_sample" | "array_shuffle"
            | "array_sort" | "array_to_string" | "array_upper" | "cardinality" | "trim_array" | "unnest"
            | "generate_series" | "generate_subscripts"
        // Ranges.
            | "isempty" | "lower_inc" | "upper_inc" | "lower_inf" | "upper_inf" | "range_merge" | "int4range"
            | "int8range" | "numrange" | "tsrange" | "tstzrange" | "daterange" | "int4multirange"
            | "int8multirange" | "nummultirange" | "tsmultirange" | "tstzmultirange" | "datemultirange"
            | "multirange"
        // Network addresses.
            | "host" | "hostmask" | "masklen" | "netmask" | "network" | "broadcast" | "family" | "abbrev"
            | "inet_merge" | "inet_same_family" | "set_masklen"
        // Text search.
            | "to_tsvector" | "to_tsquery" | "plainto_tsquery" | "phraseto_tsquery" | "websearch_to_tsquery"
            | "ts_rank" | "ts_rank_cd" | "ts_headline" | "setweight" | "strip" | "numnode" | "querytree"
            | "tsvector_to_array" | "array_to_tsvector" | "ts_delete" | "ts_filter" | "ts_rewrite"
            | "get_current_ts_config" | "ts_lexize"
        // Type-named conversions (`date(ts)`, `int8(x)`, `text(x)`).
            | "date" | "time" | "timestamp" | "timestamptz" | "interval" | "text" | "varchar" | "numeric"
            | "int2" | "int4" | "int8" | "float4" | "float8" | "bool" | "uuid" | "inet" | "cidr" | "bytea"
            | "to_regclass" | "to_regtype" | "to_regproc" | "to_regprocedure" | "to_regnamespace" | "to_regrole"
        // Session and catalog information that a replica answers the same way.
            | "current_user" | "current_role" | "session_user" | "user" | "current_catalog" | "current_schema"
            | "current_schemas" | "current_database" | "current_setting" | "current_query" | "version"
            | "pg_backend_pid" | "inet_client_addr" | "inet_client_port" | "inet_server_addr"
            | "inet_server_port" | "pg_is_in_recovery" | "pg_typeof" | "format_type" | "pg_get_viewdef" | "pg_get_indexdef"
            | "pg_get_constraintdef" | "pg_get_functiondef" | "pg_get_function_arguments"
            | "pg_get_function_identity_arguments" | "pg_get_function_result" | "pg_get_triggerdef"
            | "pg_get_ruledef" | "pg_get_expr" | "pg_get_userbyid" | "pg_get_serial_sequence"
            | "pg_get_statisticsobjdef" | "pg_get_keywords" | "pg_table_size" | "pg_relation_size"
            | "pg_total_relation_size" | "pg_indexes_size" | "pg_database_size" | "pg_tablespace_size"
            | "pg_size_pretty" | "pg_size_bytes" | "pg_column_size" | "pg_relation_filenode"
            | "has_table_privilege" | "has_schema_privilege" | "has_database_privilege"
            | "has_column_privilege" | "has_any_column_privilege" | "has_function_privilege"
            | "has_sequence_privilege" | "has_type_privilege" | "pg_has_role" | "obj_description"
            | "col_description" | "shobj_description" | "pg_table_is_visible" | "pg_type_is_visible"
            | "pg_function_is_visible" | "pg_encoding_to_char" | "pg_char_to_encoding" | "pg_client_encoding"
            | "pg_postmaster_start_time" | "pg_conf_load_time" | "pg_input_is_valid" | "pg_input_error_info"
            | "pg_column_compression" | "pg_index_column_has_property" | "pg_index_has_property"
            | "pg_indexam_has_property" | "pg_options_to_table" | "pg_tablespace_location"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::Ident;

    fn name(parts: &[&str]) -> ObjectName {
        ObjectName(
            parts
                .iter()
                .map(|p| match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                    Some(q) => ObjectNamePart::Identifier(Ident::with_quote('"', q)),
                    None => ObjectNamePart::Identifier(Ident::new(*p)),
                })
                .collect(),
        )
    }

    #[test]
    fn allowlist() {
        for ok in [&["count"][..], &["NOW"], &["pg_catalog", "lower"], &["PG_CATALOG", "Upper"], &["\"lower\""]] {
            assert!(is_read_safe(&name(ok)), "{ok:?}");
        }
        for bad in [
            &["nextval"][..],
            &["setval"],
            &["currval"],
            &["lastval"],
            &["pg_advisory_lock"],
            &["set_config"],
            &["pg_export_snapshot"],
            &["txid_current"],
            &["pg_current_xact_id"],
            &["dblink"],
            &["lo_import"],
            &["my_func"],
            &["public", "lower"],
            &["\"LOWER\""],
            &["\"pg_catalog\"", "\"NOW\""],
            &["a_function_name_that_is_far_too_long_to_be_any_builtin_at_all"],
        ] {
            assert!(!is_read_safe(&name(bad)), "{bad:?}");
        }
    }
}
