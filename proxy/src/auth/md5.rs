//! PostgreSQL's legacy `md5` password authentication.
//!
//! The stored secret is `"md5" + hex(md5(password ++ user))`. The server
//! sends a random 4-byte salt in `AuthenticationMD5Password`; the client
//! answers with `"md5" + hex(md5(hex(md5(password ++ user)) ++ salt))`. So the
//! stored secret alone is enough to log in: treat it like a password.
//!
//! For an unknown user, do what PostgreSQL does: send a salt anyway and fail
//! with the same error as a wrong password. There is nothing user-specific in
//! the challenge, so no mock state is needed here.

use ::md5::{Digest, Md5};
use rand::RngCore as _;
use rand::rngs::OsRng;

use super::constant_time_eq;

/// Length of a stored md5 secret: "md5" and 32 hex digits.
const SECRET_LEN: usize = 35;

/// The secret to store for `user` with `password` (what PostgreSQL puts in
/// `pg_authid.rolpassword` under `password_encryption = md5`).
pub fn secret(user: &str, password: &str) -> String {
    let digest = Md5::new().chain_update(password.as_bytes()).chain_update(user.as_bytes()).finalize();
    format!("md5{}", hex(&digest))
}

/// Whether `s` has the shape PostgreSQL accepts as an md5 secret: "md5" then
/// 32 lowercase hex digits (uppercase would hash differently on the client).
pub fn is_secret(s: &str) -> bool {
    s.len() == SECRET_LEN
        && s.starts_with("md5")
        && s.bytes().skip(3).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh salt for `AuthenticationMD5Password`.
pub fn random_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    OsRng.fill_bytes(&mut salt);
    salt
}

/// Checks the client's `PasswordMessage` against the stored secret and the
/// salt we sent. `response` is the message body; a single trailing NUL (the C
/// string terminator) is tolerated so callers need not strip it. A malformed
/// stored secret never verifies.
pub fn verify(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if !is_secret(stored) {
        return false;
    }
    let response = response.strip_suffix(&[0]).unwrap_or(response);
    let digest = Md5::new().chain_update(&stored.as_bytes()[3..]).chain_update(salt).finalize();
    let expected = format!("md5{}", hex(&digest));
    constant_time_eq(expected.as_bytes(), response)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
