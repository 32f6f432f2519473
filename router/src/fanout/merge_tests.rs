//! Merging hand-built shard results, in text and binary formats. Expected
//! values are what PostgreSQL 15 returns for the same data in one table.

use proptest::prelude::*;

use super::*;

const BOOL: u32 = 16;
const NAME: u32 = 19;
const INT8: u32 = 20;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const INTERVAL: u32 = 1186;
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const NUMERIC: u32 = 1700;
const UUID: u32 = 2950;

fn field(name: &str, type_oid: u32, format: i16) -> Field {
    Field { name: name.into(), table_oid: 0, column: 0, type_oid, type_size: -1, type_modifier: -1, format }
}

/// Text-format fields from `(name, oid)`.
fn text_fields(cols: &[(&str, u32)]) -> Vec<Field> {
    cols.iter().map(|&(n, oid)| field(n, oid, 0)).collect()
}

/// A text-format row; `None` is NULL.
fn row(vals: &[Option<&str>]) -> Row {
    vals.iter().map(|v| v.map(|s| Bytes::copy_from_slice(s.as_bytes()))).collect()
}

fn rows(rs: &[&[Option<&str>]]) -> Vec<Row> {
    rs.iter().map(|r| row(r)).collect()
}

/// The merged rows as text (NULL as "NULL").
fn texts(rows: &[Row]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            r.iter().map(|v| v.as_ref().map_or("NULL".into(), |b| String::from_utf8_lossy(b).into_owned())).collect()
        })
        .collect()
}

fn merge_text(sql: &str, cols: &[(&str, u32)], shards: &[&[&[Option<&str>]]]) -> Result<Vec<Vec<String>>, MergeError> {
    let p = plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let fields = text_fields(cols);
    let shards = shards.iter().map(|s| rows(s)).collect();
    p.merge(&fields, shards).map(|r| texts(&r))
}

fn b(bytes: &[u8]) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(bytes))
}

fn i4(v: i32) -> Option<Bytes> {
    b(&v.to_be_bytes())
}

fn i8(v: i64) -> Option<Bytes> {
    b(&v.to_be_bytes())
}

fn f8(v: f64) -> Option<Bytes> {
    b(&v.to_be_bytes())
}

fn num(text: &str) -> Option<Bytes> {
    b(&numeric::Numeric::parse_text(text.as_bytes()).unwrap().to_binary())
}

fn s(v: &str) -> Option<&str> {
    Some(v)
}

#[test]
fn concatenates_in_shard_order() {
    let got = merge_text(
        "SELECT a, b FROM t WHERE c = $1",
        &[("a", INT4), ("b", TEXT)],
        &[&[&[s("1"), s("x")], &[s("2"), None]], &[], &[&[s("0"), s("z")]]],
    );
    assert_eq!(got.unwrap(), [["1", "x"], ["2", "NULL"], ["0", "z"]]);
    // LIMIT/OFFSET without ORDER BY: some rows, the right number.
    let got = merge_text("SELECT a FROM t LIMIT 2 OFFSET 1", &[("a", INT4)], &[&[&[s("1")], &[s("2")]], &[&[s("3")]]]);
    assert_eq!(got.unwrap(), [["2"], ["3"]]);
    let got = merge_text("SELECT a FROM t LIMIT 0", &[("a", INT4)], &[&[&[s("1")]]]);
    assert_eq!(got.unwrap(), Vec::<Vec<String>>::new());
    // Columns of unknown types pass through untouched.
    let got = merge_text("SELECT i FROM t", &[("i", INTERVAL)], &[&[&[s("1 day")]], &[&[s("02:00:00")]]]);
    assert_eq!(got.unwrap(), [["1 day"], ["02:00:00"]]);
}

#[test]
fn order_by_ints_nulls_and_directions() {
    let shards: &[&[&[Option<&str>]]] = &[
        &[&[s("1"), s("a")], &[s("4"), s("b")], &[None, s("c")]],
        &[&[s("-3"), s("d")], &[s("4"), s("e")], &[s("10"), s("f")]],
    ];
    let got = merge_text("SELECT k, v FROM t ORDER BY k", &[("k", INT4), ("v", TEXT)], shards).unwrap();
    let vs: Vec<&str> = got.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(vs, ["d", "a", "b", "e", "f", "c"]);
    let got =
        merge_text("SELECT k, v FROM t ORDER BY 1 LIMIT 2 OFFSET 2", &[("k", INT4), ("v", TEXT)], shards).unwrap();
    assert_eq!(got, [["4", "b"], ["4", "e"]]);

    let desc: &[&[&[Option<&str>]]] = &[
        &[&[None, s("c")], &[s("4"), s("b")], &[s("1"), s("a")]],
        &[&[s("10"), s("f")], &[s("4"), s("e")], &[s("-3"), s("d")]],
    ];
    // DESC puts NULLs first by default.
    let got = merge_text("SELECT k, v FROM t ORDER BY k DESC", &[("k", INT4), ("v", TEXT)], desc).unwrap();
    let vs: Vec<&str> = got.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(vs, ["c", "f", "b", "e", "a", "d"]);
}

#[test]
fn order_by_hidden_column_binary() {
    let p = plan("SELECT v FROM t ORDER BY k DESC NULLS LAST LIMIT 3").unwrap();
    assert_eq!(p.hidden_columns(), 1);
    let fields = vec![field("v", TEXT, 1), field("__meridian_1", INT8, 1)];
    assert_eq!(p.output_fields(&fields).unwrap(), vec![field("v", TEXT, 1)]);
    let shards =
        vec![vec![vec![b(b"x"), i8(9)], vec![b(b"y"), i8(-1)], vec![b(b"n"), None]], vec![vec![b(b"z"), i8(5)]]];
    let got = p.merge(&fields, shards).unwrap();
    assert_eq!(got, vec![vec![b(b"x")], vec![b(b"z")], vec![b(b"y")]]);
}

#[test]
fn order_by_floats_and_numerics() {
    let got = merge_text(
        "SELECT f FROM t ORDER BY f",
        &[("f", FLOAT8)],
        &[&[&[s("-Infinity")], &[s("-0")], &[s("1e+15")], &[s("NaN")]], &[&[s("-1.5")], &[s("0")], &[s("Infinity")]]],
    )
    .unwrap();
    assert_eq!(got.concat(), ["-Infinity", "-1.5", "-0", "0", "1e+15", "Infinity", "NaN"]);
    let got = merge_text(
        "SELECT n FROM t ORDER BY n DESC",
        &[("n", NUMERIC)],
        &[
            &[&[s("NaN")], &[s("10.5")], &[s("-2")]],
            &[&[s("Infinity")], &[s("10.50")], &[s("9.99")], &[s("-Infinity")]],
        ],
    )
    .unwrap();
    assert_eq!(got.concat(), ["NaN", "Infinity", "10.5", "10.50", "9.99", "-2", "-Infinity"]);

    let p = plan("SELECT n, f FROM t ORDER BY n, f DESC").unwrap();
    let fields = vec![field("n", NUMERIC, 1), field("f", FLOAT8, 1)];
    let shards = vec![
        vec![vec![num("-1.25"), f8(1.0)], vec![num("3"), f8(f64::NAN)], vec![num("3"), f8(2.0)]],
        vec![vec![num("-1.250"), f8(0.5)], vec![num("3.0"), f8(2.5)], vec![num("NaN"), f8(0.0)]],
    ];
    let got = p.merge(&fields, shards).unwrap();
    let firsts: Vec<_> = got.iter().map(|r| r[1].clone()).collect();
    assert_eq!(firsts, vec![f8(1.0), f8(0.5), f8(f64::NAN), f8(2.5), f8(2.0), f8(0.0)]);
}

#[test]
fn order_by_text_needs_c_collation() {
    let shards: &[&[&[Option<&str>]]] = &[&[&[s("B")], &[s("a")]], &[&[s("C")], &[s("b")]]];
    let err = merge_text("SELECT name FROM t ORDER BY name", &[("name", TEXT)], shards).unwrap_err();
    assert!(err.0.contains("COLLATE \"C\""), "{err}");
    let p = plan("SELECT name FROM t ORDER BY name").unwrap();
    assert!(p.output_fields(&text_fields(&[("name", TEXT)])).is_err(), "refused before any row is sent");
    let got = merge_text("SELECT name FROM t ORDER BY name COLLATE \"C\"", &[("name", TEXT)], shards).unwrap();
    assert_eq!(got.concat(), ["B", "C", "a", "b"]);
    // `name` sorts in "C" unless told otherwise.
    let got = merge_text("SELECT relname FROM t ORDER BY relname", &[("relname", NAME)], shards).unwrap();
    assert_eq!(got.concat(), ["B", "C", "a", "b"]);
    let err = merge_text("SELECT r FROM t ORDER BY r COLLATE \"en_US\"", &[("r", NAME)], shards).unwrap_err();
    assert!(err.0.contains("collation"), "{err}");
    // A shard that sorted differently (here: case-insensitively) is caught.
    let bad: &[&[&[Option<&str>]]] = &[&[&[s("a")], &[s("B")]], &[&[s("C")]]];
    let err = merge_text("SELECT name FROM t ORDER BY name COLLATE \"C\"", &[("name", TEXT)], bad).unwrap_err();
    assert!(err.0.contains("shard 0 returned rows out of the order"), "{err}");
}

#[test]
fn order_by_dates_times_uuids_bools() {
    let got = merge_text(
        "SELECT d FROM t ORDER BY d",
        &[("d", DATE)],
        &[&[&[s("-infinity")], &[s("0044-03-15 BC")], &[s("9999-12-31")]], &[&[s("0001-01-01")], &[s("10000-01-01")]]],
    )
    .unwrap();
    assert_eq!(got.concat(), ["-infinity", "0044-03-15 BC", "0001-01-01", "9999-12-31", "10000-01-01"]);
    let got = merge_text(
        "SELECT ts FROM t ORDER BY ts",
        &[("ts", TIMESTAMPTZ)],
        &[
            &[&[s("2024-03-10 01:30:00-05")], &[s("2024-03-10 03:15:00-04")]],
            &[&[s("2024-03-10 03:00:00-04")], &[s("2024-03-10 07:20:00.5+00")]],
        ],
    )
    .unwrap();
    assert_eq!(
        got.concat(),
        ["2024-03-10 01:30:00-05", "2024-03-10 03:00:00-04", "2024-03-10 03:15:00-04", "2024-03-10 07:20:00.5+00"]
    );
    let err = merge_text(
        "SELECT ts FROM t ORDER BY ts",
        &[("ts", TIMESTAMP)],
        &[&[&[s("03/10/2024 01:30:00")]], &[&[s("03/09/2024 01:30:00")]]],
    )
    .unwrap_err();
    assert!(err.0.contains("ISO"), "{err}");
    let p = plan("SELECT d FROM t ORDER BY d DESC").unwrap();
    let fields = vec![field("d", DATE, 1)];
    let shards = vec![vec![vec![i4(100)], vec![i4(-5)]], vec![vec![i4(i32::MAX)], vec![i4(0)]]];
    let got = p.merge(&fields, shards).unwrap();
    assert_eq!(got.concat(), vec![i4(i32::MAX), i4(100), i4(0), i4(-5)]);

    let got = merge_text(
        "SELECT u FROM t ORDER BY u",
        &[("u", UUID)],
        &[&[&[s("0a000000-0000-0000-0000-000000000000")]], &[&[s("00000000-0000-0000-0000-0000000000ff")]]],
    )
    .unwrap();
    assert_eq!(got.concat(), ["00000000-0000-0000-0000-0000000000ff", "0a000000-0000-0000-0000-000000000000"]);
    let got =
        merge_text("SELECT ok FROM t ORDER BY ok DESC", &[("ok", BOOL)], &[&[&[s("f")]], &[&[s("t")], &[s("f")]]]);
    assert_eq!(got.unwrap().concat(), ["t", "f", "f"]);
}

#[test]
fn unknown_sort_type_is_refused_by_oid() {
    let err = merge_text("SELECT i FROM t ORDER BY i", &[("i", INTERVAL)], &[&[&[s("1 day")]]]).unwrap_err();
    assert_eq!(err.0, "ORDER BY i: cannot compare values of interval (oid 1186) across shards");
    let err = merge_text("SELECT j FROM t ORDER BY j", &[("j", 3802)], &[&[&[s("{}")]]]).unwrap_err();
    assert!(err.0.contains("type oid 3802"), "{err}");
}

#[test]
fn aggregates_without_group_by_text() {
    let sql = "SELECT count(*), count(x), sum(x), min(x), max(x), avg(x) FROM t";
    let p = plan(sql).unwrap();
    let cols = [
        ("count", INT8),
        ("count", INT8),
        ("sum", INT8),
        ("min", INT4),
        ("max", INT4),
        ("avg", NUMERIC),
        ("__meridian_1", INT8),
        ("__meridian_2", INT8),
    ];
    let fields = text_fields(&cols);
    assert_eq!(p.output_fields(&fields).unwrap().len(), 6);
    // Shards hold {1, NULL}, {2}, {} : PG gives 3, 2, 3, 1, 2, 1.5000000000000000.
    let shards = vec![
        rows(&[&[s("2"), s("1"), s("1"), s("1"), s("1"), s("1.00000000000000000000"), s("1"), s("1")]]),
        rows(&[&[s("1"), s("1"), s("2"), s("2"), s("2"), s("2.0000000000000000"), s("2"), s("1")]]),
        rows(&[&[s("0"), s("0"), None, None, None, None, None, s("0")]]),
    ];
    let got = texts(&p.merge(&fields, shards).unwrap());
    assert_eq!(got, [["3", "2", "3", "1", "2", "1.5000000000000000"]]);
    // No rows anywhere: count 0, the rest NULL.
    let empty = vec![rows(&[&[s("0"), s("0"), None, None, None, None, None, s("0")]]); 2];
    assert_eq!(texts(&p.merge(&fields, empty).unwrap()), [["0", "0", "NULL", "NULL", "NULL", "NULL"]]);
    // LIMIT/OFFSET apply to the one result row.
    let p = plan("SELECT count(*) FROM t OFFSET 1").unwrap();
    let got = p.merge(&text_fields(&[("count", INT8)]), vec![rows(&[&[s("5")]])]).unwrap();
    assert!(got.is_empty());
    // An aggregate without GROUP BY returns one row per shard.
    let p = plan("SELECT count(*) FROM t").unwrap();
    let err = p.merge(&text_fields(&[("count", INT8)]), vec![rows(&[&[s("5")], &[s("6")]])]).unwrap_err();
    assert!(err.0.contains("returned 2 rows"), "{err}");
}

#[test]
fn aggregates_binary() {
    let p = plan("SELECT sum(x), avg(x), min(x), max(x), count(*) FROM t").unwrap();
    let fields = vec![
        field("sum", NUMERIC, 1),
        field("avg", NUMERIC, 1),
        field("min", NUMERIC, 1),
        field("max", NUMERIC, 1),
        field("count", INT8, 1),
        field("__meridian_1", NUMERIC, 1),
        field("__meridian_2", INT8, 1),
    ];
    // numeric x: {1.5, 2.25} and {-0.5}; PG: sum 3.25, avg 1.08333333333333333333.
    let shards = vec![
        vec![vec![num("3.75"), num("1.8750000000000000"), num("1.5"), num("2.25"), i8(2), num("3.75"), i8(2)]],
        vec![vec![num("-0.5"), num("-0.50000000000000000000"), num("-0.5"), num("-0.5"), i8(1), num("-0.5"), i8(1)]],
    ];
    let got = p.merge(&fields, shards).unwrap();
    assert_eq!(got, vec![vec![num("3.25"), num("1.08333333333333333333"), num("-0.5"), num("2.25"), i8(3)]]);
}

#[test]
fn avg_matches_postgres() {
    // (shard sums, shard counts, sum type, PG's avg over all rows)
    let cases: &[(&[&str], &[&str], u32, &str)] = &[
        (&["1", "2"], &["1", "1"], INT8, "1.5000000000000000"),
        (&["10000", "20000"], &["1", "1"], INT8, "15000.000000000000"),
        (&["7"], &["3"], NUMERIC, "2.3333333333333333"),
        (&["-1", "-1"], &["2", "1"], INT8, "-0.66666666666666666667"),
        (&["1.50", "0"], &["1", "1"], NUMERIC, "0.75000000000000000000"),
        (&["NaN", "1"], &["1", "1"], NUMERIC, "NaN"),
        (&["Infinity", "1"], &["1", "1"], NUMERIC, "Infinity"),
        (&["0.1", "0.2"], &["1", "1"], FLOAT8, "0.15000000000000002"),
        (&["1e+308", "1e+308"], &["1", "1"], FLOAT8, "overflow"),
    ];
    for (sums, counts, sum_type, want) in cases {
        let p = plan("SELECT avg(x) FROM t").unwrap();
        let avg_type = if *sum_type == FLOAT8 { FLOAT8 } else { NUMERIC };
        let fields = text_fields(&[("avg", avg_type), ("__meridian_1", *sum_type), ("__meridian_2", INT8)]);
        let shards = sums.iter().zip(*counts).map(|(s, c)| rows(&[&[None, Some(*s), Some(*c)]])).collect();
        match p.merge(&fields, shards) {
            Ok(got) => assert_eq!(texts(&got), [[*want]], "{sums:?}"),
            Err(e) => assert!(e.0.contains(want), "{sums:?}: {e}"),
        }
    }
    // avg(real): shards would sum in real, PG averages in double precision.
    let p = plan("SELECT avg(x) FROM t").unwrap();
    let err = p.output_fields(&text_fields(&[("avg", FLOAT8), ("s", FLOAT4), ("c", INT8)])).unwrap_err();
    assert!(err.0.contains("avg over real"), "{err}");
    let err = p.output_fields(&text_fields(&[("avg", INTERVAL), ("s", INTERVAL), ("c", INT8)])).unwrap_err();
    assert!(err.0.contains("interval"), "{err}");
}

#[test]
fn sums_of_every_type() {
    // sum(int8) is numeric: past i64 and i128 is fine.
    let big = "99999999999999999999999999999999999999999";
    let got = merge_text("SELECT sum(x) FROM t", &[("sum", NUMERIC)], &[&[&[s(big)]], &[&[s("1")]], &[&[None]]]);
    assert_eq!(got.unwrap(), [["100000000000000000000000000000000000000000"]]);
    let got = merge_text("SELECT sum(x) FROM t", &[("sum", FLOAT4)], &[&[&[s("0.1")]], &[&[s("0.2")]]]);
    assert_eq!(got.unwrap(), [["0.3"]]);
    let got = merge_text("SELECT sum(x) FROM t", &[("sum", FLOAT8)], &[&[&[s("1e+308")]], &[&[s("1e+308")]]]);
    assert!(got.unwrap_err().0.contains("out of range"));
    let got = merge_text("SELECT sum(x) FROM t", &[("sum", INT8)], &[&[&[s("9223372036854775807")]], &[&[s("1")]]]);
    assert!(got.unwrap_err().0.contains("bigint out of range"));
    let got = merge_text("SELECT sum(x) FROM t", &[("sum", INTERVAL)], &[&[&[s("1 day")]]]);
    assert!(got.unwrap_err().0.contains("sum over interval"));
    let got = merge_text("SELECT min(x) FROM t", &[("min", TEXT)], &[&[&[s("b")]], &[&[s("a")]]]);
    assert!(got.unwrap_err().0.contains("COLLATE"));
    let got = merge_text("SELECT min(x COLLATE \"C\") FROM t", &[("min", TEXT)], &[&[&[s("b")]], &[&[s("B")]]]);
    assert_eq!(got.unwrap(), [["B"]]);
}

#[test]
fn group_by_merges_equal_keys() {
    let sql = "SELECT g, count(*), sum(x) AS s FROM t GROUP BY g ORDER BY s DESC, g LIMIT 3";
    let cols = [("g", NUMERIC), ("count", INT8), ("s", INT8)];
    let shards: &[&[&[Option<&str>]]] = &[
        &[&[s("1.0"), s("2"), s("10")], &[None, s("1"), s("5")], &[s("2"), s("1"), s("1")]],
        &[&[s("1.00"), s("1"), s("3")], &[s("3"), s("4"), s("7")], &[None, s("2"), s("9")]],
    ];
    // Groups: 1 -> (3, 13), NULL -> (3, 14), 2 -> (1, 1), 3 -> (4, 7).
    let got = merge_text(sql, &cols, shards).unwrap();
    assert_eq!(got, [["NULL", "3", "14"], ["1.0", "3", "13"], ["3", "4", "7"]]);
    // Hidden group key, stripped from the output.
    let got = merge_text(
        "SELECT count(*) FROM t GROUP BY g ORDER BY count(*)",
        &[("count", INT8), ("__meridian_1", TEXT)],
        &[&[&[s("2"), s("a")], &[s("1"), s("b")]], &[&[s("5"), s("b")]]],
    );
    assert_eq!(got.unwrap(), [["2"], ["6"]]);
    // Group keys of a type that cannot be compared are refused.
    let err = merge_text("SELECT i, count(*) FROM t GROUP BY i", &[("i", INTERVAL), ("count", INT8)], &[]).unwrap_err();
    assert!(err.0.contains("GROUP BY i"), "{err}");
    // Floats: -0 = 0, NaN = NaN.
    let got = merge_text(
        "SELECT f, count(*) FROM t GROUP BY f ORDER BY f",
        &[("f", FLOAT8), ("count", INT8)],
        &[&[&[s("-0"), s("1")], &[s("NaN"), s("1")]], &[&[s("0"), s("2")], &[s("NaN"), s("3")]]],
    );
    assert_eq!(got.unwrap(), [["-0", "3"], ["NaN", "4"]]);
}

#[test]
fn distinct_merges_rows() {
    let got = merge_text(
        "SELECT DISTINCT a, b FROM t ORDER BY a DESC LIMIT 3",
        &[("a", INT4), ("b", TEXT)],
        &[&[&[s("1"), s("x")], &[s("2"), None]], &[&[s("2"), None], &[s("1"), s("y")], &[s("1"), s("x")]]],
    );
    assert_eq!(got.unwrap(), [["2", "NULL"], ["1", "x"], ["1", "y"]]);
}

#[test]
fn shape_errors() {
    let p = plan("SELECT a FROM t ORDER BY b").unwrap();
    assert!(p.output_fields(&[]).is_err());
    let fields = text_fields(&[("a", INT4), ("b", INT4)]);
    let err = p.merge(&fields, vec![rows(&[&[s("1")]])]).unwrap_err();
    assert!(err.0.contains("row of 1 columns"), "{err}");
    let a = text_fields(&[("a", INT4)]);
    let c = text_fields(&[("a", INT8)]);
    assert!(common_fields(&[a.clone(), a.clone()]).is_ok());
    assert!(common_fields(&[a, c]).unwrap_err().0.contains("shard 1"));
}

/// PG's `avg` over ints, computed independently of the merge's numeric
/// code: `select_div_scale` on i128, then round half away from zero.
fn reference_avg(sum: i128, count: i128) -> String {
    let first = |v: i128| {
        let (mut v, mut weight) = (v.abs(), 0);
        while v >= 10_000 {
            v /= 10_000;
            weight += 1;
        }
        (weight, v)
    };
    let ((w1, d1), (w2, d2)) = (first(sum), first(count));
    let qweight = if sum == 0 { -w2 - 1 } else { w1 - w2 - i32::from(d1 <= d2) };
    let rscale = (16 - 4 * qweight).max(0) as u32;
    let scaled = sum.abs() * 10i128.pow(rscale);
    let (mut q, r) = (scaled / count, scaled % count);
    if 2 * r >= count {
        q += 1;
    }
    let digits = format!("{q:0>width$}", width = rscale as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - rscale as usize);
    let sign = if sum < 0 && q != 0 { "-" } else { "" };
    if rscale == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") }
}

/// Split `values` over shards by `assign` (one shard index per value).
fn split<T: Clone>(values: &[T], assign: &[usize], shards: usize) -> Vec<Vec<T>> {
    let mut out = vec![Vec::new(); shards];
    for (v, &a) in values.iter().zip(assign) {
        out[a % shards].push(v.clone());
    }
    out
}

proptest! {
    #[test]
    fn aggregates_equal_one_table(
        values in prop::collection::vec(prop::option::weighted(0.8, any::<i32>()), 0..40),
        assign in prop::collection::vec(0usize..4, 40),
        shards in 1usize..5,
        binary in any::<bool>(),
    ) {
        let p = plan("SELECT count(*), count(x), sum(x), min(x), max(x), avg(x) FROM t").unwrap();
        let fmt = i16::from(binary);
        let fields: Vec<Field> = [INT8, INT8, INT8, INT4, INT4, NUMERIC, INT8, INT8]
            .iter()
            .map(|&oid| field("c", oid, fmt))
            .collect();
        let enc_i8 = |v: i64| if binary { i8(v) } else { b(v.to_string().as_bytes()) };
        let enc_i4 = |v: i32| if binary { i4(v) } else { b(v.to_string().as_bytes()) };
        let parts = split(&values, &assign, shards);
        let shard_rows: Vec<Vec<Row>> = parts
            .iter()
            .map(|part| {
                let xs: Vec<i32> = part.iter().flatten().copied().collect();
                let sum: Option<i64> = (!xs.is_empty()).then(|| xs.iter().map(|&x| i64::from(x)).sum());
                vec![vec![
                    enc_i8(part.len() as i64),
                    enc_i8(xs.len() as i64),
                    sum.and_then(enc_i8),
                    xs.iter().min().copied().and_then(enc_i4),
                    xs.iter().max().copied().and_then(enc_i4),
                    None, // the shard's own avg is not used
                    sum.and_then(enc_i8),
                    enc_i8(xs.len() as i64),
                ]]
            })
            .collect();
        let got = p.merge(&fields, shard_rows).unwrap();
        let xs: Vec<i32> = values.iter().flatten().copied().collect();
        let sum: i128 = xs.iter().map(|&x| i128::from(x)).sum();
        let avg = (!xs.is_empty()).then(|| reference_avg(sum, xs.len() as i128));
        let want: Row = vec![
            enc_i8(values.len() as i64),
            enc_i8(xs.len() as i64),
            (!xs.is_empty()).then_some(sum as i64).and_then(enc_i8),
            xs.iter().min().copied().and_then(enc_i4),
            xs.iter().max().copied().and_then(enc_i4),
            avg.map(|a| if binary { num(&a).unwrap() } else { Bytes::from(a) }),
        ];
        prop_assert_eq!(got, vec![want]);
    }

    #[test]
    fn order_limit_offset_equal_one_table(
        values in prop::collection::vec(prop::option::weighted(0.8, -50i64..50), 0..40),
        assign in prop::collection::vec(0usize..4, 40),
        shards in 1usize..5,
        limit in prop::option::of(0u64..45),
        offset in 0u64..45,
        desc in any::<bool>(),
        binary in any::<bool>(),
    ) {
        let dir = if desc { "DESC" } else { "ASC" };
        let limit_sql = limit.map_or(String::new(), |l| format!(" LIMIT {l}"));
        let sql = format!("SELECT id FROM t ORDER BY x {dir} NULLS LAST, id{limit_sql} OFFSET {offset}");
        let p = plan(&sql).unwrap();
        let fmt = i16::from(binary);
        let fields = vec![field("id", INT8, fmt), field("__meridian_1", INT8, fmt)];
        let enc = |v: i64| if binary { i8(v) } else { b(v.to_string().as_bytes()) };
        // PG's order: x per direction with NULLs last, then id ascending.
        let sort = |rows: &mut Vec<(i64, Option<i64>)>| {
            rows.sort_by(|a, b| {
                let by_x = match (a.1, b.1) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) if desc => y.cmp(&x),
                    (Some(x), Some(y)) => x.cmp(&y),
                };
                by_x.then(a.0.cmp(&b.0))
            })
        };
        let all: Vec<(i64, Option<i64>)> = values.iter().enumerate().map(|(i, &x)| (i as i64, x)).collect();
        let shard_rows: Vec<Vec<Row>> = split(&all, &assign, shards)
            .into_iter()
            .map(|mut part| {
                sort(&mut part);
                // What the shard runs: LIMIT limit + offset, no OFFSET.
                if let Some(l) = limit {
                    part.truncate((l + offset) as usize);
                }
                part.into_iter().map(|(id, x)| vec![enc(id), x.and_then(enc)]).collect()
            })
            .collect();
        let mut want = all.clone();
        sort(&mut want);
        let want: Vec<Row> = want
            .into_iter()
            .skip(offset as usize)
            .take(limit.map_or(usize::MAX, |l| l as usize))
            .map(|(id, _)| vec![enc(id)])
            .collect();
        prop_assert_eq!(p.merge(&fields, shard_rows).unwrap(), want);
    }

    #[test]
    fn group_by_equals_one_table(
        rows_in in prop::collection::vec((prop::option::of(0i64..5), -100i64..100), 0..40),
        assign in prop::collection::vec(0usize..4, 40),
        shards in 1usize..5,
    ) {
        use std::collections::BTreeMap;
        let p = plan("SELECT g, count(*), sum(x), max(x) FROM t GROUP BY g ORDER BY g NULLS FIRST").unwrap();
        let fields = text_fields(&[("g", INT8), ("count", INT8), ("sum", NUMERIC), ("max", INT8)]);
        let per_group = |rows: &[(Option<i64>, i64)]| {
            let mut groups: BTreeMap<Option<i64>, (i64, i64, i64)> = BTreeMap::new();
            for &(g, x) in rows {
                let e = groups.entry(g).or_insert((0, 0, i64::MIN));
                *e = (e.0 + 1, e.1 + x, e.2.max(x));
            }
            groups
        };
        let text = |g: Option<i64>, c: i64, s: i64, m: i64| -> Row {
            vec![g.map(|g| Bytes::from(g.to_string())), Some(Bytes::from(c.to_string())),
                 Some(Bytes::from(s.to_string())), Some(Bytes::from(m.to_string()))]
        };
        let shard_rows: Vec<Vec<Row>> = split(&rows_in, &assign, shards)
            .iter()
            .map(|part| per_group(part).into_iter().rev().map(|(g, (c, s, m))| text(g, c, s, m)).collect())
            .collect();
        // BTreeMap orders None first, as NULLS FIRST does.
        let want: Vec<Row> = per_group(&rows_in).into_iter().map(|(g, (c, s, m))| text(g, c, s, m)).collect();
        prop_assert_eq!(p.merge(&fields, shard_rows).unwrap(), want);
    }
}

proptest! {
    /// Malformed values from a shard are errors, never panics.
    #[test]
    fn merge_never_panics_on_bad_values(
        values in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..24)), 0..40),
        binary in any::<bool>(),
    ) {
        let oids = [NUMERIC, FLOAT8, DATE, TIMESTAMPTZ, UUID, BOOL, INT4, FLOAT4];
        for (i, &oid) in oids.iter().enumerate() {
            let p = plan("SELECT v FROM t ORDER BY v COLLATE \"C\"").unwrap();
            let fields = vec![field("v", oid, i16::from(binary))];
            let rows: Vec<Row> = values.iter().skip(i).map(|v| vec![v.clone().map(Bytes::from)]).collect();
            let _ = p.merge(&fields, vec![rows.clone(), rows.clone()]);
            let p = plan("SELECT v, count(*), min(v), sum(v), avg(v) FROM t GROUP BY v").unwrap();
            let fields = vec![
                field("v", oid, i16::from(binary)),
                field("count", INT8, i16::from(binary)),
                field("min", oid, i16::from(binary)),
                field("sum", oid, i16::from(binary)),
                field("avg", oid, i16::from(binary)),
                field("s", oid, i16::from(binary)),
                field("c", INT8, i16::from(binary)),
            ];
            let rows: Vec<Row> = values.iter().map(|v| vec![v.clone().map(Bytes::from); 7]).collect();
            let _ = p.merge(&fields, vec![rows]);
        }
    }
}
