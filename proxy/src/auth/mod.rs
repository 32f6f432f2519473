//! Client authentication: the checks Meridian runs before a client may use a
//! pool, written sans-IO so the wire layer owns every byte on the socket.
//!
//! What lives here, and what does not:
//!
//! - [`scram`]: the server side of SCRAM-SHA-256 as PostgreSQL implements it
//!   (`src/backend/libpq/auth-scram.c`), including the "mock" exchange that
//!   makes an unknown user look exactly like a wrong password.
//! - [`md5`]: PostgreSQL's legacy `md5` password check.
//! - [`users`]: the users file (TOML) and its validated form, [`Users`].
//!
//! Nothing here reads a socket, frames a message, picks an SQLSTATE or logs.
//! The session code calls these functions with message bodies and turns an
//! [`AuthError`] into an `ErrorResponse`:
//!
//! ```text
//!  client                        session (wire)                 auth
//!    | StartupMessage(user) -------> Users::get(user)
//!    |                               Some(Scram(v)) -> ScramExchange::new(v)
//!    |                               None           -> ScramExchange::mock(user, &mock_secret)
//!    | <- AuthenticationSASL ["SCRAM-SHA-256"]
//!    | SASLInitialResponse --------> client_first(body) -----> server-first
//!    | <- AuthenticationSASLContinue(server-first)
//!    | SASLResponse ---------------> client_final(body) -----> server-final | AuthError
//!    | <- AuthenticationSASLFinal(server-final), AuthenticationOk
//!    |    or ErrorResponse (08P01 malformed / 0A000 unsupported / 28P01 wrong password)
//! ```

pub mod md5;
pub mod scram;
pub mod users;

#[cfg(test)]
mod md5_tests;
#[cfg(test)]
mod scram_tests;
#[cfg(test)]
mod users_tests;

use std::fmt;
use std::str::FromStr;

pub use scram::{MockSecret, ScramExchange, ScramVerifier, VerifierError};
pub use users::{AuthMethod, Credential, PoolMode, RawUser, RawUsers, Secret, User, Users, UsersError};

/// Why a SCRAM exchange ended without authenticating the client.
///
/// The variants are split by who is at fault so the session can answer with
/// the SQLSTATE PostgreSQL would use, without this module choosing one:
///
/// ```
/// use proxy::auth::AuthError;
///
/// fn sqlstate(e: &AuthError) -> &'static str {
///     match e {
///         AuthError::Malformed(_) => "08P01",     // protocol_violation
///         AuthError::Unsupported(_) => "0A000",   // feature_not_supported
///         AuthError::WrongPassword => "28P01",    // invalid_password
///         AuthError::OutOfOrder(_) => "XX000",    // our bug, not the client's
///     }
/// }
/// # assert_eq!(sqlstate(&AuthError::WrongPassword), "28P01");
/// ```
///
/// The details are fixed strings: nothing the client sent is ever copied into
/// an error, so logging one can neither leak a secret nor inject text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The client's message does not follow RFC 5802 (or PostgreSQL's reading
    /// of it), including a nonce or channel-binding echo that does not match.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Well-formed, but asks for something PostgreSQL refuses too: an
    /// authorization identity (`a=`) or a mandatory extension (`m=`).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The proof did not verify, or the exchange was a mock for a user that
    /// does not exist. Deliberately one variant: the client must not be able
    /// to tell these apart, and the caller already knows which it started.
    #[error("password authentication failed")]
    WrongPassword,
    /// The caller fed messages in the wrong order or after the exchange
    /// ended. A bug in the session code, never the client's doing.
    #[error("SCRAM exchange used out of order: {0}")]
    OutOfOrder(&'static str),
}

/// Which kind of stored secret `meridian passwd` should print; the methods of
/// [`AuthMethod`] that have a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// A `SCRAM-SHA-256$...` verifier (what PostgreSQL stores by default).
    ScramSha256,
    /// An `md5...` hash of password and user name.
    Md5,
}

impl FromStr for SecretKind {
    type Err = UnknownSecretKind;

    /// Accepts the same spelling as `auth = "..."` in the users file.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scram-sha-256" => Ok(SecretKind::ScramSha256),
            "md5" => Ok(SecretKind::Md5),
            _ => Err(UnknownSecretKind),
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        AuthMethod::from(*self).fmt(f)
    }
}

impl From<SecretKind> for AuthMethod {
    fn from(kind: SecretKind) -> Self {
        match kind {
            SecretKind::ScramSha256 => AuthMethod::ScramSha256,
            SecretKind::Md5 => AuthMethod::Md5,
        }
    }
}

/// A `SecretKind` that was neither `scram-sha-256` nor `md5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown secret kind, expected \"scram-sha-256\" or \"md5\"")]
pub struct UnknownSecretKind;

/// The `secret = "..."` value for a users file entry, as printed by
/// `meridian passwd`.
///
/// SCRAM verifiers get a fresh random 16-byte salt and 4096 iterations, and
/// the password is SASLprep-normalized exactly as libpq and PostgreSQL do,
/// so the result can also be pasted into `ALTER ROLE ... PASSWORD`. `user` is
/// only used by md5, whose hash is salted with the user name.
pub fn make_secret(method: SecretKind, user: &str, password: &str) -> String {
    match method {
        SecretKind::ScramSha256 => ScramVerifier::from_password(password).to_string(),
        SecretKind::Md5 => md5::secret(user, password),
    }
}

/// Compares two byte strings in time that depends only on their lengths, so a
/// client cannot learn a secret a byte at a time from response timing. The
/// lengths themselves are public here (fixed-size keys and hex digests).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}
