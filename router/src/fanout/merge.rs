//! Merging the shards' rows by the spec the planner wrote.
//!
//! ```text
//!   bind: spec + RowDescription ──► column types, sort keys (type checks here)
//!   Concat:    rows ──(k-way merge by sort key, if any)──┐
//!   Distinct:  rows ──dedupe──► sort ────────────────────┤
//!   Aggregate: rows ──group, combine partials──► sort ───┴──► OFFSET, LIMIT, strip hidden
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};

use bytes::Bytes;

use super::numeric::Numeric;
use super::value::{self, Kind, Value, type_name};
use super::{AggCol, ColRef, Collation, Field, MergeError, Mode, Role, Row, SortKey, Spec};

const INT8: u32 = 20;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;

fn err(msg: impl Into<String>) -> MergeError {
    MergeError(msg.into())
}

/// One result column's type and format.
#[derive(Debug, Clone, Copy)]
struct ColType {
    oid: u32,
    kind: Option<Kind>,
    binary: bool,
}

/// A sort key bound to a result column of a known type.
struct Key<'s> {
    idx: usize,
    kind: Kind,
    binary: bool,
    spec: &'s SortKey,
}

/// The spec bound to the shards' RowDescription.
struct Bound<'s> {
    visible: usize,
    cols: Vec<ColType>,
    keys: Vec<Key<'s>>,
}

impl Bound<'_> {
    /// Decode column `i` of a row as a comparable value (`None` for NULL).
    fn value(&self, i: usize, v: &Option<Bytes>, what: &str) -> Result<Option<Value>, MergeError> {
        let c = self.cols[i];
        let kind = c.kind.ok_or_else(|| err(format!("{what}: cannot compare values of {}", type_name(c.oid))))?;
        v.as_ref().map(|b| value::decode(kind, c.binary, b).map_err(|e| err(format!("{what}: {e}")))).transpose()
    }
}

fn bind<'s>(spec: &'s Spec, fields: &[Field]) -> Result<Bound<'s>, MergeError> {
    let n = fields.len();
    if n < spec.hidden {
        return Err(err(format!("shards returned {n} columns, fewer than the {} Meridian added", spec.hidden)));
    }
    let visible = n - spec.hidden;
    let cols = fields
        .iter()
        .map(|f| match f.format {
            0 | 1 => Ok(ColType { oid: f.type_oid, kind: Kind::from_oid(f.type_oid), binary: f.format == 1 }),
            other => Err(err(format!("unknown result format code {other}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    match &spec.mode {
        Mode::Concat => {}
        Mode::Distinct => {
            if let Some((i, c)) = cols.iter().enumerate().find(|(_, c)| c.kind.is_none()) {
                return Err(err(format!(
                    "SELECT DISTINCT: cannot compare values of {} (column {}) across shards",
                    type_name(c.oid),
                    i + 1
                )));
            }
        }
        Mode::Aggregate { cols: specs, .. } => {
            if specs.len() != n {
                return Err(err(format!("shards returned {n} columns, expected {}", specs.len())));
            }
            for (i, spec) in specs.iter().enumerate() {
                check_role(spec, i, &cols)?;
            }
        }
    }
    let keys = spec
        .order
        .iter()
        .map(|k| {
            let idx = match k.col {
                ColRef::Visible(i) if i < visible => i,
                ColRef::Visible(i) => {
                    return Err(err(format!("ORDER BY {}: there is no result column {}", k.label, i + 1)));
                }
                ColRef::Hidden(j) => visible + j,
            };
            let c = cols[idx];
            let kind = sortable(c, k.collation, &format!("ORDER BY {}", k.label))?;
            Ok(Key { idx, kind, binary: c.binary, spec: k })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Bound { visible, cols, keys })
}

/// The type of a column that is compared for order (ORDER BY, min, max).
fn sortable(c: ColType, collation: Collation, what: &str) -> Result<Kind, MergeError> {
    let kind =
        c.kind.ok_or_else(|| err(format!("{what}: cannot compare values of {} across shards", type_name(c.oid))))?;
    let byte_order = match kind {
        _ if kind.is_text() => collation == Collation::C,
        Kind::Name => collation != Collation::Other,
        _ => true,
    };
    if !byte_order {
        return Err(err(format!(
            "{what}: text order depends on a collation Meridian cannot see, so shards' text can only be merged \
             in byte order; write COLLATE \"C\" on the sorted expression to sort in byte order"
        )));
    }
    Ok(kind)
}

fn check_role(spec: &AggCol, i: usize, cols: &[ColType]) -> Result<(), MergeError> {
    let c = cols[i];
    let label = &spec.label;
    match spec.role {
        Role::Carry => {}
        Role::Key if c.kind.is_none() => {
            return Err(err(format!("GROUP BY {label}: cannot group values of {} across shards", type_name(c.oid))));
        }
        Role::Key => {}
        Role::Count if c.oid != INT8 => {
            return Err(err(format!("{label}: expected a bigint count, got {}", type_name(c.oid))));
        }
        Role::Count => {}
        Role::Sum if ![INT8, NUMERIC, FLOAT4, FLOAT8].contains(&c.oid) => {
            return Err(err(format!("{label}: sum over {} cannot be merged across shards", type_name(c.oid))));
        }
        Role::Sum => {}
        Role::Min(collation) | Role::Max(collation) => {
            sortable(c, collation, label)?;
        }
        Role::Avg { sum, count } => {
            if cols[count].oid != INT8 {
                return Err(err(format!("{label}: expected a bigint count, got {}", type_name(cols[count].oid))));
            }
            match (c.oid, cols[sum].oid) {
                (NUMERIC, INT8 | NUMERIC) | (FLOAT8, FLOAT8) => {}
                (FLOAT8, FLOAT4) => {
                    return Err(err(format!(
                        "{label}: avg over real cannot be merged across shards (PostgreSQL averages real values \
                         in double precision); cast the argument to double precision"
                    )));
                }
                _ => {
                    return Err(err(format!("{label}: avg over {} cannot be merged across shards", type_name(c.oid))));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn output_fields(spec: &Spec, fields: &[Field]) -> Result<Vec<Field>, MergeError> {
    let bound = bind(spec, fields)?;
    Ok(fields[..bound.visible].to_vec())
}

pub(super) fn merge(spec: &Spec, fields: &[Field], shards: Vec<Vec<Row>>) -> Result<Vec<Row>, MergeError> {
    let b = bind(spec, fields)?;
    for (s, rows) in shards.iter().enumerate() {
        if let Some(row) = rows.iter().find(|r| r.len() != fields.len()) {
            return Err(err(format!("shard {s} returned a row of {} columns, expected {}", row.len(), fields.len())));
        }
    }
    let offset = usize::try_from(spec.offset).unwrap_or(usize::MAX);
    let limit = spec.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let mut rows = match &spec.mode {
        Mode::Concat if b.keys.is_empty() => {
            let want = limit.map_or(usize::MAX, |l| l.saturating_add(offset));
            shards.into_iter().flatten().take(want).collect()
        }
        Mode::Concat => kway(&b, shards, limit.map(|l| l.saturating_add(offset)))?,
        Mode::Distinct => sort(&b, distinct(&b, shards)?)?,
        Mode::Aggregate { grouped, cols } => sort(&b, aggregate(&b, *grouped, cols, shards)?)?,
    };
    rows.drain(..offset.min(rows.len()));
    if let Some(l) = limit {
        rows.truncate(l);
    }
    if b.visible < fields.len() {
        for row in &mut rows {
            row.truncate(b.visible);
        }
    }
    Ok(rows)
}

/// One component of a row's sort key, ordered as ORDER BY says.
#[derive(Debug)]
struct Part {
    val: Option<Value>,
    desc: bool,
    nulls_first: bool,
}

impl Ord for Part {
    fn cmp(&self, other: &Part) -> Ordering {
        match (&self.val, &other.val) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if self.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if self.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) if self.desc => b.cmp(a),
            (Some(a), Some(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Part {
    fn partial_cmp(&self, other: &Part) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Part {
    fn eq(&self, other: &Part) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Part {}

fn row_key(b: &Bound<'_>, row: &Row) -> Result<Vec<Part>, MergeError> {
    b.keys
        .iter()
        .map(|k| {
            let val = row[k.idx]
                .as_ref()
                .map(|v| value::decode(k.kind, k.binary, v).map_err(|e| err(format!("ORDER BY {}: {e}", k.spec.label))))
                .transpose()?;
            Ok(Part { val, desc: k.spec.desc, nulls_first: k.spec.nulls_first })
        })
        .collect()
}

/// A shard's next row in the k-way merge; ties go to the lower shard.
struct Head {
    key: Vec<Part>,
    shard: usize,
    row: Row,
}

impl Ord for Head {
    fn cmp(&self, other: &Head) -> Ordering {
        self.key.cmp(&other.key).then(self.shard.cmp(&other.shard))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

/// Merge rows each shard already sorted, first checking that they are
/// sorted the way the merge compares (a shard sorting by another collation
/// or type would otherwise give a silently wrong order).
fn kway(b: &Bound<'_>, shards: Vec<Vec<Row>>, want: Option<usize>) -> Result<Vec<Row>, MergeError> {
    let mut sources = Vec::with_capacity(shards.len());
    for (s, rows) in shards.into_iter().enumerate() {
        let mut keyed: Vec<(Vec<Part>, Row)> = Vec::with_capacity(rows.len());
        for row in rows {
            let key = row_key(b, &row)?;
            if keyed.last().is_some_and(|(prev, _)| *prev > key) {
                let labels: Vec<&str> = b.keys.iter().map(|k| k.spec.label.as_str()).collect();
                return Err(err(format!(
                    "shard {s} returned rows out of the order ORDER BY {} gives when compared here; \
                     the shards sort differently from the merge",
                    labels.join(", ")
                )));
            }
            keyed.push((key, row));
        }
        sources.push(keyed.into_iter());
    }
    let want = want.unwrap_or(usize::MAX);
    let mut heap = BinaryHeap::with_capacity(sources.len());
    for (shard, source) in sources.iter_mut().enumerate() {
        if let Some((key, row)) = source.next() {
            heap.push(Reverse(Head { key, shard, row }));
        }
    }
    let mut out = Vec::new();
    while out.len() < want {
        let Some(Reverse(head)) = heap.pop() else { break };
        if let Some((key, row)) = sources[head.shard].next() {
            heap.push(Reverse(Head { key, shard: head.shard, row }));
        }
        out.push(head.row);
    }
    Ok(out)
}

/// Stable sort of merged rows (groups, distinct rows) by ORDER BY.
fn sort(b: &Bound<'_>, rows: Vec<Row>) -> Result<Vec<Row>, MergeError> {
    if b.keys.is_empty() {
        return Ok(rows);
    }
    let mut keyed = rows.into_iter().map(|r| Ok((row_key(b, &r)?, r))).collect::<Result<Vec<_>, MergeError>>()?;
    keyed.sort_by(|x, y| x.0.cmp(&y.0));
    Ok(keyed.into_iter().map(|(_, r)| r).collect())
}

/// First occurrence of every distinct visible row, in shard order.
fn distinct(b: &Bound<'_>, shards: Vec<Vec<Row>>) -> Result<Vec<Row>, MergeError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for row in shards.into_iter().flatten() {
        let key = (0..b.visible)
            .map(|i| b.value(i, &row[i], &format!("SELECT DISTINCT column {}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        if seen.insert(key) {
            out.push(row);
        }
    }
    Ok(out)
}

/// A group's running partial for one column.
enum State {
    /// The column is copied from the group's first row (keys, carried
    /// columns) or computed from others (avg).
    Copied,
    Count(i128),
    Int(Option<i128>),
    Num(Option<Numeric>),
    F8(Option<f64>),
    F4(Option<f32>),
    /// The best value so far and the bytes it came in.
    Best(Option<(Value, Bytes)>),
}

struct Group {
    first: Row,
    states: Vec<State>,
}

fn aggregate(b: &Bound<'_>, grouped: bool, specs: &[AggCol], shards: Vec<Vec<Row>>) -> Result<Vec<Row>, MergeError> {
    if !grouped {
        if shards.is_empty() {
            return Err(err("no shard returned a result"));
        }
        if let Some((s, rows)) = shards.iter().enumerate().find(|(_, rows)| rows.len() != 1) {
            return Err(err(format!("shard {s} returned {} rows for an aggregate without GROUP BY", rows.len())));
        }
    }
    let key_cols: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].role == Role::Key).collect();
    let mut index: HashMap<Vec<Option<Value>>, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for row in shards.into_iter().flatten() {
        let key = key_cols
            .iter()
            .map(|&i| b.value(i, &row[i], &format!("GROUP BY {}", specs[i].label)))
            .collect::<Result<Vec<_>, _>>()?;
        match index.get(&key) {
            Some(&g) => accumulate(b, specs, &mut groups[g].states, &row)?,
            None => {
                let mut states: Vec<State> =
                    specs.iter().enumerate().map(|(i, spec)| initial(spec.role, b.cols[i].oid)).collect();
                accumulate(b, specs, &mut states, &row)?;
                index.insert(key, groups.len());
                groups.push(Group { first: row, states });
            }
        }
    }
    groups.into_iter().map(|g| finish(b, specs, g)).collect()
}

fn initial(role: Role, oid: u32) -> State {
    match (role, oid) {
        (Role::Count, _) => State::Count(0),
        (Role::Sum, INT8) => State::Int(None),
        (Role::Sum, NUMERIC) => State::Num(None),
        (Role::Sum, FLOAT8) => State::F8(None),
        (Role::Sum, FLOAT4) => State::F4(None),
        (Role::Min(_) | Role::Max(_), _) => State::Best(None),
        _ => State::Copied,
    }
}

fn accumulate(b: &Bound<'_>, specs: &[AggCol], states: &mut [State], row: &Row) -> Result<(), MergeError> {
    for (i, state) in states.iter_mut().enumerate() {
        let label = &specs[i].label;
        let binary = b.cols[i].binary;
        let bad = || err(format!("{label}: malformed {} value from a shard", type_name(b.cols[i].oid)));
        let Some(v) = &row[i] else {
            if matches!(state, State::Count(_)) {
                return Err(err(format!("{label}: a shard returned a NULL count")));
            }
            continue;
        };
        match state {
            State::Copied => {}
            State::Count(n) => *n += i128::from(value::int8(binary, v).ok_or_else(bad)?),
            State::Int(sum) => {
                let x = i128::from(value::int8(binary, v).ok_or_else(bad)?);
                *sum = Some(sum.map_or(x, |s| s + x));
            }
            State::Num(sum) => {
                let x = value::numeric(binary, v).ok_or_else(bad)?;
                *sum = Some(match sum.take() {
                    Some(s) => s.add(&x),
                    None => x,
                });
            }
            State::F8(sum) => {
                let x = value::float8(binary, v).ok_or_else(bad)?;
                *sum = Some(match *sum {
                    Some(s) => float_add(s, x, label)?,
                    None => x,
                });
            }
            State::F4(sum) => {
                let x = value::float4(binary, v).ok_or_else(bad)?;
                *sum = Some(match *sum {
                    Some(s) => {
                        let r = s + x;
                        if r.is_infinite() && s.is_finite() && x.is_finite() {
                            return Err(err(format!("{label}: value out of range: overflow")));
                        }
                        r
                    }
                    None => x,
                });
            }
            State::Best(best) => {
                let x = b.value(i, &row[i], label)?.ok_or_else(bad)?;
                let better = match (&best, specs[i].role) {
                    (None, _) => true,
                    (Some((cur, _)), Role::Min(_)) => x < *cur,
                    (Some((cur, _)), _) => x > *cur,
                };
                if better {
                    *best = Some((x, v.clone()));
                }
            }
        }
    }
    Ok(())
}

/// `float8pl`: an infinite sum of finite values is PG's overflow error.
fn float_add(a: f64, b: f64, label: &str) -> Result<f64, MergeError> {
    let r = a + b;
    if r.is_infinite() && a.is_finite() && b.is_finite() {
        return Err(err(format!("{label}: value out of range: overflow")));
    }
    Ok(r)
}

fn finish(b: &Bound<'_>, specs: &[AggCol], group: Group) -> Result<Row, MergeError> {
    let Group { first, states } = group;
    let mut out: Row = Vec::with_capacity(states.len());
    for (i, state) in states.iter().enumerate() {
        let binary = b.cols[i].binary;
        let label = &specs[i].label;
        let v = match (state, specs[i].role) {
            (State::Count(n), _) => Some(value::encode_int8(to_int8(*n, label)?, binary)),
            (State::Int(sum), _) => sum.map(|s| to_int8(s, label)).transpose()?.map(|s| value::encode_int8(s, binary)),
            (State::Num(sum), _) => sum.as_ref().map(|s| value::encode_numeric(s, binary)),
            (State::F8(sum), _) => sum.map(|s| value::encode_float8(s, binary)),
            (State::F4(sum), _) => sum.map(|s| value::encode_float4(s, binary)),
            (State::Best(best), _) => best.as_ref().map(|(_, bytes)| bytes.clone()),
            (State::Copied, Role::Avg { sum, count }) => avg(&states[sum], &states[count], binary, label)?,
            (State::Copied, _) => first[i].clone(),
        };
        out.push(v);
    }
    Ok(out)
}

fn to_int8(v: i128, label: &str) -> Result<i64, MergeError> {
    i64::try_from(v).map_err(|_| err(format!("{label}: bigint out of range")))
}

/// `avg` from the merged `sum(x)` and `count(x)`, as PG finishes it:
/// `numeric_div(sum, count)` for int and numeric input, `Sx / N` in double
/// precision for float input; NULL over no rows.
fn avg(sum: &State, count: &State, binary: bool, label: &str) -> Result<Option<Bytes>, MergeError> {
    let n = match count {
        State::Count(0) => return Ok(None),
        State::Count(n) => u64::try_from(*n).map_err(|_| err(format!("{label}: count out of range")))?,
        _ => return Err(err(format!("{label}: its count column is missing"))),
    };
    Ok(Some(match sum {
        State::Int(Some(s)) => value::encode_numeric(&Numeric::from_i128(*s).div_count(n), binary),
        State::Num(Some(s)) => value::encode_numeric(&s.div_count(n), binary),
        State::F8(Some(s)) => value::encode_float8(s / n as f64, binary),
        _ => return Err(err(format!("{label}: rows were counted but their sum is NULL"))),
    }))
}
