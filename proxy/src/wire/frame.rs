//! Framing of the PostgreSQL wire protocol: a regular message is a 1-byte
//! tag followed by a big-endian `i32` length that counts itself but not the
//! tag; the very first message of a connection (startup, SSL, GSSENC or
//! cancel request) has no tag.
//!
//! These functions only find message boundaries in a buffer; callers forward
//! the original bytes and decode bodies only when they need to.

use std::fmt;

/// Bytes in a tagged message's header (tag + length).
pub const HEADER_LEN: usize = 5;

/// The smallest untagged startup packet (length + protocol code).
const STARTUP_MIN_LEN: usize = 8;

/// Why a buffer does not hold a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below the minimum for its kind.
    BadLength { tag: u8, len: i64 },
    /// The message is larger than we accept.
    TooLarge { tag: u8, len: usize, max: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLength { tag, len } => {
                write!(f, "invalid message length {len} for message type {}", printable(*tag))
            }
            FrameError::TooLarge { tag, len, max } => {
                write!(f, "message of type {} is {len} bytes, over the limit of {max} bytes", printable(*tag))
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn printable(tag: u8) -> String {
    if tag.is_ascii_graphic() { format!("'{}'", tag as char) } else { format!("0x{tag:02x}") }
}

/// A message header read from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Total bytes of the message including tag and length.
    pub total: usize,
}

/// Read the header of the tagged message at the front of `buf`.
///
/// Returns `Ok(None)` when fewer than [`HEADER_LEN`] bytes are buffered; the
/// message body may still be incomplete (compare `total` with `buf.len()`).
#[inline]
pub fn header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength { tag, len: len.into() });
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge { tag, len: total, max });
    }
    Ok(Some(Header { tag, total }))
}

/// Length of the complete tagged message at the front of `buf`, if it is
/// all there.
#[inline]
pub fn complete(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    Ok(header(buf, max)?.filter(|h| buf.len() >= h.total))
}

/// Length of the complete untagged startup-phase packet at the front of
/// `buf`, if it is all there.
pub fn startup_complete(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < STARTUP_MIN_LEN as i32 {
        return Err(FrameError::BadLength { tag: 0, len: len.into() });
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { tag: 0, len, max });
    }
    Ok((buf.len() >= len).then_some(len))
}

/// Iterate over the complete messages at the front of a buffer, yielding
/// `(offset, header)`. Stops at the first incomplete message; an invalid
/// header is yielded as an error and ends the iteration.
pub struct Messages<'a> {
    buf: &'a [u8],
    pos: usize,
    max: usize,
    failed: bool,
}

impl<'a> Messages<'a> {
    pub fn new(buf: &'a [u8], max: usize) -> Self {
        Messages { buf, pos: 0, max, failed: false }
    }

    /// Bytes consumed by the complete messages yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl Iterator for Messages<'_> {
    type Item = Result<(usize, Header), FrameError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match complete(&self.buf[self.pos..], self.max) {
            Ok(Some(h)) => {
                let at = self.pos;
                self.pos += h.total;
                Some(Ok((at, h)))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Read a NUL-terminated string from the front of `buf`, returning it and
/// the rest after the NUL.
#[inline]
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn headers() {
        assert_eq!(header(b"Q\0\0", 100), Ok(None));
        let m = msg(b'Q', b"select 1\0");
        assert_eq!(complete(&m, 100), Ok(Some(Header { tag: b'Q', total: m.len() })));
        assert_eq!(complete(&m[..m.len() - 1], 100), Ok(None));
        assert_eq!(complete(b"Q\0\0\0\x03", 100), Err(FrameError::BadLength { tag: b'Q', len: 3 }));
        assert_eq!(complete(b"Q\xff\xff\xff\xff", 100), Err(FrameError::BadLength { tag: b'Q', len: -1 }));
        assert!(matches!(complete(&m, 5), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn startup() {
        let mut p = 8i32.to_be_bytes().to_vec();
        p.extend_from_slice(&80877103i32.to_be_bytes());
        assert_eq!(startup_complete(&p, 10_000), Ok(Some(8)));
        assert_eq!(startup_complete(&p[..6], 10_000), Ok(None));
        assert!(startup_complete(&[0, 0, 0, 2, 0, 0, 0, 0], 10_000).is_err());
        assert!(startup_complete(&[0x7f, 0, 0, 0], 10_000).is_err());
    }

    #[test]
    fn cstrings() {
        assert_eq!(cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(cstr(b"ab"), None);
    }

    proptest! {
        /// Encoding any sequence of messages and framing the bytes gives back
        /// the same messages, however the bytes are split into reads.
        #[test]
        fn roundtrip(msgs in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20),
                     cut in 0usize..4000) {
            let mut wire = Vec::new();
            for (t, b) in &msgs { wire.extend(msg(*t, b)); }
            let cut = cut.min(wire.len());
            // Frame the first part, then the rest appended, as a reader would.
            let mut buf = wire[..cut].to_vec();
            let mut got = Vec::new();
            let drain = |buf: &mut Vec<u8>, got: &mut Vec<(u8, Vec<u8>)>| {
                let mut it = Messages::new(buf, 1 << 20);
                for m in it.by_ref() {
                    let (at, h) = m.unwrap();
                    got.push((h.tag, buf[at + HEADER_LEN..at + h.total].to_vec()));
                }
                let n = it.consumed();
                buf.drain(..n);
            };
            drain(&mut buf, &mut got);
            buf.extend_from_slice(&wire[cut..]);
            drain(&mut buf, &mut got);
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, msgs);
        }
    }
}
