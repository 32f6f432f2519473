//! Reads over every shard: the SQL each shard runs and how their rows merge.
//!
//! A SELECT on a sharded table without a shard key runs on every shard, and
//! the client must get exactly the rows one PostgreSQL holding all the data
//! would return. This module is the pure half of that: [`plan()`] turns the
//! client's SQL into the statement every shard runs plus a private merge
//! spec, and [`FanoutPlan::merge`] turns the shards' rows into the client's.
//! What it cannot merge exactly it refuses: [`Unsupported`] at plan time
//! (from the SQL alone), [`MergeError`] at merge time (once the column
//! types are known). It never guesses.
//!
//! ```text
//!   client SQL ──plan()──► FanoutPlan { shard_sql, spec }
//!                               │
//!        every shard runs shard_sql (same parameters, same result formats)
//!                               │
//!   shards' RowDescription ──output_fields()──► client's RowDescription
//!   shards' DataRows ───────────merge()───────► client's DataRows
//! ```
//!
//! # What merges
//!
//! * Plain rows: concatenated in shard order.
//! * `ORDER BY` output columns (by name, alias, position, or an expression
//!   equal to a select-list expression), `ASC`/`DESC`, `NULLS FIRST/LAST`
//!   with PG's defaults: a k-way merge of the shards' sorted rows, which
//!   checks that each shard's rows really are in the merge's order. A sort
//!   expression that is not an output column is appended to `shard_sql` as
//!   a hidden trailing column and stripped from the output.
//! * `LIMIT n` / `OFFSET m` / `FETCH FIRST n ROWS ONLY` (integer constants):
//!   for plain rows shards get `LIMIT n+m` and no OFFSET; the merge applies
//!   both. With aggregates or DISTINCT shards get neither (groups span
//!   shards) and the merge applies both to the merged rows.
//! * `count(*)`, `count(x)`, `sum`, `min`, `max`, `avg`, with or without
//!   `GROUP BY`: partials combined as PG's own parallel aggregation does.
//!   `avg(x)` also asks the shards for `sum(x)` and `count(x)` (hidden) and
//!   divides like PG (`numeric_div` scale rules; float8 for float input).
//!   Group keys not in the select list become hidden columns too. Groups
//!   are sorted by the merge itself; without ORDER BY they come in the
//!   order they were first seen (SQL leaves it unspecified).
//! * `SELECT DISTINCT` (without aggregates): rows deduplicated across shards.
//!
//! Only the select list, ORDER BY and GROUP BY are analyzed; WHERE runs on
//! each shard as written. Whether the table is sharded, and so whether to
//! fan out at all, is the analyzer's call, not this module's.
//!
//! # What is refused
//!
//! Window functions, `DISTINCT ON`, aggregates with `DISTINCT`/`FILTER`/
//! `ORDER BY`/`WITHIN GROUP`, other aggregates (`string_agg`, `array_agg`,
//! `stddev`...), expressions over aggregates (`count(*) * 2`), `HAVING`,
//! `GROUPING SETS`/`ROLLUP`/`CUBE`, set operations, CTEs, subqueries
//! anywhere, joins and anything but one plain table in `FROM`, `FOR
//! UPDATE`, `LIMIT`/`OFFSET` given as parameters or expressions, `FETCH ...
//! WITH TIES`, and functions Meridian does not know to be plain (non-
//! aggregate) functions in the select list, `ORDER BY` or `GROUP BY`: a
//! user-defined aggregate looks like any other call, and concatenating its
//! per-shard results would be a wrong answer.
//!
//! # Comparing and grouping values
//!
//! Values are read by type OID in the format the shard used: int2/4/8 and
//! oid, float4/8 (NaN above everything, `-0 = 0`), numeric (exact, NaN and
//! ±Infinity; `1.0` and `1.00` are one group), bool, text/varchar/bpchar/
//! name, bytea (hex output), uuid, date, time, timestamp, timestamptz (text
//! in ISO `DateStyle`, BC and 5-digit years handled). Other types are
//! refused where they would be compared, summed or grouped; they pass
//! through untouched otherwise.
//!
//! Text order depends on the collation, which Meridian cannot see, and the
//! merge can only compare bytes. Byte order is PG's order exactly under
//! `COLLATE "C"`, so sorting (and `min`/`max`) on text/varchar/bpchar is
//! merged only when the query says `COLLATE "C"` (on the `ORDER BY`
//! expression, the select-list expression it names, or the `min`/`max`
//! argument); then the shards sort in byte order too. Otherwise the merge
//! refuses. `name` sorts in "C" by default and needs nothing. Grouping
//! text compares bytes, which is PG's equality for every deterministic
//! collation (all libc collations and the database default); a column with
//! a nondeterministic ICU collation would group differently (not detected).
//!
//! # What the executor must honour
//!
//! * Send every shard exactly [`FanoutPlan::shard_sql`], with the client's
//!   bind parameters unchanged. Each shard reads its own snapshot; the
//!   merged answer is as consistent as those snapshots are with each other.
//! * Use the same session settings on every shard, as the client set them:
//!   `DateStyle` (ISO for date/time sort and group keys), `TimeZone`,
//!   `extra_float_digits` (≥ 1, the default, for float sums and averages in
//!   text format: the merge reads the shards' floats and prints its results
//!   shortest-exact, as PG does at that setting), `bytea_output`, and a
//!   `client_encoding` equal to the server encoding when text is sorted
//!   (byte order is "C" order only in the server's encoding).
//! * Ask every shard for the result formats the client asked for; if the
//!   client's Bind lists one format per column, append a format for each of
//!   the [`FanoutPlan::hidden_columns`] trailing columns (text or binary:
//!   the merge reads either).
//! * Check that the shards' RowDescriptions agree ([`common_fields`]) and
//!   pass that one to [`FanoutPlan::output_fields`] and [`FanoutPlan::merge`]
//!   with every shard's complete result, in shard order. Send the client the
//!   returned fields (if it described), the rows (honouring an Execute row
//!   limit on the merged rows) and `SELECT <number of rows>`.
//! * Report [`Unsupported`] and [`MergeError`] to the client as errors
//!   (SQLSTATE 0A000 feature_not_supported suits both), never partial rows.
//!
//! Float `sum`/`avg` add the shards' partial sums, as PG's parallel
//! aggregation adds its workers': the last bits can differ from a serial
//! scan, exactly as they can between two PG plans.

mod datetime;
mod functions;
mod layout;
mod merge;
mod numeric;
mod plan;
mod value;

#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod plan_tests;

pub use bytes::Bytes;

/// The statement cannot be answered correctly across shards; the text names
/// the construct ("window functions are not supported").
///
/// ```
/// let err = router::fanout::plan("SELECT rank() OVER (ORDER BY x) FROM t").unwrap_err();
/// assert_eq!(err.to_string(), "cross-shard read: window functions are not supported");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cross-shard read: {0}")]
pub struct Unsupported(pub String);

/// The shards' results cannot be merged exactly: a type the merge cannot
/// compare or add, text ordered by an unknown collation, shards that
/// disagree, malformed values. The text says which column and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cross-shard read: {0}")]
pub struct MergeError(pub String);

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    /// The table's OID, which differs between shards (each database has its
    /// own); the client sees the first shard's.
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// One DataRow: a value per column, `None` for NULL. Values are the bytes
/// PG sent (text or binary, as the column's [`Field::format`] says), kept as
/// [`Bytes`] so that values passing through are never copied.
pub type Row = Vec<Option<Bytes>>;

/// How one keyless read runs on every shard and how the results merge.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    /// What every shard runs: the client's statement with hidden trailing
    /// select-list columns appended (sort keys, group keys, avg's sum and
    /// count) and LIMIT/OFFSET rewritten. `$n` placeholders are untouched.
    pub shard_sql: String,
    spec: Spec,
}

/// Plan a keyless SELECT over every shard (the statement as the client sent
/// it, one statement, with or without a trailing `;`).
pub fn plan(sql: &str) -> Result<FanoutPlan, Unsupported> {
    plan::plan(sql)
}

/// The one RowDescription all shards sent: names, types, sizes, modifiers
/// and formats must agree (table OIDs and column numbers may differ).
pub fn common_fields(per_shard: &[Vec<Field>]) -> Result<&[Field], MergeError> {
    let Some((first, rest)) = per_shard.split_first() else {
        return Err(MergeError("no shard described its result".into()));
    };
    for (i, other) in rest.iter().enumerate() {
        let same = first.len() == other.len()
            && first.iter().zip(other).all(|(a, b)| {
                (&a.name, a.type_oid, a.type_size, a.type_modifier, a.format)
                    == (&b.name, b.type_oid, b.type_size, b.type_modifier, b.format)
            });
        if !same {
            return Err(MergeError(format!("shard {} described different result columns than shard 0", i + 1)));
        }
    }
    Ok(first)
}

impl FanoutPlan {
    /// How many trailing columns of `shard_sql`'s result are Meridian's and
    /// not the client's.
    pub fn hidden_columns(&self) -> usize {
        self.spec.hidden
    }

    /// The RowDescription the client sees, from the one every shard sent
    /// (see [`common_fields`]). Fails early, before any row is sent, when
    /// the column types cannot be merged.
    pub fn output_fields(&self, shard_fields: &[Field]) -> Result<Vec<Field>, MergeError> {
        merge::output_fields(&self.spec, shard_fields)
    }

    /// Merge every shard's rows (in the shards' order) into the client's rows.
    pub fn merge(&self, shard_fields: &[Field], shards: Vec<Vec<Row>>) -> Result<Vec<Row>, MergeError> {
        merge::merge(&self.spec, shard_fields, shards)
    }
}

/// The private merge spec: what `plan` learned from the SQL.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    /// Trailing columns of the shard result the client does not see.
    hidden: usize,
    mode: Mode,
    /// The client's ORDER BY, resolved to result columns.
    order: Vec<SortKey>,
    offset: u64,
    limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// Rows pass through: concatenated, or k-way merged when `order` is set.
    Concat,
    /// `SELECT DISTINCT`: rows equal in every visible column are one row.
    Distinct,
    /// Aggregates, GROUP BY or both: one column spec per shard column
    /// (visible, then hidden). Without GROUP BY (`grouped` false) every
    /// shard returns exactly one row and the result is one row.
    Aggregate { grouped: bool, cols: Vec<AggCol> },
}

#[derive(Debug, Clone, PartialEq)]
struct AggCol {
    role: Role,
    /// The select-list expression, for messages.
    label: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    /// Part of the group key.
    Key,
    /// The same for every row of a group (a function of the keys, or a
    /// constant): the first shard's value.
    Carry,
    Count,
    Sum,
    Min(Collation),
    Max(Collation),
    /// `avg(x)`: computed from the hidden `sum(x)` and `count(x)` columns.
    Avg {
        sum: usize,
        count: usize,
    },
}

/// The collation a sort (or min/max) runs under, as far as the SQL says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collation {
    /// None written: the column's (unknown to us).
    Default,
    /// `COLLATE "C"` or `"POSIX"`: byte order.
    C,
    /// Some other explicit collation.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
struct SortKey {
    col: ColRef,
    desc: bool,
    nulls_first: bool,
    collation: Collation,
    /// The ORDER BY item as written, for messages.
    label: String,
}

/// A column of the shard result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColRef {
    /// The i-th column the client sees.
    Visible(usize),
    /// The i-th hidden column (after all visible ones).
    Hidden(usize),
}
