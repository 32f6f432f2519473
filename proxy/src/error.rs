//! The proxy's error type and the one place where errors become what a
//! client sees. An error reaches the client with its own SQLSTATE and text
//! only through [`ClientError`]; anything else is reported as `XX000` with a
//! generic message while the detail goes to the log.

use bytes::BytesMut;
use tokio_postgres::error::SqlState;

use crate::wire::frame::FrameError;
use crate::wire::messages::{self, Severity, StartupError};

/// An error that may be shown to a PostgreSQL client as is.
pub trait ClientError {
    fn sqlstate(&self) -> SqlState;
    fn client_message(&self) -> String;
}

/// Errors of the proxy crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("SSL connection is required")]
    TlsRequired,
    #[error("tls handshake: {0}")]
    TlsHandshake(std::io::Error),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    /// A SCRAM exchange that failed for another reason than the password.
    #[error(transparent)]
    Scram(crate::auth::AuthError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("authentication timed out")]
    StartupTimeout,
    #[error("sorry, too many clients already")]
    TooManyClients,
    #[error("the database system is shutting down")]
    ShuttingDown,
    #[error("replication connections are not supported")]
    ReplicationUnsupported,
    #[error("no user name given in startup packet")]
    NoUser,
    /// An `options` startup parameter PostgreSQL would refuse too.
    #[error("{0}")]
    BadStartupOption(String),
    #[error("terminating connection due to idle-in-transaction timeout")]
    IdleInTransactionTimeout,
    #[error(transparent)]
    Pool(#[from] crate::pool::PoolError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("server connection lost: {0}")]
    ServerLost(String),
    /// The server connection was lost while a commit was in flight and the
    /// session cannot go on (it held session state on that connection).
    #[error("server connection lost during a commit: {0}")]
    ServerLostInCommit(String),
    /// A user without `admin = true` asked for the admin console.
    #[error("permission denied for the admin console: user \"{0}\" is not an admin")]
    AdminDenied(String),
    /// A cluster node that has not learned any PostgreSQL server yet.
    #[error("this Meridian node does not know the cluster topology yet; retry shortly")]
    NoTopology,
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl ClientError for Error {
    fn sqlstate(&self) -> SqlState {
        match self {
            Error::Startup(StartupError::UnsupportedProtocol { .. }) => SqlState::FEATURE_NOT_SUPPORTED,
            Error::Frame(_) | Error::Startup(_) | Error::Protocol(_) => SqlState::PROTOCOL_VIOLATION,
            Error::Io(_) | Error::TlsHandshake(_) => SqlState::CONNECTION_FAILURE,
            Error::TlsRequired => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            Error::AuthFailed(_) => SqlState::INVALID_PASSWORD,
            Error::Scram(crate::auth::AuthError::Malformed(_)) => SqlState::PROTOCOL_VIOLATION,
            Error::Scram(crate::auth::AuthError::Unsupported(_)) => SqlState::FEATURE_NOT_SUPPORTED,
            Error::Scram(_) | Error::Config(_) => SqlState::INTERNAL_ERROR,
            Error::StartupTimeout => SqlState::PROTOCOL_VIOLATION,
            Error::TooManyClients => SqlState::TOO_MANY_CONNECTIONS,
            Error::ShuttingDown => SqlState::ADMIN_SHUTDOWN,
            Error::ReplicationUnsupported => SqlState::FEATURE_NOT_SUPPORTED,
            Error::NoUser => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            Error::BadStartupOption(_) => SqlState::SYNTAX_ERROR,
            Error::IdleInTransactionTimeout => SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            Error::Pool(e) => e.sqlstate(),
            Error::Backend(e) => e.sqlstate(),
            Error::ServerLost(_) => SqlState::CONNECTION_FAILURE,
            Error::ServerLostInCommit(_) => SqlState::TRANSACTION_RESOLUTION_UNKNOWN,
            Error::AdminDenied(_) => SqlState::INSUFFICIENT_PRIVILEGE,
            Error::NoTopology => SqlState::CANNOT_CONNECT_NOW,
            Error::Cluster(_) => SqlState::INTERNAL_ERROR,
        }
    }

    fn client_message(&self) -> String {
        match self {
            Error::Io(_) => "connection failure".into(),
            Error::Scram(crate::auth::AuthError::OutOfOrder(_)) | Error::Config(_) => "internal error".into(),
            Error::Pool(e) => e.client_message(),
            Error::Backend(e) => e.client_message(),
            e => e.to_string(),
        }
    }
}

/// What a client whose session survives the loss of its server connection
/// (the server died under it: killed, crashed, cut off, with no FATAL of
/// its own) is told about the transaction that was on it. Which one is
/// decided by `session::lost`; the texts and codes are chosen here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerGone {
    /// Certainly not committed (a statement inside a transaction block, a
    /// read, a batch not yet synced): `40001`, which drivers and
    /// applications retry, like the write gate's refusals.
    RolledBack,
    /// A commit was in flight (`COMMIT`, or an autocommit statement that
    /// may write) and its answer never came: `08007`. Never reported as a
    /// success or a failure, since either may be false.
    CommitUnknown,
    /// A later statement of a transaction already reported lost: `25P02`,
    /// as PostgreSQL answers in an aborted transaction.
    InFailedTransaction,
    /// The request was never sent: its primary could not be reached and no
    /// new one was published within `cluster.write_hold`. `40001`.
    Unreachable,
}

impl ClientError for ServerGone {
    fn sqlstate(&self) -> SqlState {
        match self {
            ServerGone::RolledBack | ServerGone::Unreachable => SqlState::T_R_SERIALIZATION_FAILURE,
            ServerGone::CommitUnknown => SqlState::TRANSACTION_RESOLUTION_UNKNOWN,
            ServerGone::InFailedTransaction => SqlState::IN_FAILED_SQL_TRANSACTION,
        }
    }

    fn client_message(&self) -> String {
        match self {
            ServerGone::RolledBack => "meridian: the connection to the server (its primary may have failed) was lost; \
                                       the transaction was not committed: retry it"
                .into(),
            ServerGone::CommitUnknown => {
                "meridian: the connection to the server (its primary may have failed) was lost \
                                          while a commit was in progress: the transaction may or may not have \
                                          committed"
                    .into()
            }
            ServerGone::InFailedTransaction => {
                "current transaction is aborted, commands ignored until end of transaction block".into()
            }
            ServerGone::Unreachable => "meridian: the shard's primary cannot be reached and no new primary was \
                                        published in time (a failover may be under way); nothing was sent: retry"
                .into(),
        }
    }
}

/// Append an ErrorResponse for `err` with the given severity.
pub fn write_error(buf: &mut BytesMut, severity: Severity, err: &dyn ClientError) {
    messages::error_response(buf, severity, err.sqlstate().code(), &err.client_message(), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(Error::AuthFailed("x".into()).sqlstate(), SqlState::INVALID_PASSWORD);
        assert_eq!(Error::TlsRequired.sqlstate(), SqlState::INVALID_AUTHORIZATION_SPECIFICATION);
        assert_eq!(Error::TooManyClients.sqlstate(), SqlState::TOO_MANY_CONNECTIONS);
        assert_eq!(Error::ShuttingDown.sqlstate(), SqlState::ADMIN_SHUTDOWN);
        assert_eq!(Error::Protocol("x".into()).sqlstate(), SqlState::PROTOCOL_VIOLATION);
        assert_eq!(Error::AdminDenied("x".into()).sqlstate(), SqlState::INSUFFICIENT_PRIVILEGE);
        assert_eq!(Error::Io(std::io::Error::other("secret detail")).client_message(), "connection failure");
        assert_eq!(Error::ServerLost("x".into()).sqlstate(), SqlState::CONNECTION_FAILURE);
        assert_eq!(Error::ServerLostInCommit("x".into()).sqlstate(), SqlState::TRANSACTION_RESOLUTION_UNKNOWN);
        assert_eq!(ServerGone::RolledBack.sqlstate().code(), crate::cluster::gate::SQLSTATE);
        assert_eq!(ServerGone::CommitUnknown.sqlstate().code(), "08007");
        assert_eq!(ServerGone::InFailedTransaction.sqlstate().code(), "25P02");
    }
}
