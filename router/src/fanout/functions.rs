//! Which functions a cross-shard read may call, and where.
//!
//! A call in the select list, ORDER BY or GROUP BY must be either one of
//! the aggregates the merge combines (at the top of a select-list item or
//! ORDER BY item) or a built-in function known to be plain: one value per
//! row, the same on every shard. Anything else is refused, because a
//! user-defined aggregate looks like any other call and concatenating its
//! per-shard results would be a wrong answer.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Function, Ident, ObjectName, ObjectNamePart, visit_expressions};

use super::Unsupported;

fn refuse(msg: impl Into<String>) -> Unsupported {
    Unsupported(msg.into())
}

/// Aggregates the merge combines.
pub(crate) const AGGREGATES: &[&str] = &["count", "sum", "min", "max", "avg"];

/// Built-in aggregates (and window-only functions) it does not.
pub(crate) const OTHER_AGGREGATES: &[&str] = &[
    "any_value",
    "array_agg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "corr",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "every",
    "first_value",
    "grouping",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "lag",
    "last_value",
    "lead",
    "mode",
    "nth_value",
    "ntile",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "row_number",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
];

/// Built-in functions known to be plain (one value per row, the same on
/// every shard). Any other call in the select list, ORDER BY or GROUP BY is
/// refused: it could be a user-defined aggregate, whose per-shard results
/// cannot be concatenated.
pub(crate) const PLAIN_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "array_append",
    "array_cat",
    "array_length",
    "array_lower",
    "array_position",
    "array_prepend",
    "array_remove",
    "array_replace",
    "array_to_string",
    "array_upper",
    "ascii",
    "asin",
    "atan",
    "atan2",
    "bit_length",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "chr",
    "coalesce",
    "concat",
    "concat_ws",
    "cos",
    "cot",
    "date_bin",
    "date_part",
    "date_trunc",
    "decode",
    "degrees",
    "div",
    "encode",
    "exp",
    "extract",
    "floor",
    "format",
    "gcd",
    "greatest",
    "initcap",
    "isfinite",
    "json_array_length",
    "json_build_array",
    "json_build_object",
    "json_extract_path",
    "json_extract_path_text",
    "json_typeof",
    "jsonb_array_length",
    "jsonb_build_array",
    "jsonb_build_object",
    "jsonb_extract_path",
    "jsonb_extract_path_text",
    "jsonb_set",
    "jsonb_strip_nulls",
    "jsonb_typeof",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "lcm",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "make_interval",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "md5",
    "mod",
    "nullif",
    "num_nonnulls",
    "num_nulls",
    "octet_length",
    "overlay",
    "pi",
    "position",
    "pow",
    "power",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "radians",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_to_json",
    "rpad",
    "rtrim",
    "scale",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sign",
    "sin",
    "split_part",
    "sqrt",
    "starts_with",
    "string_to_array",
    "strpos",
    "substr",
    "substring",
    "tan",
    "to_char",
    "to_date",
    "to_hex",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
    "translate",
    "trim",
    "trunc",
    "upper",
    "width_bucket",
];

/// An identifier as PG folds it: unquoted names to lower case.
pub(crate) fn norm(id: &Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_ascii_lowercase() }
}

/// A function's name when it is unqualified or in `pg_catalog`.
pub(crate) fn builtin_name(name: &ObjectName) -> Option<String> {
    let parts: Vec<&Ident> = name
        .0
        .iter()
        .map(|p| if let ObjectNamePart::Identifier(id) = p { Some(id) } else { None })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [f] => Some(norm(f)),
        [schema, f] if norm(schema) == "pg_catalog" => Some(norm(f)),
        _ => None,
    }
}

/// Refuse what the merge cannot reproduce inside a per-row expression:
/// aggregates (`count(*) * 2`), unknown functions, and the rest.
pub(crate) fn check_plain(e: &Expr) -> Result<(), Unsupported> {
    let mut err = None;
    let _ = visit_expressions(e, |x| {
        let result = match x {
            Expr::Function(f) => check_plain_call(f),
            Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) => {
                Err(refuse("GROUPING SETS, ROLLUP and CUBE are not supported"))
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(u) => {
                err = Some(u);
                ControlFlow::Break(())
            }
        }
    });
    err.map_or(Ok(()), Err)
}

fn check_plain_call(f: &Function) -> Result<(), Unsupported> {
    if f.over.is_some() {
        return Err(refuse("window functions are not supported"));
    }
    if !f.within_group.is_empty() {
        return Err(refuse("ordered-set aggregates (WITHIN GROUP) are not supported"));
    }
    if f.filter.is_some() {
        return Err(refuse("FILTER clauses are not supported"));
    }
    match builtin_name(&f.name) {
        Some(n) if AGGREGATES.contains(&n.as_str()) => {
            Err(refuse("expressions over aggregates (such as count(*) * 2) are not supported"))
        }
        Some(n) if OTHER_AGGREGATES.contains(&n.as_str()) => Err(refuse(format!("{n}() is not supported"))),
        Some(n) if PLAIN_FUNCTIONS.contains(&n.as_str()) => Ok(()),
        _ => Err(refuse(format!(
            "function {}() is not supported (only built-in functions known not to be aggregates are)",
            f.name
        ))),
    }
}

/// Does `e` call an aggregate anywhere?
pub(crate) fn has_aggregate(e: &Expr) -> bool {
    visit_expressions(e, |x| match x {
        Expr::Function(f)
            if f.over.is_none()
                && builtin_name(&f.name)
                    .is_some_and(|n| AGGREGATES.contains(&n.as_str()) || OTHER_AGGREGATES.contains(&n.as_str())) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}
