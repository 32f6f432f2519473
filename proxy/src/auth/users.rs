//! The users file: who may connect, how they prove it, and how Meridian logs
//! in to PostgreSQL on their behalf.
//!
//! ```toml
//! [[user]]
//! name = "app"
//! auth = "scram-sha-256"            # default; or "md5" | "trust"
//! secret = "SCRAM-SHA-256$4096:...$...:..."
//! backend_password_file = "app.pw"  # or backend_password = "..."
//! admin = false
//! pool_mode = "transaction"         # or "session"; absent = the global default
//! ```
//!
//! [`RawUsers`] is the file as serde reads it; [`RawUsers::validate`] turns it
//! into [`Users`], after which every secret has been parsed and every
//! backend password file read. Code past startup (or past a reload) only sees
//! `Users`. Nothing in this module logs, and every secret it holds prints as
//! `***` under `Debug`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::md5;
use super::scram::{ScramVerifier, VerifierError};

/// The users file as written, before any checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawUsers {
    /// One `[[user]]` table per user.
    #[serde(default = "no_users")]
    pub user: Vec<RawUser>,
}

/// No `[[user]]` tables means nobody can log in, which is valid (if useless).
fn no_users() -> Vec<RawUser> {
    Vec::new()
}

/// One `[[user]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RawUser {
    /// The name clients put in the startup packet; matched exactly.
    pub name: String,
    /// How the client proves who it is.
    #[serde(default = "default_auth")]
    pub auth: AuthMethod,
    /// SCRAM verifier or md5 hash; must be absent for `trust`.
    pub secret: Option<Secret>,
    /// Password Meridian uses to log in to PostgreSQL as this user.
    pub backend_password: Option<Secret>,
    /// File whose first line (trimmed) is that password, relative to the
    /// users file's directory; keeps the password out of the users file.
    pub backend_password_file: Option<PathBuf>,
    /// May use the admin console.
    #[serde(default = "default_admin")]
    pub admin: bool,
    /// Overrides the global pool mode for this user.
    pub pool_mode: Option<PoolMode>,
}

/// SCRAM is what PostgreSQL itself defaults to, and the only method here that
/// neither sends nor stores a password-equivalent.
fn default_auth() -> AuthMethod {
    AuthMethod::ScramSha256
}

/// Admin rights are opt-in.
fn default_admin() -> bool {
    false
}

/// How a client authenticates to Meridian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 against a stored verifier.
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// PostgreSQL's legacy md5 challenge against a stored md5 hash.
    #[serde(rename = "md5")]
    Md5,
    /// No check at all: whoever names this user is this user.
    #[serde(rename = "trust")]
    Trust,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        })
    }
}

/// When a backend connection goes back to the pool.
///
/// `Default` is `Transaction`, the reason to put a pooler in front of
/// PostgreSQL at all; users who need session state opt out per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// After each transaction: many clients share few backends, but session
    /// state (`SET`, temp tables, session advisory locks) does not survive.
    #[default]
    Transaction,
    /// When the client disconnects: full session semantics, one backend per
    /// client.
    Session,
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        })
    }
}

/// A string that must never reach a log: `Debug` and `Display` print `***`.
/// Read it with [`expose`](Self::expose) at the one place that needs it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; keep the borrow short and out of format strings.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a client must prove, per user.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Run a SCRAM-SHA-256 exchange against this verifier.
    Scram(ScramVerifier),
    /// Run the md5 challenge against this `md5...` hash (checked to be "md5"
    /// plus 32 lowercase hex digits).
    Md5(String),
    /// Accept without a check.
    Trust,
}

impl Credential {
    /// The method this credential is checked with.
    pub fn method(&self) -> AuthMethod {
        match self {
            Credential::Scram(_) => AuthMethod::ScramSha256,
            Credential::Md5(_) => AuthMethod::Md5,
            Credential::Trust => AuthMethod::Trust,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // ScramVerifier's Debug hides its keys.
            Credential::Scram(v) => f.debug_tuple("Scram").field(v).finish(),
            // An md5 hash is enough to log in, so it is as secret as a password.
            Credential::Md5(_) => f.write_str("Md5(***)"),
            Credential::Trust => f.write_str("Trust"),
        }
    }
}

/// One validated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Startup-packet user name.
    pub name: String,
    /// How the client authenticates.
    pub credential: Credential,
    /// Password for PostgreSQL, from `backend_password` or the first line of
    /// `backend_password_file`; `None` when neither was given.
    pub backend_password: Option<Secret>,
    /// May use the admin console.
    pub admin: bool,
    /// Per-user pool mode; `None` means the global default applies.
    pub pool_mode: Option<PoolMode>,
}

/// All users, validated, looked up by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Users {
    by_name: BTreeMap<String, User>,
}

/// A users file that cannot be used. Each variant names the user and the key
/// at fault; none carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file could not be read.
    #[error("could not read users file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not valid TOML, or not the expected shape (unknown key, wrong type).
    /// Only the parser's message and position are kept: its usual snippet of
    /// the offending line could show a password.
    #[error("users file {}, line {line}, column {column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// `name = ""`.
    #[error("[[user]] number {index}: `name` is empty")]
    EmptyName { index: usize },
    /// Two `[[user]]` tables with the same `name`.
    #[error("user {user:?}: `name` is defined more than once")]
    DuplicateUser { user: String },
    /// `auth = "scram-sha-256"` or `"md5"` without `secret`.
    #[error("user {user:?}: `secret` is required with auth = \"{auth}\"")]
    MissingSecret { user: String, auth: AuthMethod },
    /// `auth = "trust"` with a `secret`, which would suggest a check that
    /// never happens.
    #[error("user {user:?}: `secret` must be absent with auth = \"trust\"")]
    UnexpectedSecret { user: String },
    /// `secret` for SCRAM does not parse as a verifier.
    #[error("user {user:?}: `secret` is not a valid SCRAM-SHA-256 verifier")]
    InvalidScramSecret {
        user: String,
        #[source]
        source: VerifierError,
    },
    /// `secret` for md5 is not "md5" and 32 lowercase hex digits.
    #[error("user {user:?}: `secret` for auth = \"md5\" must be \"md5\" followed by 32 lowercase hex digits")]
    InvalidMd5Secret { user: String },
    /// Both `backend_password` and `backend_password_file`.
    #[error("user {user:?}: set only one of `backend_password` and `backend_password_file`")]
    ConflictingBackendPassword { user: String },
    /// `backend_password_file` could not be read.
    #[error("user {user:?}: could not read `backend_password_file` {}", path.display())]
    BackendPasswordFile {
        user: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The backend password (inline, or the file's first line) is empty;
    /// PostgreSQL never accepts an empty password.
    #[error("user {user:?}: `{key}` is empty")]
    EmptyBackendPassword { user: String, key: &'static str },
}

impl RawUsers {
    /// Checks every rule and resolves `backend_password_file` against
    /// `base_dir` (the users file's directory). Stops at the first problem.
    pub fn validate(self, base_dir: &Path) -> Result<Users, UsersError> {
        let mut by_name = BTreeMap::new();
        for (index, raw) in self.user.into_iter().enumerate() {
            let user = raw.validate(index + 1, base_dir)?;
            match by_name.entry(user.name.clone()) {
                Entry::Occupied(_) => {
                    return Err(UsersError::DuplicateUser { user: user.name });
                }
                Entry::Vacant(slot) => {
                    slot.insert(user);
                }
            }
        }
        Ok(Users { by_name })
    }
}

impl RawUser {
    fn validate(self, index: usize, base_dir: &Path) -> Result<User, UsersError> {
        if self.name.is_empty() {
            return Err(UsersError::EmptyName { index });
        }
        let name = self.name;
        let credential = match (self.auth, self.secret) {
            (AuthMethod::Trust, None) => Credential::Trust,
            (AuthMethod::Trust, Some(_)) => {
                return Err(UsersError::UnexpectedSecret { user: name });
            }
            (auth @ (AuthMethod::ScramSha256 | AuthMethod::Md5), None) => {
                return Err(UsersError::MissingSecret { user: name, auth });
            }
            (AuthMethod::ScramSha256, Some(secret)) => match secret.expose().parse() {
                Ok(verifier) => Credential::Scram(verifier),
                Err(source) => {
                    return Err(UsersError::InvalidScramSecret { user: name, source });
                }
            },
            (AuthMethod::Md5, Some(secret)) => {
                if !md5::is_secret(secret.expose()) {
                    return Err(UsersError::InvalidMd5Secret { user: name });
                }
                Credential::Md5(secret.expose().to_owned())
            }
        };
        let backend_password = match (self.backend_password, self.backend_password_file) {
            (Some(_), Some(_)) => {
                return Err(UsersError::ConflictingBackendPassword { user: name });
            }
            (None, None) => None,
            (Some(password), None) => {
                if password.expose().is_empty() {
                    return Err(UsersError::EmptyBackendPassword { user: name, key: "backend_password" });
                }
                Some(password)
            }
            (None, Some(file)) => {
                let path = base_dir.join(file);
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    Err(source) => {
                        return Err(UsersError::BackendPasswordFile { user: name, path, source });
                    }
                };
                let password = text.lines().next().unwrap_or_default().trim();
                if password.is_empty() {
                    return Err(UsersError::EmptyBackendPassword { user: name, key: "backend_password_file" });
                }
                Some(Secret::new(password))
            }
        };
        Ok(User { name, credential, backend_password, admin: self.admin, pool_mode: self.pool_mode })
    }
}

impl Users {
    /// Reads, parses and validates the users file at `path`; relative
    /// `backend_password_file`s are resolved against its directory.
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| UsersError::Read { path: path.to_owned(), source })?;
        Users::parse(&text, path)
    }

    /// Like [`load`](Self::load) with the file's contents already in hand;
    /// `path` names the file in errors and locates relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Users, UsersError> {
        let raw: RawUsers = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|span| line_and_column(text, span.start)).unwrap_or((0, 0));
            UsersError::Parse { path: path.to_owned(), line, column, message: redact_strings(e.message().trim_end()) }
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        raw.validate(base_dir)
    }

    /// The user with exactly this name.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// All users, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_name.values()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are no users at all (nobody can log in).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// These users (a node's users file) with the cluster's users on top: a
    /// cluster user replaces a file user of the same name, keeping the
    /// file's backend password (which never travels through Raft). A record
    /// whose secret does not parse is left out, with a warning.
    pub fn with_cluster_users(&self, records: &BTreeMap<String, consensus::state::UserRecord>) -> Users {
        use consensus::state::UserAuth;
        let mut by_name = self.by_name.clone();
        for r in records.values() {
            let credential = match (r.auth, r.secret.as_deref()) {
                (UserAuth::Trust, _) => Some(Credential::Trust),
                (UserAuth::ScramSha256, Some(s)) => s.parse().ok().map(Credential::Scram),
                (UserAuth::Md5, Some(s)) if md5::is_secret(s) => Some(Credential::Md5(s.to_owned())),
                _ => None,
            };
            let Some(credential) = credential else {
                tracing::warn!(user = %r.name, "cluster user with an unusable secret left out");
                continue;
            };
            let pool_mode = match r.pool_mode.as_deref() {
                Some("session") => Some(PoolMode::Session),
                Some("transaction") => Some(PoolMode::Transaction),
                _ => None,
            };
            let backend_password = self.by_name.get(&r.name).and_then(|u| u.backend_password.clone());
            by_name.insert(
                r.name.clone(),
                User { name: r.name.clone(), credential, backend_password, admin: r.admin, pool_mode },
            );
        }
        Users { by_name }
    }
}

/// Replaces serde's `string "<value>"` (as in `invalid type: string "...",
/// expected a boolean`) with `a string`: a password typed into the wrong
/// key must not end up in the startup log.
fn redact_strings(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(MARK) {
        out.push_str(&rest[..start]);
        let value = &rest[start + MARK.len()..];
        // The value is Debug-escaped, so a bare quote ends it.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in value.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        out.push_str("a string");
        match end {
            Some(i) => rest = &value[i + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
