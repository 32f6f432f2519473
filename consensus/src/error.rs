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
