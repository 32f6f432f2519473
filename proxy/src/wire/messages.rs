//! Encoding the few messages Meridian writes itself, and decoding the few it
//! must read. Everything else is forwarded as the original bytes.

use bytes::{BufMut, BytesMut};

use super::frame::cstr;

/// Protocol code of an SSLRequest.
pub const SSL_REQUEST: i32 = 80877103;
/// Protocol code of a GSSENCRequest.
pub const GSSENC_REQUEST: i32 = 80877104;
/// Protocol code of a CancelRequest.
pub const CANCEL_REQUEST: i32 = 80877102;
/// Protocol 3.0, the only version we speak.
pub const PROTOCOL_3_0: i32 = 196608;

/// The untagged first message of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, key: i32 },
    Startup { version: i32, params: Vec<(String, String)> },
}

/// Why a startup packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    #[error("malformed startup packet")]
    Malformed,
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedProtocol { major: i32, minor: i32 },
    #[error("startup packet is not valid UTF-8")]
    NotUtf8,
}

/// Decode a complete startup-phase packet (including its length prefix).
pub fn parse_startup(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    let body = packet.get(4..).ok_or(StartupError::Malformed)?;
    let code = i32::from_be_bytes(
        body.get(..4).ok_or(StartupError::Malformed)?.try_into().map_err(|_| StartupError::Malformed)?,
    );
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() == 8 => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            key: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        }),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => Err(StartupError::Malformed),
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            let mut rest = rest;
            loop {
                let (k, r) = cstr(rest).ok_or(StartupError::Malformed)?;
                if k.is_empty() {
                    if !r.is_empty() {
                        return Err(StartupError::Malformed);
                    }
                    break;
                }
                let (v, r) = cstr(r).ok_or(StartupError::Malformed)?;
                let k = std::str::from_utf8(k).map_err(|_| StartupError::NotUtf8)?;
                let v = std::str::from_utf8(v).map_err(|_| StartupError::NotUtf8)?;
                params.push((k.to_owned(), v.to_owned()));
                rest = r;
            }
            Ok(StartupPacket::Startup { version: v, params })
        }
        v => Err(StartupError::UnsupportedProtocol { major: v >> 16, minor: v & 0xffff }),
    }
}

/// Start a tagged message; returns the offset of its length field.
#[inline]
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

/// Fill in the length of a message started with [`begin`].
#[inline]
fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// ErrorResponse ('E') or, for notice severities, NoticeResponse ('N').
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str, detail: Option<&str>) {
    let tag = match severity {
        Severity::Error | Severity::Fatal => b'E',
        Severity::Notice | Severity::Warning => b'N',
    };
    let at = begin(buf, tag);
    buf.put_u8(b'S');
    put_cstr(buf, severity.as_str().as_bytes());
    buf.put_u8(b'V');
    put_cstr(buf, severity.as_str().as_bytes());
    buf.put_u8(b'C');
    put_cstr(buf, code.as_bytes());
    buf.put_u8(b'M');
    put_cstr(buf, message.as_bytes());
    if let Some(d) = detail {
        buf.put_u8(b'D');
        put_cstr(buf, d.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn auth_ok(buf: &mut BytesMut) {
    let at = begin(buf, b'R');
    buf.put_i32(0);
    finish(buf, at);
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    let at = begin(buf, b'R');
    buf.put_i32(5);
    buf.put_slice(&salt);
    finish(buf, at);
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, b'R');
    buf.put_i32(10);
    for m in mechanisms {
        put_cstr(buf, m.as_bytes());
    }
    buf.put_u8(0);
    finish(buf, at);
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(11);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(12);
    buf.put_slice(data);
    finish(buf, at);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    let at = begin(buf, b'S');
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    finish(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, key: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(key);
    finish(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

pub fn parse_complete(buf: &mut BytesMut) {
    buf.put_slice(&[b'1', 0, 0, 0, 4]);
}

pub fn close_complete(buf: &mut BytesMut) {
    buf.put_slice(&[b'3', 0, 0, 0, 4]);
}

/// CommandComplete ('C') with `tag`.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag.as_bytes());
    finish(buf, at);
}

/// RowDescription ('T') of text columns with these names.
pub fn row_description_text(buf: &mut BytesMut, names: &[&str]) {
    let at = begin(buf, b'T');
    buf.put_i16(names.len() as i16);
    for n in names {
        put_cstr(buf, n.as_bytes());
        buf.put_u32(0); // table
        buf.put_i16(0); // column
        buf.put_u32(25); // text
        buf.put_i16(-1);
        buf.put_i32(-1);
        buf.put_i16(0); // text format
    }
    finish(buf, at);
}

/// DataRow ('D') of text values.
pub fn data_row_text(buf: &mut BytesMut, values: &[Option<&str>]) {
    let at = begin(buf, b'D');
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                buf.put_i32(v.len() as i32);
                buf.put_slice(v.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    finish(buf, at);
}

/// BindComplete ('2').
pub fn bind_complete(buf: &mut BytesMut) {
    buf.put_slice(&[b'2', 0, 0, 0, 4]);
}

/// Describe ('D') of the unnamed portal.
pub fn describe_portal(buf: &mut BytesMut) {
    buf.put_slice(&[b'D', 0, 0, 0, 6, b'P', 0]);
}

/// Sync ('S').
pub fn sync(buf: &mut BytesMut) {
    buf.put_slice(&[b'S', 0, 0, 0, 4]);
}

/// Execute ('E') of the unnamed portal, all rows.
pub fn execute(buf: &mut BytesMut) {
    let at = begin(buf, b'E');
    buf.put_u8(0);
    buf.put_i32(0);
    finish(buf, at);
}

/// A simple Query ('Q') message.
pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    put_cstr(buf, sql.as_bytes());
    finish(buf, at);
}

/// A Parse ('P') message with the given statement name, reusing the query
/// text and parameter types of `original_body` (the body of the client's
/// Parse, after its own name).
pub fn parse_renamed(buf: &mut BytesMut, name: &str, rest_after_name: &[u8]) {
    let at = begin(buf, b'P');
    put_cstr(buf, name.as_bytes());
    buf.put_slice(rest_after_name);
    finish(buf, at);
}

/// A Bind ('B') message for statement `stmt`, keeping the portal name and
/// everything after the statement name from the client's message.
pub fn bind_renamed(buf: &mut BytesMut, portal: &[u8], stmt: &str, rest_after_stmt: &[u8]) {
    let at = begin(buf, b'B');
    put_cstr(buf, portal);
    put_cstr(buf, stmt.as_bytes());
    buf.put_slice(rest_after_stmt);
    finish(buf, at);
}

/// A Describe ('D') of a prepared statement.
pub fn describe_statement(buf: &mut BytesMut, stmt: &str) {
    let at = begin(buf, b'D');
    buf.put_u8(b'S');
    put_cstr(buf, stmt.as_bytes());
    finish(buf, at);
}

/// A CancelRequest packet.
pub fn cancel_request(pid: i32, key: i32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..4].copy_from_slice(&16i32.to_be_bytes());
    p[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    p[8..12].copy_from_slice(&pid.to_be_bytes());
    p[12..].copy_from_slice(&key.to_be_bytes());
    p
}

/// The fields of an ErrorResponse or NoticeResponse body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// Decode the interesting fields of an ErrorResponse/NoticeResponse body.
pub fn parse_error_fields(body: &[u8]) -> ErrorFields {
    let mut f = ErrorFields::default();
    let mut rest = body;
    while let Some((&kind, r)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some((v, r)) = cstr(r) else { break };
        let v = String::from_utf8_lossy(v).into_owned();
        match kind {
            b'S' => f.severity = v,
            b'C' => f.code = v,
            b'M' => f.message = v,
            _ => {}
        }
        rest = r;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn startup_packets() {
        assert_eq!(parse_startup(&packet(SSL_REQUEST, b"")), Ok(StartupPacket::SslRequest));
        assert_eq!(parse_startup(&packet(GSSENC_REQUEST, b"")), Ok(StartupPacket::GssEncRequest));
        let mut k = 7i32.to_be_bytes().to_vec();
        k.extend_from_slice(&(-9i32).to_be_bytes());
        assert_eq!(parse_startup(&packet(CANCEL_REQUEST, &k)), Ok(StartupPacket::Cancel { pid: 7, key: -9 }));
        assert_eq!(
            parse_startup(&packet(PROTOCOL_3_0, b"user\0bob\0database\0db\0\0")),
            Ok(StartupPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![("user".into(), "bob".into()), ("database".into(), "db".into())]
            })
        );
        assert_eq!(parse_startup(&packet(PROTOCOL_3_0, b"user\0bob\0")), Err(StartupError::Malformed));
        assert_eq!(parse_startup(&packet(PROTOCOL_3_0, b"user\0")), Err(StartupError::Malformed));
        assert_eq!(parse_startup(&packet(PROTOCOL_3_0, b"\0junk")), Err(StartupError::Malformed));
        assert_eq!(parse_startup(&packet(2 << 16, b"")), Err(StartupError::UnsupportedProtocol { major: 2, minor: 0 }));
        assert_eq!(parse_startup(&packet(CANCEL_REQUEST, b"\0\0")), Err(StartupError::Malformed));
        assert_eq!(parse_startup(&[0, 0, 0, 8]), Err(StartupError::Malformed));
    }

    #[test]
    fn error_roundtrip() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "28P01", "password authentication failed", None);
        assert_eq!(b[0], b'E');
        let f = parse_error_fields(&b[5..]);
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "28P01");
        assert_eq!(f.message, "password authentication failed");
    }
}
