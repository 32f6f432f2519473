//! PostgreSQL WAL positions (`pg_lsn`), as `X/Y` text and as a number.

use std::fmt;

/// A WAL position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parse PostgreSQL's `X/Y` form (hex halves).
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let valid = |h: &str| !h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid(hi) || !valid(lo) {
            return None;
        }
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn(hi << 32 | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(Lsn::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Lsn::parse("0/16b3748"), Lsn::parse("0/16B3748"));
        assert!(Lsn::parse("16B3748").is_none());
        assert!(Lsn::parse("x/1").is_none());
        assert!(Lsn::parse("1/123456789").is_none());
        assert!(Lsn::parse("0/1") > Lsn::parse("0/0"));
        assert!(Lsn::parse("1/0") > Lsn::parse("0/FFFFFFFF"));
    }
}
