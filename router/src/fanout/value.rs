//! Column values as PG sends them (text or binary format, by type OID),
//! read into [`Value`]s that compare and group the way PG does, and the
//! encoders for the values the merge computes (int8, numeric, float).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use super::datetime;
use super::numeric::Numeric;

/// The types the merge understands, by OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Bool,
    Bytea,
    Name,
    Int8,
    Int2,
    Int4,
    Text,
    Oid,
    Float4,
    Float8,
    Bpchar,
    Varchar,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Numeric,
    Uuid,
}

impl Kind {
    pub(crate) fn from_oid(oid: u32) -> Option<Kind> {
        Some(match oid {
            16 => Kind::Bool,
            17 => Kind::Bytea,
            19 => Kind::Name,
            20 => Kind::Int8,
            21 => Kind::Int2,
            23 => Kind::Int4,
            25 => Kind::Text,
            26 => Kind::Oid,
            700 => Kind::Float4,
            701 => Kind::Float8,
            1042 => Kind::Bpchar,
            1043 => Kind::Varchar,
            1082 => Kind::Date,
            1083 => Kind::Time,
            1114 => Kind::Timestamp,
            1184 => Kind::Timestamptz,
            1700 => Kind::Numeric,
            2950 => Kind::Uuid,
            _ => return None,
        })
    }

    /// Types whose order depends on a collation. `name` is collatable too,
    /// but its default collation is "C".
    pub(crate) fn is_text(self) -> bool {
        matches!(self, Kind::Text | Kind::Varchar | Kind::Bpchar)
    }
}

/// A PG type name for messages: `numeric` for known OIDs, `type oid N` else.
pub(crate) fn type_name(oid: u32) -> String {
    let name = match oid {
        16 => "boolean",
        17 => "bytea",
        19 => "name",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        26 => "oid",
        700 => "real",
        701 => "double precision",
        790 => "money",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        _ => return format!("type oid {oid}"),
    };
    format!("{name} (oid {oid})")
}

/// A decoded value. Equality and hashing are PG equality (`1.0 = 1.00`,
/// `-0 = 0`, NaN = NaN, `'a ' = 'a'` for bpchar); the order is PG's default
/// btree order (NaN above every number), with text in byte order, which
/// is PG's order only under the "C" collation: callers check that.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Int(i64),
    Float(f64),
    /// Normalized (trailing fractional zeros removed).
    Numeric(Numeric),
    Bool(bool),
    /// Text in byte order (bpchar without trailing spaces), bytea, uuid.
    Bytes(Vec<u8>),
    /// date (days), time and timestamps (microseconds).
    Time(i128),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Int(_) => 0,
            Value::Float(_) => 1,
            Value::Numeric(_) => 2,
            Value::Bool(_) => 3,
            Value::Bytes(_) => 4,
            Value::Time(_) => 5,
        }
    }
}

/// -0 and 0 are one value; every NaN is one value.
fn float_bits(f: f64) -> u64 {
    if f.is_nan() {
        f64::NAN.to_bits()
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            },
            (Value::Numeric(a), Value::Numeric(b)) => a.cmp_value(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (Value::Time(a), Value::Time(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Int(v) => v.hash(state),
            Value::Float(f) => float_bits(*f).hash(state),
            // Normalized on decode, so equal values hash alike.
            Value::Numeric(n) => n.hash(state),
            Value::Bool(b) => b.hash(state),
            Value::Bytes(b) => b.hash(state),
            Value::Time(t) => t.hash(state),
        }
    }
}

/// Read one non-NULL column value of type `kind` in text or binary format.
/// The error says what was wrong with the bytes.
pub(crate) fn decode(kind: Kind, binary: bool, b: &[u8]) -> Result<Value, String> {
    let bad = || format!("malformed {} value in {} format", kind_name(kind), if binary { "binary" } else { "text" });
    let text = || std::str::from_utf8(b).map_err(|_| bad());
    let v = match (kind, binary) {
        (Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Oid, false) => Value::Int(text()?.parse().map_err(|_| bad())?),
        (Kind::Int2, true) => Value::Int(i64::from(i16::from_be_bytes(b.try_into().map_err(|_| bad())?))),
        (Kind::Int4, true) => Value::Int(i64::from(i32::from_be_bytes(b.try_into().map_err(|_| bad())?))),
        (Kind::Oid, true) => Value::Int(i64::from(u32::from_be_bytes(b.try_into().map_err(|_| bad())?))),
        (Kind::Int8, true) => Value::Int(i64::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        (Kind::Float4, false) => Value::Float(f64::from(parse_float::<f32>(text()?).ok_or_else(bad)?)),
        (Kind::Float8, false) => Value::Float(parse_float::<f64>(text()?).ok_or_else(bad)?),
        (Kind::Float4, true) => Value::Float(f64::from(f32::from_be_bytes(b.try_into().map_err(|_| bad())?))),
        (Kind::Float8, true) => Value::Float(f64::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        (Kind::Numeric, false) => Value::Numeric(Numeric::parse_text(b).ok_or_else(bad)?.normalized()),
        (Kind::Numeric, true) => Value::Numeric(Numeric::parse_binary(b).ok_or_else(bad)?.normalized()),
        (Kind::Bool, false) => match b {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => return Err(bad()),
        },
        (Kind::Bool, true) => match b {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            _ => return Err(bad()),
        },
        // Text types are the same bytes in both formats.
        (Kind::Text | Kind::Varchar | Kind::Name, _) => Value::Bytes(b.to_vec()),
        (Kind::Bpchar, _) => {
            let len = b.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
            Value::Bytes(b[..len].to_vec())
        }
        (Kind::Bytea, true) => Value::Bytes(b.to_vec()),
        (Kind::Bytea, false) => Value::Bytes(
            b.strip_prefix(b"\\x")
                .and_then(hex)
                .ok_or_else(|| "bytea text is not in hex format (bytea_output = hex)".to_string())?,
        ),
        (Kind::Uuid, true) if b.len() == 16 => Value::Bytes(b.to_vec()),
        (Kind::Uuid, false) => {
            let t = text()?;
            let dashes = t.len() == 36 && [8, 13, 18, 23].iter().all(|&i| t.as_bytes()[i] == b'-');
            let digits: Vec<u8> = t.bytes().filter(|&c| c != b'-').collect();
            match (dashes, hex(&digits)) {
                (true, Some(bytes)) if bytes.len() == 16 => Value::Bytes(bytes),
                _ => return Err(bad()),
            }
        }
        (Kind::Date, false) => Value::Time(i128::from(datetime::date(text()?).ok_or_else(not_iso)?)),
        (Kind::Date, true) => Value::Time(i128::from(i32::from_be_bytes(b.try_into().map_err(|_| bad())?))),
        (Kind::Time, false) => Value::Time(i128::from(datetime::time(text()?).ok_or_else(bad)?)),
        (Kind::Timestamp | Kind::Timestamptz | Kind::Time, true) => {
            Value::Time(i128::from(i64::from_be_bytes(b.try_into().map_err(|_| bad())?)))
        }
        (Kind::Timestamp, false) => Value::Time(datetime::timestamp(text()?, false).ok_or_else(not_iso)?),
        (Kind::Timestamptz, false) => Value::Time(datetime::timestamp(text()?, true).ok_or_else(not_iso)?),
        (Kind::Uuid, true) => return Err(bad()),
    };
    Ok(v)
}

fn not_iso() -> String {
    "date/time text is not in ISO DateStyle (SET DateStyle = ISO)".into()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "boolean",
        Kind::Bytea => "bytea",
        Kind::Name => "name",
        Kind::Int8 => "bigint",
        Kind::Int2 => "smallint",
        Kind::Int4 => "integer",
        Kind::Text => "text",
        Kind::Oid => "oid",
        Kind::Float4 => "real",
        Kind::Float8 => "double precision",
        Kind::Bpchar => "character",
        Kind::Varchar => "character varying",
        Kind::Date => "date",
        Kind::Time => "time",
        Kind::Timestamp => "timestamp",
        Kind::Timestamptz => "timestamptz",
        Kind::Numeric => "numeric",
        Kind::Uuid => "uuid",
    }
}

fn hex(digits: &[u8]) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits.chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// PG's float text (`NaN`, `Infinity`, `-Infinity`, `1e+15`, `-0`...).
pub(crate) fn parse_float<F: std::str::FromStr + FloatSpecials>(s: &str) -> Option<F> {
    match s {
        "NaN" => Some(F::NAN),
        "Infinity" => Some(F::INFINITY),
        "-Infinity" => Some(F::NEG_INFINITY),
        _ if s.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e')) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) trait FloatSpecials {
    const NAN: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
}

impl FloatSpecials for f32 {
    const NAN: f32 = f32::NAN;
    const INFINITY: f32 = f32::INFINITY;
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
}

impl FloatSpecials for f64 {
    const NAN: f64 = f64::NAN;
    const INFINITY: f64 = f64::INFINITY;
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
}

/// `float8out` with `extra_float_digits > 0` (the default, 1): the shortest
/// text that reads back as the same double, in PG's layout (fixed point for
/// decimal exponents -4..14, else `1.5e+20`).
pub(crate) fn float8_text(v: f64) -> String {
    shortest(v.is_sign_negative(), v.is_nan(), v.is_infinite(), v == 0.0, &format!("{:e}", v.abs()), 15)
}

/// `float4out` likewise, fixed point for decimal exponents -4..5.
pub(crate) fn float4_text(v: f32) -> String {
    shortest(v.is_sign_negative(), v.is_nan(), v.is_infinite(), v == 0.0, &format!("{:e}", v.abs()), 6)
}

fn shortest(neg: bool, nan: bool, inf: bool, zero: bool, sci: &str, fixed_below: i32) -> String {
    let sign = if neg { "-" } else { "" };
    if nan {
        return "NaN".into();
    }
    if inf {
        return format!("{sign}Infinity");
    }
    if zero {
        return format!("{sign}0");
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.2345e-7".
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let len = digits.len() as i32;
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            return format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize));
        }
        if len <= exp + 1 {
            return format!("{sign}{digits}{}", "0".repeat((exp + 1 - len) as usize));
        }
        let (int, frac) = digits.split_at((exp + 1) as usize);
        return format!("{sign}{int}.{frac}");
    }
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
    let esign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{first}{point}e{esign}{:02}", exp.abs())
}

/// A bigint (count, sum of int2/int4) in text or binary format.
pub(crate) fn int8(binary: bool, b: &[u8]) -> Option<i64> {
    if binary { Some(i64::from_be_bytes(b.try_into().ok()?)) } else { std::str::from_utf8(b).ok()?.parse().ok() }
}

/// A numeric with its display scale kept (sums keep PG's scale).
pub(crate) fn numeric(binary: bool, b: &[u8]) -> Option<Numeric> {
    if binary { Numeric::parse_binary(b) } else { Numeric::parse_text(b) }
}

/// A double precision value, -0 and NaN as sent.
pub(crate) fn float8(binary: bool, b: &[u8]) -> Option<f64> {
    if binary { Some(f64::from_be_bytes(b.try_into().ok()?)) } else { parse_float(std::str::from_utf8(b).ok()?) }
}

/// A real value, as sent.
pub(crate) fn float4(binary: bool, b: &[u8]) -> Option<f32> {
    if binary { Some(f32::from_be_bytes(b.try_into().ok()?)) } else { parse_float(std::str::from_utf8(b).ok()?) }
}

pub(crate) fn encode_int8(v: i64, binary: bool) -> Bytes {
    if binary { Bytes::copy_from_slice(&v.to_be_bytes()) } else { Bytes::from(v.to_string()) }
}

pub(crate) fn encode_numeric(v: &Numeric, binary: bool) -> Bytes {
    if binary { Bytes::from(v.to_binary()) } else { Bytes::from(v.to_text()) }
}

pub(crate) fn encode_float8(v: f64, binary: bool) -> Bytes {
    if binary { Bytes::copy_from_slice(&v.to_be_bytes()) } else { Bytes::from(float8_text(v)) }
}

pub(crate) fn encode_float4(v: f32, binary: bool) -> Bytes {
    if binary { Bytes::copy_from_slice(&v.to_be_bytes()) } else { Bytes::from(float4_text(v)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected text from PostgreSQL 15 (extra_float_digits = 1).
    #[test]
    fn float_text_matches_postgres() {
        let f8 = [
            (1e15, "1e+15"),
            (1e14, "100000000000000"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e300 * 10.0, "1e+301"),
            (5e-324, "5e-324"),
            (-0.0, "-0"),
            (0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (100.0, "100"),
            (1234.5678, "1234.5678"),
        ];
        for (v, want) in f8 {
            assert_eq!(float8_text(v), want);
            if v.is_finite() {
                assert_eq!(parse_float::<f64>(want), Some(v));
            }
        }
        let f4 = [
            (1234567.0f32, "1.234567e+06"),
            (100000.0, "100000"),
            (0.1, "0.1"),
            (1e6, "1e+06"),
            (3.4028235e38, "3.4028235e+38"),
        ];
        for (v, want) in f4 {
            assert_eq!(float4_text(v), want);
        }
    }

    #[test]
    fn decode_and_compare() {
        let d = |k, bin, b: &[u8]| decode(k, bin, b).unwrap();
        assert_eq!(d(Kind::Int4, true, &[0xff, 0xff, 0xff, 0xfe]), Value::Int(-2));
        assert_eq!(d(Kind::Int2, false, b"-7"), Value::Int(-7));
        assert_eq!(d(Kind::Oid, true, &[0xff, 0xff, 0xff, 0xff]), Value::Int(4_294_967_295));
        assert_eq!(d(Kind::Numeric, false, b"1.0"), d(Kind::Numeric, false, b"1.00"));
        assert_eq!(d(Kind::Float8, false, b"-0"), d(Kind::Float8, false, b"0"));
        assert!(d(Kind::Float8, false, b"NaN") > d(Kind::Float8, false, b"Infinity"));
        assert_eq!(d(Kind::Bpchar, false, b"ab  "), d(Kind::Bpchar, false, b"ab"));
        assert_eq!(
            d(Kind::Uuid, false, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Value::Bytes(vec![
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11
            ])
        );
        assert_eq!(d(Kind::Bytea, false, b"\\x00ff"), Value::Bytes(vec![0, 255]));
        assert!(decode(Kind::Bytea, false, b"\\000").unwrap_err().contains("hex"));
        assert!(decode(Kind::Date, false, b"03/10/2024").unwrap_err().contains("ISO"));
        assert!(decode(Kind::Int4, true, &[0, 1]).is_err());
        assert!(decode(Kind::Bool, false, b"true").is_err());
    }
}
