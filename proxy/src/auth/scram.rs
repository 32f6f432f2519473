//! SCRAM-SHA-256, server side, as PostgreSQL speaks it (RFC 5802, RFC 7677,
//! `src/backend/libpq/auth-scram.c`).
//!
//! ```text
//!  ScramExchange::new(verifier) | ::mock(user, secret)
//!        |
//!        | client_first("n,,n=,r=<c-nonce>")
//!        v                         -> "r=<c-nonce><s-nonce>,s=<salt>,i=<iterations>"
//!  AwaitingClientFinal
//!        | client_final("c=biws,r=<c-nonce><s-nonce>,p=<proof>")
//!        v                         -> "v=<server signature>" | AuthError
//!      Done (any error also ends the exchange)
//! ```
//!
//! Where PostgreSQL and the RFC differ, this follows PostgreSQL:
//!
//! - the user name inside the SCRAM message is ignored (libpq sends `n=`);
//!   the identity is the one from the startup packet, chosen by the caller;
//! - only `SCRAM-SHA-256` is offered, never `-PLUS`, so the gs2 flag must be
//!   `n` or `y`, and `p=...` is a protocol violation;
//! - an authorization identity (`a=`) and mandatory extensions (`m=`) are
//!   refused as unsupported, optional extensions are skipped;
//! - a wrong proof ends with an error, not with `e=invalid-proof`.
//!
//! Not here: the SASL message framing, the mechanism list, choosing the
//! verifier for a user, SCRAM towards the backend, channel binding.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use super::{AuthError, constant_time_eq};

/// SASL mechanism name to advertise in `AuthenticationSASL`.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Iterations PostgreSQL uses by default (`scram_iterations`), and the one
/// [`ScramVerifier::from_password`] and mock exchanges use.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length PostgreSQL generates; mock salts have it too so they look real.
pub const DEFAULT_SALT_LEN: usize = 16;

/// Longest SASL message PostgreSQL accepts (`PG_MAX_SASL_MESSAGE_LENGTH`).
/// The framing layer should enforce it first; checked again here so the
/// parser never works on unbounded input.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Random bytes in a server nonce, base64-encoded to 24 characters, as
/// PostgreSQL does (`SCRAM_RAW_NONCE_LEN`).
const RAW_NONCE_LEN: usize = 18;

/// Length of SHA-256 outputs, and so of every SCRAM key.
const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM verifier string could not be parsed, or a verifier not built.
///
/// Messages never include the verifier itself: it is password-equivalent
/// enough to impersonate the server, so it stays out of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    /// Not `<scheme>$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    #[error("not of the form SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")]
    Format,
    /// The scheme is something other than `SCRAM-SHA-256`.
    #[error("scheme is not SCRAM-SHA-256")]
    Scheme,
    /// Iteration count missing, zero, not decimal, or above `u32::MAX`.
    #[error("iteration count must be a positive decimal integer")]
    Iterations,
    /// Salt empty or not standard (padded) base64.
    #[error("salt must be non-empty standard base64")]
    Salt,
    /// StoredKey not standard base64 of exactly 32 bytes.
    #[error("StoredKey must be 32 bytes in standard base64")]
    StoredKey,
    /// ServerKey not standard base64 of exactly 32 bytes.
    #[error("ServerKey must be 32 bytes in standard base64")]
    ServerKey,
    /// [`ScramVerifier::generate`] got a password that SASLprep would change
    /// (non-ASCII compatibility characters, unusual spaces, ...). Only
    /// [`ScramVerifier::from_password`] can normalize those.
    #[error("password needs SASLprep normalization; use a random salt (ScramVerifier::from_password)")]
    NeedsSaslprep,
}

/// What PostgreSQL stores for a SCRAM-SHA-256 password: enough to check a
/// client's proof and to prove ourselves to the client, not the password.
///
/// Text form ([`FromStr`] / [`Display`](fmt::Display)) is PostgreSQL's
/// `rolpassword` format, so verifiers can move between `pg_authid` and the
/// users file: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
/// `Display` therefore prints the keys and must not be used for logging;
/// `Debug` shows only the iteration count and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl ScramVerifier {
    /// Builds a verifier with the given salt and iteration count, for tests
    /// with known vectors and for operators who want more iterations.
    ///
    /// The password is prepared like PostgreSQL prepares it: SASLprep when it
    /// applies, the raw bytes when the password contains characters SASLprep
    /// prohibits. This crate has no SASLprep tables of its own, so passwords
    /// that SASLprep would *change* are refused with
    /// [`VerifierError::NeedsSaslprep`]; every ASCII password is fine, and
    /// [`from_password`](Self::from_password) handles all passwords.
    pub fn generate(password: &str, salt: &[u8], iterations: u32) -> Result<Self, VerifierError> {
        if iterations == 0 {
            return Err(VerifierError::Iterations);
        }
        if salt.is_empty() {
            return Err(VerifierError::Salt);
        }
        if !saslprep_keeps(password) {
            return Err(VerifierError::NeedsSaslprep);
        }
        Ok(Self::derive(password.as_bytes(), salt, iterations))
    }

    /// A verifier with a random 16-byte salt and 4096 iterations, exactly what
    /// `CREATE ROLE ... PASSWORD` would store with default settings.
    ///
    /// Delegates to `postgres_protocol::password::scram_sha_256`, which applies
    /// full SASLprep (falling back to raw bytes like PostgreSQL).
    pub fn from_password(password: &str) -> Self {
        postgres_protocol::password::scram_sha_256(password.as_bytes())
            .parse()
            .expect("postgres-protocol emits verifiers in PostgreSQL's format")
    }

    /// PBKDF2 iteration count clients must run.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt; public information, sent to every client that asks.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// SaltedPassword = Hi(password, salt, i); StoredKey = H(HMAC(SaltedPassword,
    /// "Client Key")); ServerKey = HMAC(SaltedPassword, "Server Key").
    fn derive(prepared_password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = hi(prepared_password, salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }
}

impl FromStr for ScramVerifier {
    type Err = VerifierError;

    /// Parses PostgreSQL's format. Stricter than PostgreSQL in two places
    /// that it never produces itself: the iteration count must be plain
    /// positive decimal, and the salt must not be empty.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once('$').ok_or(VerifierError::Format)?;
        let (params, keys) = rest.split_once('$').ok_or(VerifierError::Format)?;
        let (iterations, salt) = params.split_once(':').ok_or(VerifierError::Format)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(VerifierError::Format)?;
        if scheme != MECHANISM {
            return Err(VerifierError::Scheme);
        }
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifierError::Iterations);
        }
        let iterations: u32 = iterations.parse().map_err(|_| VerifierError::Iterations)?;
        if iterations == 0 {
            return Err(VerifierError::Iterations);
        }
        let salt = STANDARD.decode(salt).map_err(|_| VerifierError::Salt)?;
        if salt.is_empty() {
            return Err(VerifierError::Salt);
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key).ok_or(VerifierError::StoredKey)?,
            server_key: decode_key(server_key).ok_or(VerifierError::ServerKey)?,
        })
    }
}

impl fmt::Display for ScramVerifier {
    /// The storage format, keys included: for writing users files and
    /// `ALTER ROLE`, never for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key),
        )
    }
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("keys", &"***")
            .finish()
    }
}

/// Server-wide secret that makes mock salts unpredictable.
///
/// A mock salt must be stable for a given user name (else retrying reveals
/// that the user is fake) and unguessable (else an attacker computes it and
/// compares). PostgreSQL keys it with the cluster's `mock_authentication_nonce`;
/// we key it with this. Create one per process at startup and keep it across
/// reloads of the users file; load it from disk if mock salts should also
/// survive restarts.
#[derive(Clone)]
pub struct MockSecret([u8; 32]);

impl MockSecret {
    /// 32 bytes from the operating system's CSPRNG.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        MockSecret(bytes)
    }

    /// A secret kept elsewhere (a file, the config), for salts that are stable
    /// across restarts.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MockSecret(bytes)
    }
}

impl fmt::Debug for MockSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MockSecret(***)")
    }
}

/// One server-side SCRAM-SHA-256 exchange with one client. Sans-IO: feed it
/// the bodies of `SASLInitialResponse` and `SASLResponse`, send back what it
/// returns. Any error ends the exchange; the caller then closes the session
/// with an `ErrorResponse` (see [`AuthError`] for the SQLSTATEs).
pub struct ScramExchange {
    verifier: ScramVerifier,
    /// Printable ASCII without commas; appended to the client's nonce.
    server_nonce: String,
    /// Set for mock exchanges: the proof is still computed and checked, so
    /// the timing matches a real user, but the exchange always fails.
    doomed: bool,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(FirstRound),
    Done,
}

/// What the first round leaves for the second: the parts of the
/// AuthMessage and the values the client must echo.
struct FirstRound {
    channel_binding: ChannelBindingFlag,
    client_first_bare: Vec<u8>,
    client_nonce: Vec<u8>,
    server_first: Vec<u8>,
}

/// The gs2 flag from the client-first message; the client must repeat it,
/// base64-encoded with its header, in `c=` of the client-final message.
#[derive(Clone, Copy)]
enum ChannelBindingFlag {
    /// "n,,": the client does not support channel binding. `c=biws`.
    NotSupported,
    /// "y,,": the client supports it but believes we do not (true: we never
    /// offer `-PLUS`). `c=eSws`.
    ServerLacksIt,
}

impl ChannelBindingFlag {
    fn expected_echo(self) -> &'static [u8] {
        match self {
            ChannelBindingFlag::NotSupported => b"biws",
            ChannelBindingFlag::ServerLacksIt => b"eSws",
        }
    }
}

impl ScramExchange {
    /// An exchange against a real user's verifier, with a random server
    /// nonce.
    pub fn new(verifier: ScramVerifier) -> Self {
        Self::build(verifier, random_nonce(), false)
    }

    /// Like [`new`](Self::new) with a chosen server nonce, so tests can replay
    /// known vectors (RFC 7677). Never use a fixed nonce in production.
    ///
    /// # Panics
    ///
    /// If `server_nonce` is empty or not printable ASCII without commas.
    pub fn with_nonce(verifier: ScramVerifier, server_nonce: &str) -> Self {
        assert!(
            !server_nonce.is_empty() && server_nonce.bytes().all(is_printable),
            "a SCRAM nonce is printable ASCII without commas"
        );
        Self::build(verifier, server_nonce.to_owned(), false)
    }

    /// An exchange for a user that does not exist (or has no usable SCRAM
    /// secret). It sends a salt derived from `user` and `secret` and the
    /// default iteration count, verifies the proof as usual, then fails with
    /// [`AuthError::WrongPassword`], so the client cannot tell this from a
    /// real user with a wrong password. Malformed messages fail the same way
    /// as in a real exchange.
    pub fn mock(user: &str, secret: &MockSecret) -> Self {
        let digest = Sha256::new().chain_update(user.as_bytes()).chain_update(secret.0).finalize();
        let verifier = ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: digest[..DEFAULT_SALT_LEN].to_vec(),
            // Never matched (the exchange is doomed); derived rather than
            // zeroed so no key is trivially known.
            stored_key: hmac(&secret.0, &[b"mock StoredKey", user.as_bytes()]),
            server_key: hmac(&secret.0, &[b"mock ServerKey", user.as_bytes()]),
        };
        Self::build(verifier, random_nonce(), true)
    }

    fn build(verifier: ScramVerifier, server_nonce: String, doomed: bool) -> Self {
        ScramExchange { verifier, server_nonce, doomed, state: State::AwaitingClientFirst }
    }

    /// Handles the client-first message (the `SASLInitialResponse` data) and
    /// returns the server-first message for `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            self.state = State::Done;
            return Err(AuthError::OutOfOrder("client-first message after the first round"));
        }
        // Until this round succeeds, any error leaves the exchange finished.
        self.state = State::Done;
        check_length(message)?;
        let mut input = Cursor::new(message);

        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let channel_binding = match input.next() {
            Some(b'n') => ChannelBindingFlag::NotSupported,
            Some(b'y') => ChannelBindingFlag::ServerLacksIt,
            Some(b'p') => {
                return Err(AuthError::Malformed(
                    "the client selected SCRAM-SHA-256 without channel binding, \
                     but the SCRAM message includes channel binding data",
                ));
            }
            _ => return Err(AuthError::Malformed("unexpected channel-binding flag")),
        };
        if input.next() != Some(b',') {
            return Err(AuthError::Malformed("comma expected after the channel-binding flag"));
        }
        match input.next() {
            Some(b',') => {}
            Some(b'a') => {
                return Err(AuthError::Unsupported("client uses authorization identity, but it is not supported"));
            }
            _ => {
                return Err(AuthError::Malformed("unexpected attribute in client-first-message"));
            }
        }

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let client_first_bare = input.rest().to_vec();
        if input.peek() == Some(b'm') {
            return Err(AuthError::Unsupported("client requires an unsupported SCRAM extension"));
        }
        // The SCRAM user name is ignored, as in PostgreSQL: the identity is
        // the startup packet's `user`, and libpq sends an empty one here.
        let _ignored_user = input.attr_value(b'n', "expected user name attribute \"n\"")?;
        let client_nonce = input.attr_value(b'r', "expected nonce attribute \"r\"")?;
        if client_nonce.is_empty() {
            return Err(AuthError::Malformed("empty SCRAM nonce"));
        }
        if !client_nonce.iter().copied().all(is_printable) {
            return Err(AuthError::Malformed("non-printable characters in SCRAM nonce"));
        }
        // Optional extensions: none supported, so skip them (after checking
        // they are shaped like attributes).
        while !input.at_end() {
            input.any_attr()?;
        }

        let mut server_first = Vec::with_capacity(96);
        server_first.extend_from_slice(b"r=");
        server_first.extend_from_slice(client_nonce);
        server_first.extend_from_slice(self.server_nonce.as_bytes());
        server_first.extend_from_slice(b",s=");
        server_first.extend_from_slice(STANDARD.encode(&self.verifier.salt).as_bytes());
        server_first.extend_from_slice(format!(",i={}", self.verifier.iterations).as_bytes());

        self.state = State::AwaitingClientFinal(FirstRound {
            channel_binding,
            client_first_bare,
            client_nonce: client_nonce.to_vec(),
            server_first: server_first.clone(),
        });
        Ok(server_first)
    }

    /// Handles the client-final message (the `SASLResponse` data). On success
    /// returns the server-final message (`v=<ServerSignature>`) for
    /// `AuthenticationSASLFinal`, after which the client is authenticated.
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        let round = match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingClientFinal(round) => round,
            State::AwaitingClientFirst => {
                return Err(AuthError::OutOfOrder("client-final message before client-first"));
            }
            State::Done => {
                return Err(AuthError::OutOfOrder("client-final message after the exchange ended"));
            }
        };
        check_length(message)?;
        let mut input = Cursor::new(message);

        // client-final-message-without-proof = channel-binding "," nonce ["," extensions]
        // client-final-message = client-final-message-without-proof "," proof
        let channel_binding = input.attr_value(b'c', "expected channel-binding attribute \"c\"")?;
        if channel_binding != round.channel_binding.expected_echo() {
            return Err(AuthError::Malformed("unexpected SCRAM channel-binding attribute in client-final-message"));
        }
        let final_nonce = input.attr_value(b'r', "expected nonce attribute \"r\"")?;
        let (without_proof_len, proof) = loop {
            // The comma before the attribute about to be read, which ends
            // the without-proof part if that attribute is the proof.
            let comma = input.pos.saturating_sub(1);
            let (attr, value) = input.any_attr()?;
            if attr == b'p' {
                break (comma, value);
            }
        };
        let proof = decode_key(proof).ok_or(AuthError::Malformed("malformed proof in client-final-message"))?;
        if !input.at_end() {
            return Err(AuthError::Malformed("garbage found at the end of client-final-message"));
        }

        let mut expected_nonce = round.client_nonce;
        expected_nonce.extend_from_slice(self.server_nonce.as_bytes());
        if !constant_time_eq(final_nonce, &expected_nonce) {
            return Err(AuthError::Malformed("nonce does not match"));
        }

        // AuthMessage = client-first-message-bare "," server-first-message ","
        //               client-final-message-without-proof
        let auth_message: [&[u8]; 5] =
            [&round.client_first_bare, b",", &round.server_first, b",", &message[..without_proof_len]];
        let client_signature = hmac(&self.verifier.stored_key, &auth_message);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let proof_ok = constant_time_eq(&Sha256::digest(client_key), &self.verifier.stored_key);
        // Checked in this order, with `|` rather than `||`, so a mock exchange
        // does the same work as a real one before failing.
        if !proof_ok | self.doomed {
            return Err(AuthError::WrongPassword);
        }

        let server_signature = hmac(&self.verifier.server_key, &auth_message);
        let mut server_final = b"v=".to_vec();
        server_final.extend_from_slice(STANDARD.encode(server_signature).as_bytes());
        Ok(server_final)
    }
}

impl fmt::Debug for ScramExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitingClientFirst => "awaiting client-first",
            State::AwaitingClientFinal(_) => "awaiting client-final",
            State::Done => "done",
        };
        // `doomed` is left out on purpose: whether the user exists is not
        // something to put in a log line by accident.
        f.debug_struct("ScramExchange").field("verifier", &self.verifier).field("state", &state).finish_non_exhaustive()
    }
}

/// Byte cursor over a SCRAM message with PostgreSQL's tokenizing rules
/// (`read_attr_value`, `read_any_attr`): an attribute is one letter, `=`,
/// then everything up to the next comma, which is consumed.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Reads `<attr>=<value>` for a specific attribute.
    fn attr_value(&mut self, attr: u8, detail: &'static str) -> Result<&'a [u8], AuthError> {
        if self.next() != Some(attr) || self.next() != Some(b'=') {
            return Err(AuthError::Malformed(detail));
        }
        Ok(self.value())
    }

    /// Reads `ALPHA=<value>` for any attribute.
    fn any_attr(&mut self) -> Result<(u8, &'a [u8]), AuthError> {
        let attr = match self.next() {
            None => {
                return Err(AuthError::Malformed("attribute expected, but found end of message"));
            }
            Some(a) if a.is_ascii_alphabetic() => a,
            Some(_) => {
                return Err(AuthError::Malformed("attribute expected, found invalid character"));
            }
        };
        if self.next() != Some(b'=') {
            return Err(AuthError::Malformed("expected \"=\" after attribute name"));
        }
        Ok((attr, self.value()))
    }

    /// Everything up to the next comma (or the end); moves past the comma.
    fn value(&mut self) -> &'a [u8] {
        let rest = self.rest();
        let len = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        self.pos += len;
        if !self.at_end() {
            self.pos += 1; // the comma
        }
        &rest[..len]
    }
}

/// PostgreSQL refuses empty messages and messages with an embedded NUL
/// (its "length mismatch"); the length cap bounds all later work.
fn check_length(message: &[u8]) -> Result<(), AuthError> {
    if message.is_empty() {
        return Err(AuthError::Malformed("the message is empty"));
    }
    if message.len() > MAX_MESSAGE_LEN {
        return Err(AuthError::Malformed("the message is too long"));
    }
    if message.contains(&0) {
        return Err(AuthError::Malformed("the message contains a NUL byte"));
    }
    Ok(())
}

/// RFC 5802 `printable`: ASCII 0x21..=0x7E except ','.
fn is_printable(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b','
}

/// A fresh server nonce: 18 random bytes in base64, as PostgreSQL makes it.
fn random_nonce() -> String {
    let mut raw = [0u8; RAW_NONCE_LEN];
    OsRng.fill_bytes(&mut raw);
    STANDARD.encode(raw)
}

fn decode_key(b64: impl AsRef<[u8]>) -> Option<[u8; KEY_LEN]> {
    STANDARD.decode(b64).ok()?.try_into().ok()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    // Keying once and cloning saves rehashing the key on every iteration.
    let keyed = HmacSha256::new_from_slice(password).expect("HMAC accepts keys of any length");
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut prev: [u8; KEY_LEN] = mac.finalize().into_bytes().into();
    let mut result = prev;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&prev);
        prev = mac.finalize().into_bytes().into();
        for (r, p) in result.iter_mut().zip(prev) {
            *r ^= p;
        }
    }
    result
}

/// Whether SASLprep, as PostgreSQL applies it, leaves `password` as it is.
///
/// ASCII passwords always pass unchanged (PostgreSQL's `pg_saslprep` returns
/// them as they are, and ASCII control characters make it fall back to the
/// raw bytes). For anything else we have no SASLprep tables, so we ask
/// postgres-protocol, which has them: hash the password with its full
/// normalization, then with none, and compare under the same salt.
fn saslprep_keeps(password: &str) -> bool {
    if password.is_ascii() {
        return true;
    }
    let normalized = ScramVerifier::from_password(password);
    let raw = ScramVerifier::derive(password.as_bytes(), &normalized.salt, normalized.iterations);
    raw.stored_key == normalized.stored_key
}
