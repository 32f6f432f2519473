//! Shard keys: the value of a table's shard-key column in a statement, as
//! a literal in the SQL text or as a bind parameter (text or binary format).

/// The type of a shard-key column. It decides how a key is parsed and
/// hashed. `Int` covers int2, int4 and int8: PostgreSQL's partition hashes
/// of the three agree on every value they share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Int,
    Text,
    Uuid,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Int => "int",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }
}

/// A shard-key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int(i64),
    Text(String),
    Uuid([u8; 16]),
}

/// A constant as written in SQL, before it is read as a key of some type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// A numeric literal, as written (`42`, `-7`, `1e3`).
    Number(String),
    /// A string literal, unescaped (`'abc'`, `E'a\\n'`, `$$x$$`).
    String(String),
    Null,
}

/// Why a value cannot be read as a key of the column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {ty} shard key {value:?}: {reason}")]
pub struct KeyError {
    pub ty: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Longest input quoted in a [`KeyError`]; longer ones are cut short so an
/// error never carries a whole oversized value.
const MAX_QUOTED: usize = 64;

impl KeyError {
    fn new(ty: KeyType, value: &str, reason: &'static str) -> KeyError {
        let value = match value.char_indices().nth(MAX_QUOTED) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        KeyError { ty: ty.as_str(), value, reason }
    }

    fn from_bytes(ty: KeyType, bytes: &[u8], reason: &'static str) -> KeyError {
        KeyError::new(ty, &String::from_utf8_lossy(bytes), reason)
    }
}

impl KeyValue {
    /// Read a constant from the SQL text as a key of type `ty`, the way
    /// PostgreSQL would read it for a column of that type.
    ///
    /// - `Int`: an integer (`42`, `-7`); a string is accepted when
    ///   PostgreSQL's `'...'::int8` accepts it (surrounding whitespace, a
    ///   sign). A number with a fraction or exponent (`1.0`, `1e3`) is an
    ///   error: PostgreSQL compares it as `numeric`, so it names no single
    ///   integer key.
    /// - `Text`: a string, or a number's text as written.
    /// - `Uuid`: a string in any form PostgreSQL accepts: 32 hex digits in
    ///   either case, a hyphen allowed after any group of four, optionally
    ///   in braces.
    ///
    /// NULL is never a key: it is always an error.
    pub fn from_literal(lit: &Literal, ty: KeyType) -> Result<KeyValue, KeyError> {
        match (lit, ty) {
            (Literal::Null, _) => Err(KeyError::new(ty, "NULL", "null is not a shard key")),
            (Literal::Number(n), KeyType::Int) => {
                if n.contains(['.', 'e', 'E']) {
                    return Err(KeyError::new(ty, n, "not an integer"));
                }
                parse_int(n).map(KeyValue::Int).map_err(|reason| KeyError::new(ty, n, reason))
            }
            (Literal::String(s), KeyType::Int) => {
                parse_int(s).map(KeyValue::Int).map_err(|reason| KeyError::new(ty, s, reason))
            }
            (Literal::Number(s) | Literal::String(s), KeyType::Text) => Ok(KeyValue::Text(s.clone())),
            (Literal::String(s), KeyType::Uuid) => {
                parse_uuid(s).map(KeyValue::Uuid).map_err(|reason| KeyError::new(ty, s, reason))
            }
            (Literal::Number(n), KeyType::Uuid) => Err(KeyError::new(ty, n, "a number is not a uuid")),
        }
    }

    /// Read a bind parameter's value (never NULL: the caller sees a NULL
    /// parameter before it has bytes) as a key of type `ty`.
    ///
    /// Binary format is PostgreSQL's send format: a big-endian int2, int4 or
    /// int8 (told apart by length), the UTF-8 bytes of a text, the 16 bytes
    /// of a uuid. Text format is read as [`KeyValue::from_literal`] reads a
    /// string.
    pub fn from_param(bytes: &[u8], binary: bool, ty: KeyType) -> Result<KeyValue, KeyError> {
        match (ty, binary) {
            (KeyType::Int, true) => match *bytes {
                [a, b] => Ok(KeyValue::Int(i16::from_be_bytes([a, b]).into())),
                [a, b, c, d] => Ok(KeyValue::Int(i32::from_be_bytes([a, b, c, d]).into())),
                [a, b, c, d, e, f, g, h] => Ok(KeyValue::Int(i64::from_be_bytes([a, b, c, d, e, f, g, h]))),
                _ => Err(KeyError::from_bytes(ty, bytes, "a binary integer has 2, 4 or 8 bytes")),
            },
            (KeyType::Uuid, true) => match <[u8; 16]>::try_from(bytes) {
                Ok(uuid) => Ok(KeyValue::Uuid(uuid)),
                Err(_) => Err(KeyError::from_bytes(ty, bytes, "a binary uuid has 16 bytes")),
            },
            (KeyType::Text, _) | (KeyType::Int | KeyType::Uuid, false) => {
                let text =
                    std::str::from_utf8(bytes).map_err(|_| KeyError::from_bytes(ty, bytes, "not valid UTF-8"))?;
                KeyValue::from_literal(&Literal::String(text.to_owned()), ty)
            }
        }
    }
}

/// Uuids in PostgreSQL's output form, `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`.
impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::Text(s) => f.write_str(s),
            KeyValue::Uuid(bytes) => {
                for (i, byte) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// The C library's `isspace` in the C locale, which PostgreSQL's integer
/// input skips around the digits: unlike [`u8::is_ascii_whitespace`] it
/// includes the vertical tab.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// PostgreSQL 15's `int8in` (`pg_strtoint64`): optional whitespace, an
/// optional sign, at least one decimal digit, optional whitespace. No
/// underscores, no hex (those came in PostgreSQL 16).
fn parse_int(s: &str) -> Result<i64, &'static str> {
    let body = s.trim_matches(is_c_space);
    let (negative, digits) = match body.as_bytes().first() {
        Some(b'-') => (true, &body[1..]),
        Some(b'+') => (false, &body[1..]),
        _ => (false, body),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid integer syntax");
    }
    // Accumulate the magnitude, which for i64::MIN is one more than i64::MAX.
    let magnitude = digits
        .bytes()
        .try_fold(0u64, |acc, d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .ok_or("out of range for int8")?;
    let value = if negative { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() };
    value.ok_or("out of range for int8")
}

/// PostgreSQL's `uuid_in`: 32 hex digits in either case, an optional hyphen
/// after each group of four (not after the last), optionally in braces.
/// Nothing else, not even whitespace.
fn parse_uuid(s: &str) -> Result<[u8; 16], &'static str> {
    const SYNTAX: &str = "invalid uuid syntax";
    let inner = match s.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}').ok_or(SYNTAX)?,
        None => s,
    };
    let mut rest = inner.as_bytes();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let [hi, lo, tail @ ..] = rest else { return Err(SYNTAX) };
        *byte = (hex_digit(*hi).ok_or(SYNTAX)? << 4) | hex_digit(*lo).ok_or(SYNTAX)?;
        rest = tail;
        if i % 2 == 1
            && i < 15
            && let [b'-', tail @ ..] = rest
        {
            rest = tail;
        }
    }
    if rest.is_empty() { Ok(out) } else { Err(SYNTAX) }
}

fn hex_digit(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] =
        [0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11];

    fn num(s: &str) -> Literal {
        Literal::Number(s.into())
    }

    fn string(s: &str) -> Literal {
        Literal::String(s.into())
    }

    #[test]
    fn int_literals() {
        let ok: &[(Literal, i64)] = &[
            (num("42"), 42),
            (num("-7"), -7),
            (num("+7"), 7),
            (num("0"), 0),
            (num("-0"), 0),
            (num("00042"), 42),
            (num("9223372036854775807"), i64::MAX),
            (num("-9223372036854775808"), i64::MIN),
            // What '...'::int8 accepts (checked on PostgreSQL 15).
            (string("42"), 42),
            (string(" +42 "), 42),
            (string("\t42\n"), 42),
            (string("\x0B7\x0B"), 7),
            (string("\x0C7\r"), 7),
            (string("-9223372036854775808"), i64::MIN),
        ];
        for (lit, want) in ok {
            assert_eq!(KeyValue::from_literal(lit, KeyType::Int), Ok(KeyValue::Int(*want)), "{lit:?}");
        }
        // What '...'::int8 rejects, and numbers that are not integers.
        let bad = [
            num("1.0"),
            num("1e3"),
            num("1E3"),
            num(".5"),
            num("9223372036854775808"),
            num("-9223372036854775809"),
            num("99999999999999999999999"),
            string(""),
            string(" "),
            string("-"),
            string("+-1"),
            string("- 1"),
            string("4_2"),
            string("0x10"),
            string("1.0"),
            string("7\u{a0}"),
            string("０"),
            string("abc"),
            Literal::Null,
        ];
        for lit in &bad {
            assert!(KeyValue::from_literal(lit, KeyType::Int).is_err(), "{lit:?} was accepted");
        }
    }

    #[test]
    fn int_errors_say_why() {
        let e = KeyValue::from_literal(&num("1e3"), KeyType::Int).unwrap_err();
        assert_eq!(e.to_string(), "invalid int shard key \"1e3\": not an integer");
        let e = KeyValue::from_literal(&string("9223372036854775808"), KeyType::Int).unwrap_err();
        assert_eq!(e.reason, "out of range for int8");
        let e = KeyValue::from_literal(&Literal::Null, KeyType::Text).unwrap_err();
        assert_eq!(e.to_string(), "invalid text shard key \"NULL\": null is not a shard key");
    }

    #[test]
    fn long_values_are_cut_short_in_errors() {
        let long = "9".repeat(1000);
        let e = KeyValue::from_literal(&string(&long), KeyType::Int).unwrap_err();
        assert_eq!(e.value, format!("{}…", "9".repeat(MAX_QUOTED)));
    }

    #[test]
    fn text_literals() {
        for (lit, want) in [(string("abc"), "abc"), (string(""), ""), (string("日本 ✓"), "日本 ✓"), (num("1e3"), "1e3")]
        {
            assert_eq!(KeyValue::from_literal(&lit, KeyType::Text), Ok(KeyValue::Text(want.into())), "{lit:?}");
        }
    }

    #[test]
    fn uuid_literals() {
        let ok = [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "a0eebc99-9c0b4ef8-bb6d6bb9bd380a11",
        ];
        for s in ok {
            assert_eq!(KeyValue::from_literal(&string(s), KeyType::Uuid), Ok(KeyValue::Uuid(UUID)), "{s}");
        }
        // Each rejected by uuid_in on PostgreSQL 15.
        let bad = [
            "",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11}",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11}}",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eébc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ];
        for s in bad {
            assert!(KeyValue::from_literal(&string(s), KeyType::Uuid).is_err(), "{s:?} was accepted");
        }
        assert!(KeyValue::from_literal(&num("12"), KeyType::Uuid).is_err());
        assert!(KeyValue::from_literal(&Literal::Null, KeyType::Uuid).is_err());
    }

    #[test]
    fn binary_params() {
        let int = |bytes: &[u8]| KeyValue::from_param(bytes, true, KeyType::Int);
        assert_eq!(int(&(-2i16).to_be_bytes()), Ok(KeyValue::Int(-2)));
        assert_eq!(int(&i16::MIN.to_be_bytes()), Ok(KeyValue::Int(i16::MIN.into())));
        assert_eq!(int(&(-70_000i32).to_be_bytes()), Ok(KeyValue::Int(-70_000)));
        assert_eq!(int(&i64::MIN.to_be_bytes()), Ok(KeyValue::Int(i64::MIN)));
        assert_eq!(int(&42i64.to_be_bytes()), Ok(KeyValue::Int(42)));
        for len in [0, 1, 3, 5, 16] {
            assert!(int(&vec![0; len]).is_err(), "{len} bytes");
        }
        assert_eq!(KeyValue::from_param(&UUID, true, KeyType::Uuid), Ok(KeyValue::Uuid(UUID)));
        assert!(KeyValue::from_param(&UUID[..15], true, KeyType::Uuid).is_err());
        let text = "héllo".as_bytes();
        assert_eq!(KeyValue::from_param(text, true, KeyType::Text), Ok(KeyValue::Text("héllo".into())));
        assert!(KeyValue::from_param(&[0xff, 0xfe], true, KeyType::Text).is_err());
    }

    #[test]
    fn text_params() {
        assert_eq!(KeyValue::from_param(b" -42\n", false, KeyType::Int), Ok(KeyValue::Int(-42)));
        assert!(KeyValue::from_param(b"1.5", false, KeyType::Int).is_err());
        assert!(KeyValue::from_param(&[b'4', 0xff], false, KeyType::Int).is_err());
        assert_eq!(KeyValue::from_param(b"", false, KeyType::Text), Ok(KeyValue::Text(String::new())));
        assert_eq!(KeyValue::from_param(b"  x ", false, KeyType::Text), Ok(KeyValue::Text("  x ".into())));
        assert!(KeyValue::from_param(&[0xc3], false, KeyType::Text).is_err());
        let uuid = b"{A0EEBC999C0B4EF8BB6D6BB9BD380A11}";
        assert_eq!(KeyValue::from_param(uuid, false, KeyType::Uuid), Ok(KeyValue::Uuid(UUID)));
        assert!(KeyValue::from_param(&UUID, false, KeyType::Uuid).is_err());
    }

    #[test]
    fn display() {
        assert_eq!(KeyValue::Int(i64::MIN).to_string(), "-9223372036854775808");
        assert_eq!(KeyValue::Text("a b".into()).to_string(), "a b");
        assert_eq!(KeyValue::Uuid(UUID).to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert_eq!(KeyValue::Uuid([0; 16]).to_string(), "00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn display_round_trips_through_from_literal() {
        let keys = [
            (KeyValue::Int(-5), KeyType::Int),
            (KeyValue::Text("x".into()), KeyType::Text),
            (KeyValue::Uuid(UUID), KeyType::Uuid),
        ];
        for (key, ty) in keys {
            assert_eq!(KeyValue::from_literal(&Literal::String(key.to_string()), ty), Ok(key));
        }
    }
}
