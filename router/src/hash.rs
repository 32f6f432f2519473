//! PostgreSQL's partition hash, so that a hash shard map agrees with
//! `PARTITION BY HASH` on every key.
//!
//! For a table `PARTITION BY HASH (k)`, PostgreSQL 15 puts a row with a
//! non-null `k` in the partition whose remainder is
//! `compute_partition_hash_value(k) % modulus`:
//!
//! ```text
//!   key ──type's extended hash, seeded──▶ h: u64
//!       int2/int4/int8  hashint8extended   fold the high half into the low, hash_uint32_extended
//!       text/varchar    hashtextextended   hash_any_extended over the bytes (deterministic collation)
//!       uuid            uuid_hash_extended hash_any_extended over the 16 bytes
//!   h ──hash_combine64(0, h)──▶ row hash ──% modulus──▶ remainder
//! ```
//!
//! The seed is `HASH_PARTITION_SEED`. `hash_any_extended` is Bob Jenkins'
//! lookup3 (`src/common/hashfn.c`), reimplemented here from the algorithm.
//!
//! What this does not cover: hashes under a nondeterministic collation
//! (PostgreSQL hashes the ICU sort key instead of the bytes), `char(n)`
//! (trailing blanks are stripped first), and big-endian servers, which read
//! the key's bytes as big-endian words and so put keys in other partitions.
//! Meridian follows little-endian servers (x86-64, AArch64).

use crate::key::KeyValue;

/// PostgreSQL's `HASH_PARTITION_SEED`; as a signed `int8` (what SQL
/// functions such as `hashint8extended` take) it is 8816678312871386365.
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// The row hash PostgreSQL's `PARTITION BY HASH` computes for a single
/// non-null key column of the key's type.
pub fn partition_hash(key: &KeyValue) -> u64 {
    let h = match key {
        KeyValue::Int(v) => hashint8_extended(*v, HASH_PARTITION_SEED),
        KeyValue::Text(s) => hash_any_extended(s.as_bytes(), HASH_PARTITION_SEED),
        KeyValue::Uuid(bytes) => hash_any_extended(bytes, HASH_PARTITION_SEED),
    };
    hash_combine64(0, h)
}

/// The remainder of the partition that holds `key` when every partition has
/// modulus `modulus` (`FOR VALUES WITH (MODULUS m, REMAINDER r)`).
///
/// # Panics
///
/// If `modulus` is zero, which no partitioned table has.
pub fn hash_remainder(key: &KeyValue, modulus: u64) -> u64 {
    partition_hash(key) % modulus
}

/// `hashint8extended`. int8 folds its high half into its low half (the
/// complement of the high half for negative values) before hashing 32 bits,
/// so that int2, int4 and int8 hash alike wherever their values meet: a
/// cross-type hash join needs that. The price is that int8 values far apart
/// collide (1 and 2^32 have the same hash).
pub fn hashint8_extended(value: i64, seed: u64) -> u64 {
    let lo = value as u32;
    let hi = (value >> 32) as u32;
    let folded = if value >= 0 { lo ^ hi } else { lo ^ !hi };
    hash_uint32_extended(folded, seed)
}

/// `hash_bytes_uint32_extended`: lookup3 over one 32-bit word, 64-bit result.
/// The same as [`hash_any_extended`] over the word's little-endian bytes.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let mut s = Lookup3::new(4, seed);
    s.a = s.a.wrapping_add(k);
    s.finish()
}

/// `hash_bytes_extended`: lookup3 over `bytes`, 64-bit result (`b` in the
/// high half, `c` in the low half), as on a little-endian server.
pub fn hash_any_extended(bytes: &[u8], seed: u64) -> u64 {
    // PostgreSQL passes the length as an int; values are at most 1 GB, so
    // this truncation only matters for inputs PostgreSQL cannot hold.
    let mut s = Lookup3::new(bytes.len() as u32, seed);
    let mut chunks = bytes.chunks_exact(12);
    for chunk in &mut chunks {
        s.a = s.a.wrapping_add(le_word(&chunk[0..4]));
        s.b = s.b.wrapping_add(le_word(&chunk[4..8]));
        s.c = s.c.wrapping_add(le_word(&chunk[8..12]));
        s.mix();
    }
    // The last 0..=11 bytes, zero-padded; the lowest byte of `c` is left for
    // the length, so the bytes meant for `c` go in one byte up.
    let rest = chunks.remainder();
    let mut tail = [0u8; 12];
    tail[..rest.len()].copy_from_slice(rest);
    s.a = s.a.wrapping_add(le_word(&tail[0..4]));
    s.b = s.b.wrapping_add(le_word(&tail[4..8]));
    s.c = s.c.wrapping_add(le_word(&tail[8..12]) << 8);
    s.finish()
}

/// `hash_combine64`: how PostgreSQL folds each key column's hash into the
/// row hash, starting from 0.
fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b.wrapping_add(0x49A0_F4DD_15E5_A8E3).wrapping_add(a << 54).wrapping_add(a >> 7)
}

fn le_word(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("callers pass exactly four bytes"))
}

/// lookup3's internal state.
struct Lookup3 {
    a: u32,
    b: u32,
    c: u32,
}

impl Lookup3 {
    /// The state for a key of `len` bytes; a non-zero seed is mixed in as an
    /// extra 12-byte block (its two halves plus four zero bytes).
    fn new(len: u32, seed: u64) -> Lookup3 {
        let init = 0x9E37_79B9u32.wrapping_add(len).wrapping_add(3_923_095);
        let mut s = Lookup3 { a: init, b: init, c: init };
        if seed != 0 {
            s.a = s.a.wrapping_add((seed >> 32) as u32);
            s.b = s.b.wrapping_add(seed as u32);
            s.mix();
        }
        s
    }

    fn mix(&mut self) {
        let Lookup3 { a, b, c } = self;
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }

    fn finish(mut self) -> u64 {
        self.final_mix();
        (u64::from(self.b) << 32) | u64::from(self.c)
    }

    fn final_mix(&mut self) {
        let Lookup3 { a, b, c } = self;
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed as SQL spells it: `hashint8extended(v, 8816678312871386365)`.
    const SEED: u64 = 8_816_678_312_871_386_365;

    fn uuid(hex: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn seed_is_postgres_seed() {
        assert_eq!(SEED, HASH_PARTITION_SEED);
    }

    /// `SELECT v, hashint8extended(v, 8816678312871386365), hashint8extended(v, 0)`
    /// on PostgreSQL 15.18 (x86-64).
    #[test]
    fn int8_hashes_match_postgres() {
        let cases: &[(i64, i64, Option<i64>)] = &[
            (0, -4403592609991167795, Some(4154612158245552303)),
            (1, 5968994663651403477, Some(-3670598878359251130)),
            (-1, -5017072347659237694, Some(-1888257769727981238)),
            (42, 7363975540656877951, Some(8010225493015854792)),
            (-42, 6660635123915733087, Some(8809670066178192187)),
            (2147483647, -6050265599104649060, Some(-9109110466470504941)),
            (-2147483648, 4938542303000433043, Some(1977219185673256887)),
            (4294967296, 5968994663651403477, None),
            (-4294967297, 2147707635919668551, Some(495194309054116481)),
            (i64::MAX, 4938542303000433043, None),
            (i64::MIN, -6050265599104649060, None),
        ];
        for &(v, seeded, unseeded) in cases {
            assert_eq!(hashint8_extended(v, SEED) as i64, seeded, "hashint8extended({v}, seed)");
            if let Some(unseeded) = unseeded {
                assert_eq!(hashint8_extended(v, 0) as i64, unseeded, "hashint8extended({v}, 0)");
            }
        }
    }

    /// int2 and int4 hash through `hash_uint32_extended` of the sign-extended
    /// value; the int8 fold gives the same word for every value they share.
    #[test]
    fn int2_and_int4_agree_with_int8() {
        // PostgreSQL: hashint4extended(42, seed) = hashint2extended(42, seed)
        // = hashint8extended(42, seed); the same for -7.
        assert_eq!(hash_uint32_extended(42, SEED) as i64, 7363975540656877951);
        assert_eq!(hash_uint32_extended(-7i32 as u32, SEED) as i64, -7298374200968567817);
        assert_eq!(hashint8_extended(-7, SEED) as i64, -7298374200968567817);
        for v in (i64::from(i32::MIN)..=i64::from(i32::MAX)).step_by(65_537).chain([-1, 0, 1]) {
            assert_eq!(hashint8_extended(v, SEED), hash_uint32_extended(v as i32 as u32, SEED), "{v}");
        }
    }

    /// `SELECT hashtextextended(t, 8816678312871386365), hashtextextended(t, 0)`:
    /// lengths around the 12-byte block, multi-byte UTF-8, several blocks.
    #[test]
    fn text_hashes_match_postgres() {
        let long = "x".repeat(100);
        let cases: &[(&str, i64, Option<i64>)] = &[
            ("", -5700645584453517373, Some(-6939563903564495251)),
            ("a", -6705225459120232837, Some(3591986179850072241)),
            ("abc", 3628778498291917250, Some(-6747756470228489321)),
            ("abcd", 4029384952263848046, Some(-1038429303365892052)),
            ("hello world", 7664296498819024037, Some(6947366892317592103)),
            ("abcdefghijkl", -7876791541613377658, Some(-7556637188122330412)),
            ("abcdefghijklm", -6785754114725280077, Some(8871624171452417744)),
            ("héllo ✓ 日本", 384022732649581771, Some(-2139439537928217519)),
            (&long, 894331291974510311, Some(-6927006773748011226)),
        ];
        for &(t, seeded, unseeded) in cases {
            assert_eq!(hash_any_extended(t.as_bytes(), SEED) as i64, seeded, "hashtextextended({t:?}, seed)");
            if let Some(unseeded) = unseeded {
                assert_eq!(hash_any_extended(t.as_bytes(), 0) as i64, unseeded, "hashtextextended({t:?}, 0)");
            }
        }
    }

    /// `SELECT uuid_hash_extended(u, 8816678312871386365)`.
    #[test]
    fn uuid_hashes_match_postgres() {
        let cases = [
            ("00000000000000000000000000000000", -5281082146396728638),
            ("a0eebc999c0b4ef8bb6d6bb9bd380a11", 424513190990560493),
            ("ffffffffffffffffffffffffffffffff", -148986464341306210),
        ];
        for (hex, want) in cases {
            assert_eq!(hash_any_extended(&uuid(hex), SEED) as i64, want, "{hex}");
        }
    }

    /// A word hashed by `hash_uint32_extended` and by `hash_any_extended`
    /// over its little-endian bytes agree, as in PostgreSQL.
    #[test]
    fn word_and_bytes_agree() {
        for k in [0u32, 1, 0xDEAD_BEEF, u32::MAX] {
            assert_eq!(hash_uint32_extended(k, SEED), hash_any_extended(&k.to_le_bytes(), SEED));
            assert_eq!(hash_uint32_extended(k, 0), hash_any_extended(&k.to_le_bytes(), 0));
        }
    }

    /// Partitions chosen by PostgreSQL 15 for tables `PARTITION BY HASH (k)`
    /// with seven partitions `FOR VALUES WITH (MODULUS 7, REMAINDER r)`.
    #[test]
    fn remainders_match_postgres_partitions() {
        let ints = [(-1, 0), (42, 0), (i64::MIN, 0), (i64::MAX, 3), (0, 4), (-42, 4), (1, 5)];
        for (v, r) in ints {
            assert_eq!(hash_remainder(&KeyValue::Int(v), 7), r, "int8 {v}");
        }
        let texts = [("héllo ✓ 日本", 0), ("", 1), ("a", 3), ("hello world", 4)];
        for (t, r) in texts {
            assert_eq!(hash_remainder(&KeyValue::Text(t.into()), 7), r, "text {t:?}");
        }
        let uuids = [
            ("ffffffffffffffffffffffffffffffff", 0),
            ("00000000000000000000000000000000", 2),
            ("a0eebc999c0b4ef8bb6d6bb9bd380a11", 6),
        ];
        for (hex, r) in uuids {
            assert_eq!(hash_remainder(&KeyValue::Uuid(uuid(hex)), 7), r, "uuid {hex}");
        }
    }

    #[test]
    fn modulus_one_is_always_zero() {
        assert_eq!(hash_remainder(&KeyValue::Text("anything".into()), 1), 0);
    }
}
