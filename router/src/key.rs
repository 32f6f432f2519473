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
