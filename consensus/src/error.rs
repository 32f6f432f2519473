//! [`Error`]: what can go wrong opening a member's store.
//!
//! Refused commands are not errors of this kind: they come back as
//! [`CommandError`](crate::CommandError) in the command's response.

use std::path::PathBuf;

/// The crate's error.
///
/// ```no_run
/// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
/// let (log, state_machine) = match consensus::store::open("/var/lib/meridian/raft").await {
///     Ok(stores) => stores,
///     Err(consensus::Error::CreateDir { path, source }) => {
///         return Err(format!("check the data_dir setting: {}: {source}", path.display()).into());
///     }
///     Err(e) => return Err(e.into()),
/// };
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or created, or the snapshot in it
    /// could not be read. The source says which.
    #[error("cannot open raft database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The blocking task doing the work panicked or was cancelled.
    #[error("storage task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// Why [`ConsensusNode::start`](crate::ConsensusNode::start) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] Error),
    #[error("invalid raft timings: {0}")]
    Timings(String),
    #[error("this member ({0}) is not among the initial members")]
    NotAnInitialMember(crate::MemberId),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("raft failed to start: {0}")]
    Raft(String),
    /// The TLS files could not be read or do not fit together, or the
    /// `raft_addr` scheme does not match the TLS setting.
    #[error("raft tls: {0}")]
    Tls(String),
}

/// Why [`ConsensusNode::propose`](crate::ConsensusNode::propose) gave no
/// [`Applied`](crate::Applied).
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The command was committed and refused by the state machine: the
    /// topology is unchanged. Not retryable as is.
    #[error("command refused")]
    Rejected(#[from] crate::CommandError),
    /// No leader was known within the forwarding timeout (an election is
    /// under way, or this node is cut off from the quorum). Nothing was
    /// proposed; retryable.
    #[error("no raft leader known")]
    NoLeader,
    /// The command was sent to the leader but no answer came back: it may
    /// or may not have been committed. Do not retry blindly; read the
    /// topology (or the audit log) first.
    #[error("outcome of the proposal is unknown")]
    OutcomeUnknown(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// This node is shutting down (or raft stopped on a fatal error).
    #[error("consensus node is shutting down")]
    ShuttingDown,
}

impl ProposeError {
    /// Whether proposing the same command again is safe and may succeed.
    pub fn could_retry(&self) -> bool {
        matches!(self, ProposeError::NoLeader)
    }
}

/// Why a linearizable read or a membership change failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No leader was known within the forwarding timeout; retryable.
    #[error("no raft leader known")]
    NoLeader,
    /// Membership changes are made on the leader; this node is not it.
    #[error("not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<crate::Member> },
    /// The leader could not be asked, or did not answer in time.
    #[error("cannot reach the raft leader")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Raft refused the request (for a membership change: another change
    /// is in progress, a learner is not known, ...).
    #[error("raft refused the request: {0}")]
    Refused(String),
    /// The request was made but did not finish in time (for
    /// [`compact_log`](crate::ConsensusNode::compact_log): the snapshot was
    /// not built, or the log not purged, within the given time).
    #[error("{what} did not happen within {within:?}")]
    Timeout { what: &'static str, within: std::time::Duration },
    #[error("consensus node is shutting down")]
    ShuttingDown,
}
