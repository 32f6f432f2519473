//! PostgreSQL `numeric` values, exactly: parsed from and printed to PG's text
//! and binary forms, added, compared, and divided by a row count the way
//! `numeric_div` does (result scale from `select_div_scale`, rounded half
//! away from zero). Sums of shard partials can exceed any fixed width, so
//! magnitudes are unbounded (base 10^9 limbs).

use std::cmp::Ordering;

/// A `numeric` value. `Finite` keeps the display scale (`dscale`): `1.50`
/// and `1.5` are different values here, as in PG's output.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite(Decimal),
}

/// `(-1)^neg * mag / 10^scale`. Zero is never negative.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Decimal {
    neg: bool,
    mag: Nat,
    scale: u32,
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// PG's NUMERIC_MAX_DISPLAY_SCALE and NUMERIC_MIN_SIG_DIGITS.
const MAX_DISPLAY_SCALE: i32 = 1000;
const MIN_SIG_DIGITS: i32 = 16;

impl Numeric {
    pub(crate) fn from_i128(v: i128) -> Numeric {
        Numeric::Finite(Decimal { neg: v < 0, mag: Nat::from_u128(v.unsigned_abs()), scale: 0 })
    }

    /// PG's text output (`numeric_out`): `-12.50`, `0`, `NaN`, `Infinity`.
    pub(crate) fn parse_text(s: &[u8]) -> Option<Numeric> {
        match s {
            b"NaN" => return Some(Numeric::NaN),
            b"Infinity" => return Some(Numeric::PosInf),
            b"-Infinity" => return Some(Numeric::NegInf),
            _ => {}
        }
        let (neg, body) = match s.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, s),
        };
        let (int, frac) = match body.iter().position(|&c| c == b'.') {
            Some(dot) => (&body[..dot], &body[dot + 1..]),
            None => (body, &[][..]),
        };
        if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
            return None;
        }
        let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
        let scale = u32::try_from(frac.len()).ok()?;
        Some(Numeric::Finite(Decimal::new(neg, Nat::from_digits(&digits), scale)))
    }

    /// PG's binary form (`numeric_send`): int16 ndigits, int16 weight,
    /// uint16 sign, uint16 dscale, then ndigits base-10000 digits.
    pub(crate) fn parse_binary(b: &[u8]) -> Option<Numeric> {
        if b.len() < 8 {
            return None;
        }
        let word = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let ndigits = usize::from(word(0));
        let weight = i32::from(word(2) as i16);
        let sign = word(4);
        let dscale = i32::from(word(6));
        if b.len() != 8 + 2 * ndigits || word(0) > i16::MAX as u16 || dscale > 0x3FFF {
            return None;
        }
        match sign {
            NUMERIC_NAN => return Some(Numeric::NaN),
            NUMERIC_PINF => return Some(Numeric::PosInf),
            NUMERIC_NINF => return Some(Numeric::NegInf),
            NUMERIC_POS | NUMERIC_NEG => {}
            _ => return None,
        }
        let groups: Vec<i32> = (0..ndigits).map(|i| i32::from(word(8 + 2 * i) as i16)).collect();
        if groups.iter().any(|&d| !(0..10000).contains(&d)) {
            return None;
        }
        // Decimal digit at power of ten `p`: group `weight - floor(p / 4)`.
        let digit_at = |p: i32| -> u8 {
            let i = weight - p.div_euclid(4);
            match usize::try_from(i).ok().and_then(|i| groups.get(i)) {
                Some(&g) => (g / 10i32.pow(p.rem_euclid(4) as u32) % 10) as u8,
                None => 0,
            }
        };
        // Digits below the display scale must be zero (PG rounds to dscale).
        let lowest = 4 * (weight - ndigits as i32 + 1);
        if (lowest..-dscale).any(|p| digit_at(p) != 0) {
            return None;
        }
        let top = (4 * weight + 3).max(0);
        let digits: Vec<u8> = (-dscale..=top).rev().map(|p| b'0' + digit_at(p)).collect();
        Some(Numeric::Finite(Decimal::new(sign == NUMERIC_NEG, Nat::from_digits(&digits), dscale as u32)))
    }

    pub(crate) fn to_text(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::PosInf => "Infinity".into(),
            Numeric::NegInf => "-Infinity".into(),
            Numeric::Finite(d) => d.to_text(),
        }
    }

    pub(crate) fn to_binary(&self) -> Vec<u8> {
        let (sign, weight, dscale, digits) = match self {
            Numeric::NaN => (NUMERIC_NAN, 0, 0, Vec::new()),
            // PG sends the bits of its special header that overlap the
            // short-format dscale field: 32 for both infinities.
            Numeric::PosInf => (NUMERIC_PINF, 0, 32, Vec::new()),
            Numeric::NegInf => (NUMERIC_NINF, 0, 32, Vec::new()),
            Numeric::Finite(d) => {
                let (weight, digits) = d.base10000();
                let sign = if d.neg { NUMERIC_NEG } else { NUMERIC_POS };
                (sign, weight, d.scale, digits)
            }
        };
        let mut out = Vec::with_capacity(8 + 2 * digits.len());
        out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        out.extend_from_slice(&(weight as i16).to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&(dscale as u16).to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    /// PG's total order for numeric: -Infinity < finite < Infinity < NaN,
    /// and `1.0 = 1.00`.
    pub(crate) fn cmp_value(&self, other: &Numeric) -> Ordering {
        fn rank(n: &Numeric) -> u8 {
            match n {
                Numeric::NegInf => 0,
                Numeric::Finite(_) => 1,
                Numeric::PosInf => 2,
                Numeric::NaN => 3,
            }
        }
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp_value(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    /// The same value with trailing fractional zeros removed, so that equal
    /// values are equal (`==`, hash) whatever their display scale.
    pub(crate) fn normalized(&self) -> Numeric {
        match self {
            Numeric::Finite(d) => {
                let mut d = d.clone();
                while d.scale > 0 {
                    let (q, r) = d.mag.divrem_u64(10);
                    if r != 0 {
                        break;
                    }
                    d.mag = q;
                    d.scale -= 1;
                }
                Numeric::Finite(d)
            }
            other => other.clone(),
        }
    }

    /// `self + other` as `numeric_add` computes it: exact, with the larger
    /// display scale; NaN absorbs, Infinity + -Infinity is NaN.
    pub(crate) fn add(&self, other: &Numeric) -> Numeric {
        use Numeric::*;
        match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf, _) | (_, PosInf) => PosInf,
            (NegInf, _) | (_, NegInf) => NegInf,
            (Finite(a), Finite(b)) => Finite(a.add(b)),
        }
    }

    /// `self / count` as `numeric_div(sum, count)` computes it, which is how
    /// PG finishes `avg` over int2/int4/int8/numeric: the result scale from
    /// `select_div_scale`, the quotient rounded half away from zero.
    pub(crate) fn div_count(&self, count: u64) -> Numeric {
        match self {
            Numeric::Finite(d) if count > 0 => Numeric::Finite(d.div_count(count)),
            Numeric::Finite(_) => Numeric::NaN,
            other => other.clone(),
        }
    }
}

impl Decimal {
    fn new(neg: bool, mag: Nat, scale: u32) -> Decimal {
        Decimal { neg: neg && !mag.is_zero(), mag, scale }
    }

    /// Decimal digits of the magnitude, at least `scale + 1` of them.
    fn digits(&self) -> Vec<u8> {
        let mut digits = self.mag.to_digits();
        let want = self.scale as usize + 1;
        if digits.len() < want {
            let mut padded = vec![b'0'; want - digits.len()];
            padded.extend_from_slice(&digits);
            digits = padded;
        }
        digits
    }

    fn to_text(&self) -> String {
        let digits = self.digits();
        let split = digits.len() - self.scale as usize;
        let mut out = String::with_capacity(digits.len() + 2);
        if self.neg {
            out.push('-');
        }
        out.push_str(std::str::from_utf8(&digits[..split]).unwrap_or_default());
        if self.scale > 0 {
            out.push('.');
            out.push_str(std::str::from_utf8(&digits[split..]).unwrap_or_default());
        }
        out
    }

    /// The canonical base-10000 form PG stores and sends: weight of the
    /// first digit and the digits, without leading or trailing zero digits
    /// (zero is weight 0 and no digits).
    fn base10000(&self) -> (i32, Vec<i16>) {
        let digits = self.digits();
        let split = digits.len() - self.scale as usize;
        let (int, frac) = digits.split_at(split);
        let int_pad = (4 - int.len() % 4) % 4;
        let frac_pad = (4 - frac.len() % 4) % 4;
        let mut all = vec![b'0'; int_pad];
        all.extend_from_slice(int);
        all.extend_from_slice(frac);
        all.extend(std::iter::repeat_n(b'0', frac_pad));
        let mut groups: Vec<i16> =
            all.chunks(4).map(|c| c.iter().fold(0i16, |acc, &d| acc * 10 + i16::from(d - b'0'))).collect();
        let mut weight = ((int.len() + int_pad) / 4) as i32 - 1;
        let leading = groups.iter().take_while(|&&g| g == 0).count();
        groups.drain(..leading);
        weight -= leading as i32;
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        (weight, groups)
    }

    fn aligned(&self, scale: u32) -> Nat {
        self.mag.mul_pow10(scale - self.scale)
    }

    fn cmp_value(&self, other: &Decimal) -> Ordering {
        match (self.neg, other.neg) {
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        let scale = self.scale.max(other.scale);
        let by_mag = self.aligned(scale).cmp(&other.aligned(scale));
        if self.neg { by_mag.reverse() } else { by_mag }
    }

    fn add(&self, other: &Decimal) -> Decimal {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.aligned(scale), other.aligned(scale));
        if self.neg == other.neg {
            return Decimal::new(self.neg, a.add(&b), scale);
        }
        match a.cmp(&b) {
            Ordering::Less => Decimal::new(other.neg, b.sub(&a), scale),
            _ => Decimal::new(self.neg, a.sub(&b), scale),
        }
    }

    fn div_count(&self, count: u64) -> Decimal {
        let divisor = Decimal { neg: false, mag: Nat::from_u128(u128::from(count)), scale: 0 };
        let rscale = select_div_scale(self, &divisor);
        // rscale >= self.scale always (select_div_scale takes the max), so
        // the scaled dividend is an integer.
        let dividend = self.mag.mul_pow10(rscale - self.scale);
        let (mut q, r) = dividend.divrem_u64(count);
        if u128::from(r) * 2 >= u128::from(count) {
            q = q.add(&Nat::from_u128(1));
        }
        Decimal::new(self.neg, q, rscale)
    }
}

/// numeric.c `select_div_scale`: at least 16 significant digits, and no
/// less than either input's display scale.
fn select_div_scale(var1: &Decimal, var2: &Decimal) -> u32 {
    let first = |d: &Decimal| {
        let (weight, digits) = d.base10000();
        digits.first().map_or((0, 0), |&g| (weight, g))
    };
    let (weight1, first1) = first(var1);
    let (weight2, first2) = first(var2);
    let mut qweight = weight1 - weight2;
    if first1 <= first2 {
        qweight -= 1;
    }
    let rscale = (MIN_SIG_DIGITS - qweight * 4).max(var1.scale as i32).max(var2.scale as i32).max(0);
    rscale.min(MAX_DISPLAY_SCALE) as u32
}

/// An unsigned integer in little-endian base-10^9 limbs, without high zero
/// limbs (zero is no limbs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Nat(Vec<u32>);

const BASE: u64 = 1_000_000_000;

impl Nat {
    fn from_u128(mut v: u128) -> Nat {
        let mut limbs = Vec::new();
        while v > 0 {
            limbs.push((v % u128::from(BASE)) as u32);
            v /= u128::from(BASE);
        }
        Nat(limbs)
    }

    /// From ASCII decimal digits (most significant first).
    fn from_digits(digits: &[u8]) -> Nat {
        let mut limbs: Vec<u32> =
            digits.rchunks(9).map(|chunk| chunk.iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))).collect();
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
        Nat(limbs)
    }

    /// ASCII decimal digits, no leading zeros ("0" for zero).
    fn to_digits(&self) -> Vec<u8> {
        let Some((top, rest)) = self.0.split_last() else {
            return b"0".to_vec();
        };
        let mut out = top.to_string().into_bytes();
        for limb in rest.iter().rev() {
            out.extend_from_slice(format!("{limb:09}").as_bytes());
        }
        out
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn trim(mut self) -> Nat {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        self
    }

    fn add(&self, other: &Nat) -> Nat {
        let mut out = Vec::with_capacity(self.0.len().max(other.0.len()) + 1);
        let mut carry = 0u64;
        for i in 0..self.0.len().max(other.0.len()) {
            let sum = u64::from(*self.0.get(i).unwrap_or(&0)) + u64::from(*other.0.get(i).unwrap_or(&0)) + carry;
            out.push((sum % BASE) as u32);
            carry = sum / BASE;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        Nat(out).trim()
    }

    /// `self - other`; the caller guarantees `self >= other`.
    fn sub(&self, other: &Nat) -> Nat {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut d = i64::from(self.0[i]) - i64::from(*other.0.get(i).unwrap_or(&0)) - borrow;
            borrow = 0;
            if d < 0 {
                d += BASE as i64;
                borrow = 1;
            }
            out.push(d as u32);
        }
        Nat(out).trim()
    }

    fn mul_pow10(&self, k: u32) -> Nat {
        if self.is_zero() {
            return Nat::default();
        }
        let mut limbs = vec![0u32; (k / 9) as usize];
        limbs.extend_from_slice(&self.0);
        let factor = 10u64.pow(k % 9);
        let mut carry = 0u64;
        for limb in &mut limbs {
            let v = u64::from(*limb) * factor + carry;
            *limb = (v % BASE) as u32;
            carry = v / BASE;
        }
        if carry > 0 {
            limbs.push(carry as u32);
        }
        Nat(limbs).trim()
    }

    fn divrem_u64(&self, d: u64) -> (Nat, u64) {
        let mut q = vec![0u32; self.0.len()];
        let mut rem = 0u128;
        for i in (0..self.0.len()).rev() {
            let cur = rem * u128::from(BASE) + u128::from(self.0[i]);
            q[i] = (cur / u128::from(d)) as u32;
            rem = cur % u128::from(d);
        }
        (Nat(q).trim(), rem as u64)
    }
}

impl PartialOrd for Nat {
    fn partial_cmp(&self, other: &Nat) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Nat {
    fn cmp(&self, other: &Nat) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Numeric {
        Numeric::parse_text(s.as_bytes()).unwrap()
    }

    #[test]
    fn text_round_trip() {
        for s in ["0", "1", "-1", "0.5", "-0.05", "12345.6789", "100000000000000000000000000000000000000.000", "NaN"] {
            assert_eq!(n(s).to_text(), s);
        }
        assert_eq!(n("-0.00").to_text(), "0.00");
        for bad in ["", "-", ".5", "1e3", "+1", "1.2.3", " 1", "nan"] {
            assert_eq!(Numeric::parse_text(bad.as_bytes()), None, "{bad}");
        }
    }

    /// Binary forms checked against PostgreSQL 15 (`numeric_send`).
    #[test]
    fn binary_matches_postgres() {
        let cases: &[(&str, &[u8])] = &[
            ("0", &[0, 0, 0, 0, 0, 0, 0, 0]),
            ("0.00", &[0, 0, 0, 0, 0, 0, 0, 2]),
            ("1", &[0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            ("-1.5", &[0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88]),
            ("12345.678", &[0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]),
            ("10000", &[0, 1, 0, 1, 0, 0, 0, 0, 0, 1]),
            ("0.0001", &[0, 1, 0xff, 0xff, 0, 0, 0, 4, 0, 1]),
            ("NaN", &[0, 0, 0, 0, 0xc0, 0, 0, 0]),
        ];
        for (text, bin) in cases {
            assert_eq!(n(text).to_binary(), *bin, "{text}");
            assert_eq!(Numeric::parse_binary(bin).unwrap().to_text(), *text);
        }
        assert_eq!(Numeric::PosInf.to_binary(), [0, 0, 0, 0, 0xd0, 0, 0, 0x20]);
        assert_eq!(Numeric::NegInf.to_binary(), [0, 0, 0, 0, 0xf0, 0, 0, 0x20]);
        assert_eq!(Numeric::parse_binary(&[0, 0, 0, 0, 0xd0, 0, 0, 0x20]), Some(Numeric::PosInf));
        assert_eq!(Numeric::parse_binary(&[0, 0, 0, 0, 0xf0, 0, 0, 0]), Some(Numeric::NegInf));
        // A digit below the display scale is malformed.
        assert_eq!(Numeric::parse_binary(&[0, 1, 0xff, 0xff, 0, 0, 0, 1, 0x13, 0x89]), None);
    }

    #[test]
    fn add_and_compare() {
        assert_eq!(n("1.5").add(&n("-1.50")).to_text(), "0.00");
        assert_eq!(n("-3").add(&n("1.25")).to_text(), "-1.75");
        assert_eq!(n("999999999999999999999999999999").add(&n("1")).to_text(), "1000000000000000000000000000000");
        assert_eq!(n("Infinity").add(&n("-Infinity")), Numeric::NaN);
        assert_eq!(n("Infinity").add(&n("5")), Numeric::PosInf);
        assert_eq!(n("1.0").cmp_value(&n("1.00")), Ordering::Equal);
        assert_eq!(n("-2").cmp_value(&n("-10")), Ordering::Greater);
        assert_eq!(n("NaN").cmp_value(&n("Infinity")), Ordering::Greater);
        assert_eq!(n("-Infinity").cmp_value(&n("-99999")), Ordering::Less);
        assert_eq!(n("1.10").normalized(), n("1.1").normalized());
        assert_eq!(n("100").normalized().to_text(), "100");
    }

    /// Expected values from PostgreSQL 15: `avg` over the listed sums/counts.
    #[test]
    fn div_count_matches_postgres() {
        let cases = [
            ("3", 2, "1.5000000000000000"),
            ("30000", 2, "15000.000000000000"),
            ("1", 3, "0.33333333333333333333"),
            ("2", 3, "0.66666666666666666667"),
            ("-2", 3, "-0.66666666666666666667"),
            ("10", 1, "10.0000000000000000"),
            ("0", 5, "0.00000000000000000000"),
            ("1.500", 2, "0.75000000000000000000"),
            ("123456789012345678901234567890", 7, "17636684144620811271604938270"),
            ("5", 10000, "0.00050000000000000000"),
            // Exact halves round away from zero.
            ("123456789012345678901234567895", 10, "12345678901234567890123456790"),
            ("-123456789012345678901234567895", 10, "-12345678901234567890123456790"),
            ("123456789012345678901234567894.5", 2, "61728394506172839450617283947.3"),
        ];
        for (sum, count, want) in cases {
            assert_eq!(n(sum).div_count(count).to_text(), want, "{sum}/{count}");
        }
        assert_eq!(n("NaN").div_count(3), Numeric::NaN);
        assert_eq!(n("-Infinity").div_count(3), Numeric::NegInf);
    }
}
