//! The elements of a one-dimensional PostgreSQL array parameter
//! (`key = ANY($1)`), in text (`{1,2,"a b",NULL}`) or binary format.

/// The elements, `None` for NULL; text-format elements come back unquoted.
pub fn elements(bytes: &[u8], binary: bool) -> Result<Vec<Option<Vec<u8>>>, &'static str> {
    if binary { binary_elements(bytes) } else { text_elements(bytes) }
}

fn binary_elements(b: &[u8]) -> Result<Vec<Option<Vec<u8>>>, &'static str> {
    let mut at = 0;
    fn int(b: &[u8], at: &mut usize) -> Result<i32, &'static str> {
        let v = b.get(*at..*at + 4).ok_or("truncated array")?;
        *at += 4;
        Ok(i32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }
    let ndim = int(b, &mut at)?;
    let _flags = int(b, &mut at)?;
    let _elem_type = int(b, &mut at)?;
    if ndim == 0 {
        return Ok(vec![]);
    }
    if ndim != 1 {
        return Err("only one-dimensional arrays");
    }
    let len = int(b, &mut at)?;
    let _lower = int(b, &mut at)?;
    let mut out = Vec::with_capacity(len.max(0) as usize);
    for _ in 0..len {
        let n = int(b, &mut at)?;
        if n < 0 {
            out.push(None);
            continue;
        }
        let n = n as usize;
        let v = b.get(at..at + n).ok_or("truncated array element")?;
        at += n;
        out.push(Some(v.to_vec()));
    }
    Ok(out)
}

fn text_elements(b: &[u8]) -> Result<Vec<Option<Vec<u8>>>, &'static str> {
    let s = b.trim_ascii();
    // An explicit lower bound: `[0:2]={1,2,3}`.
    let s = match s.iter().position(|&c| c == b'=') {
        Some(eq) if s.first() == Some(&b'[') => s[eq + 1..].trim_ascii(),
        _ => s,
    };
    let inner = s.strip_prefix(b"{").and_then(|r| r.strip_suffix(b"}")).ok_or("not an array literal")?;
    let mut out = Vec::new();
    if inner.trim_ascii().is_empty() {
        return Ok(out);
    }
    let mut i = 0;
    loop {
        while i < inner.len() && inner[i].is_ascii_whitespace() {
            i += 1;
        }
        if inner.get(i) == Some(&b'{') {
            return Err("only one-dimensional arrays");
        }
        let mut elem = Vec::new();
        let mut quoted = false;
        if inner.get(i) == Some(&b'"') {
            quoted = true;
            i += 1;
            loop {
                match inner.get(i) {
                    None => return Err("unterminated quoted array element"),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        elem.push(*inner.get(i + 1).ok_or("bad escape in array")?);
                        i += 2;
                    }
                    Some(&c) => {
                        elem.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(&c) = inner.get(i) {
                if c == b',' {
                    break;
                }
                if c == b'\\' {
                    elem.push(*inner.get(i + 1).ok_or("bad escape in array")?);
                    i += 2;
                    continue;
                }
                elem.push(c);
                i += 1;
            }
            let end = elem.trim_ascii_end().len();
            elem.truncate(end);
        }
        while i < inner.len() && inner[i].is_ascii_whitespace() {
            i += 1;
        }
        if !quoted && elem.eq_ignore_ascii_case(b"null") {
            out.push(None);
        } else {
            out.push(Some(elem));
        }
        match inner.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err("malformed array literal"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(v: &[&str]) -> Vec<Option<Vec<u8>>> {
        v.iter().map(|s| if *s == "<null>" { None } else { Some(s.as_bytes().to_vec()) }).collect()
    }

    #[test]
    fn text_arrays() {
        assert_eq!(elements(b"{1,2,3}", false).unwrap(), some(&["1", "2", "3"]));
        assert_eq!(elements(b"{}", false).unwrap(), some(&[]));
        assert_eq!(
            elements(b"{ a , \"b c\",NULL,\"NULL\",x\\,y}", false).unwrap(),
            some(&["a", "b c", "<null>", "NULL", "x,y"])
        );
        assert_eq!(elements(b"[0:1]={7,8}", false).unwrap(), some(&["7", "8"]));
        assert!(elements(b"{{1},{2}}", false).is_err());
        assert!(elements(b"1,2", false).is_err());
    }

    #[test]
    fn binary_arrays() {
        let mut b = Vec::new();
        for v in [1i32, 0, 20, 3, 1] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&5i64.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&(-9i64).to_be_bytes());
        let e = elements(&b, true).unwrap();
        assert_eq!(e, vec![Some(5i64.to_be_bytes().to_vec()), None, Some((-9i64).to_be_bytes().to_vec())]);
        assert!(elements(&b[..b.len() - 1], true).is_err());
    }
}
