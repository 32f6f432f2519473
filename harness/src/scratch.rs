//! Where throwaway clusters and the `initdb` template cache live.
//!
//! Test clusters are written heavily and thrown away, so durability buys
//! nothing and disk I/O is pure cost: on a CI machine busy compiling, copying
//! a 40 MB data directory takes seconds on disk and tens of milliseconds on
//! tmpfs. We therefore prefer `/dev/shm` (memory-backed on Linux) when it is
//! a writable directory, and fall back to the usual temporary directory.
//! `$MERIDIAN_PG_TMPDIR` overrides both. Persistent clusters (a
//! [`ClusterSpec::base_dir`](crate::ClusterSpec::base_dir)) are not affected.

use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

/// Environment variable naming the directory for throwaway clusters and
/// the template cache.
pub const TMPDIR_ENV: &str = "MERIDIAN_PG_TMPDIR";

/// The memory-backed directory we prefer.
const SHM: &str = "/dev/shm";

/// The directory under which throwaway clusters and templates are created.
pub(crate) fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os(TMPDIR_ENV) {
        return PathBuf::from(dir);
    }
    let shm = Path::new(SHM);
    let writable = shm.is_dir() && nix::unistd::access(shm, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    if writable { shm.to_path_buf() } else { std::env::temp_dir() }
}
