//! Which shard holds a key, under each kind of [`ShardMap`].
//!
//! - Hash: PostgreSQL's `PARTITION BY HASH` with one partition per entry,
//!   so a table partitioned by hash with modulus `len()` keeps the key in
//!   the partition of the same remainder (see [`crate::hash`]).
//! - Range: the first part whose `[from, to)` holds the key. Keys and bounds
//!   compare only within one type; integers by value, uuids by their bytes
//!   (as PostgreSQL does), text by its UTF-8 bytes, which is the order of
//!   the `C` collation and not necessarily of the column's.
//! - List: the shard listed for the key, else the default.

use std::cmp::Ordering;

use crate::hash::hash_remainder;
use crate::key::KeyValue;
use crate::topology::{RangePart, ShardId, ShardMap};

impl ShardMap {
    /// The shard that holds `key`, or `None` when the map names none: an
    /// empty hash map, a key outside every range, an unlisted key without a
    /// default.
    pub fn shard_for(&self, key: &KeyValue) -> Option<ShardId> {
        match self {
            ShardMap::Hash(shards) => {
                let modulus = u64::try_from(shards.len()).ok().filter(|&m| m > 0)?;
                let remainder = usize::try_from(hash_remainder(key, modulus)).ok()?;
                shards.get(remainder).copied()
            }
            ShardMap::Range(parts) => parts.iter().find(|part| part.contains(key)).map(|part| part.shard),
            ShardMap::List { values, default } => {
                values.iter().find(|(value, _)| value == key).map(|&(_, shard)| shard).or(*default)
            }
        }
    }

    /// Every shard the map can name, each once, in ascending order: the
    /// shards a statement without a usable key may have to visit.
    pub fn shards(&self) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = match self {
            ShardMap::Hash(shards) => shards.clone(),
            ShardMap::Range(parts) => parts.iter().map(|part| part.shard).collect(),
            ShardMap::List { values, default } => values.iter().map(|&(_, shard)| shard).chain(*default).collect(),
        };
        shards.sort_unstable();
        shards.dedup();
        shards
    }
}

impl RangePart {
    /// Whether `from <= key < to`; a missing bound is unbounded, and a bound
    /// of another type than the key holds nothing.
    fn contains(&self, key: &KeyValue) -> bool {
        let above_from = self.from.as_ref().is_none_or(|from| compare(key, from).is_some_and(Ordering::is_ge));
        let below_to = self.to.as_ref().is_none_or(|to| compare(key, to).is_some_and(Ordering::is_lt));
        above_from && below_to
    }
}

/// `key` against `bound` when both have the same type; `None` otherwise
/// (the derived `Ord` would rank every integer below every text).
fn compare(key: &KeyValue, bound: &KeyValue) -> Option<Ordering> {
    match (key, bound) {
        (KeyValue::Int(a), KeyValue::Int(b)) => Some(a.cmp(b)),
        (KeyValue::Text(a), KeyValue::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (KeyValue::Uuid(a), KeyValue::Uuid(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> KeyValue {
        KeyValue::Int(v)
    }

    fn text(s: &str) -> KeyValue {
        KeyValue::Text(s.into())
    }

    fn part(from: Option<KeyValue>, to: Option<KeyValue>, shard: ShardId) -> RangePart {
        RangePart { from, to, shard }
    }

    /// Seven shards in remainder order, numbered so a test reads the
    /// remainder PostgreSQL chose (tables `PARTITION BY HASH`, modulus 7).
    #[test]
    fn hash_follows_postgres_remainders() {
        let map = ShardMap::Hash(vec![10, 11, 12, 13, 14, 15, 16]);
        let cases = [
            (int(-1), 10),
            (int(42), 10),
            (int(i64::MIN), 10),
            (int(i64::MAX), 13),
            (int(0), 14),
            (int(-42), 14),
            (int(1), 15),
            (text("héllo ✓ 日本"), 10),
            (text(""), 11),
            (text("a"), 13),
            (text("hello world"), 14),
            (KeyValue::Uuid([0; 16]), 12),
            (KeyValue::Uuid([0xff; 16]), 10),
        ];
        for (key, shard) in cases {
            assert_eq!(map.shard_for(&key), Some(shard), "{key}");
        }
    }

    #[test]
    fn hash_with_one_or_no_shard() {
        assert_eq!(ShardMap::Hash(vec![3]).shard_for(&int(12345)), Some(3));
        assert_eq!(ShardMap::Hash(vec![]).shard_for(&int(12345)), None);
    }

    #[test]
    fn range_takes_the_first_part_holding_the_key() {
        let map = ShardMap::Range(vec![
            part(None, Some(int(0)), 0),
            part(Some(int(0)), Some(int(100)), 1),
            part(Some(int(50)), Some(int(200)), 2),
            part(Some(int(300)), None, 3),
        ]);
        let cases = [
            (i64::MIN, Some(0)),
            (-1, Some(0)),
            (0, Some(1)),
            (99, Some(1)),
            (100, Some(2)),
            (199, Some(2)),
            (200, None),
            (299, None),
            (300, Some(3)),
            (i64::MAX, Some(3)),
        ];
        for (v, want) in cases {
            assert_eq!(map.shard_for(&int(v)), want, "{v}");
        }
    }

    #[test]
    fn range_compares_only_within_a_type() {
        let map = ShardMap::Range(vec![part(Some(int(0)), Some(int(10)), 0), part(Some(text("a")), None, 1)]);
        assert_eq!(map.shard_for(&int(5)), Some(0));
        assert_eq!(map.shard_for(&int(50)), None);
        assert_eq!(map.shard_for(&text("b")), Some(1));
        assert_eq!(map.shard_for(&text("A")), None);
        assert_eq!(map.shard_for(&KeyValue::Uuid([0; 16])), None);
        // Unbounded on both sides holds every key of every type.
        let all = ShardMap::Range(vec![part(None, None, 4)]);
        assert_eq!(all.shard_for(&KeyValue::Uuid([7; 16])), Some(4));
    }

    #[test]
    fn range_orders_text_and_uuids_by_bytes() {
        let map = ShardMap::Range(vec![part(Some(text("m")), Some(text("é")), 1)]);
        // 'z' (0x7A) < 'é' (0xC3 0xA9) in UTF-8 byte order.
        assert_eq!(map.shard_for(&text("zebra")), Some(1));
        assert_eq!(map.shard_for(&text("Zebra")), None);
        assert_eq!(map.shard_for(&text("é")), None);
        let mut low = [0u8; 16];
        low[0] = 0x80;
        let map = ShardMap::Range(vec![part(None, Some(KeyValue::Uuid(low)), 0), part(None, None, 1)]);
        assert_eq!(map.shard_for(&KeyValue::Uuid([0x7f; 16])), Some(0));
        assert_eq!(map.shard_for(&KeyValue::Uuid(low)), Some(1));
    }

    #[test]
    fn list_matches_exactly_then_defaults() {
        let values = vec![(text("eu"), 0), (text("us"), 1), (int(1), 2)];
        let map = ShardMap::List { values: values.clone(), default: Some(5) };
        assert_eq!(map.shard_for(&text("eu")), Some(0));
        assert_eq!(map.shard_for(&text("us")), Some(1));
        assert_eq!(map.shard_for(&text("EU")), Some(5));
        assert_eq!(map.shard_for(&text("1")), Some(5));
        assert_eq!(map.shard_for(&int(1)), Some(2));
        let strict = ShardMap::List { values, default: None };
        assert_eq!(strict.shard_for(&text("apac")), None);
    }

    #[test]
    fn shards_are_distinct_and_sorted() {
        assert_eq!(ShardMap::Hash(vec![2, 0, 2, 1]).shards(), vec![0, 1, 2]);
        assert_eq!(ShardMap::Hash(vec![]).shards(), Vec::<ShardId>::new());
        let range =
            ShardMap::Range(vec![part(None, Some(int(0)), 3), part(Some(int(0)), None, 1), part(None, None, 3)]);
        assert_eq!(range.shards(), vec![1, 3]);
        let list = ShardMap::List { values: vec![(int(1), 4), (int(2), 2), (int(3), 4)], default: Some(0) };
        assert_eq!(list.shards(), vec![0, 2, 4]);
        let no_default = ShardMap::List { values: vec![(int(1), 4)], default: None };
        assert_eq!(no_default.shards(), vec![4]);
    }
}
