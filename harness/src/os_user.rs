//! The OS account PostgreSQL processes run as.
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root. When we are root
//! (CI containers usually are) every PostgreSQL tool runs as the `postgres`
//! account instead, and every directory it writes is handed over to that
//! account first. When we are not root, the tools simply run as us and no
//! ownership changes are needed.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;

use nix::unistd::{Gid, Uid, User};
use tokio::process::Command;

use crate::error::{Error, IoContext, Result};

/// The account that owns PostgreSQL data directories and processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OsUser {
    name: String,
    uid: Uid,
    gid: Gid,
    /// Whether commands must switch to this account, i.e. we run as root.
    switch: bool,
}

/// Environment variables that would silently redirect a PostgreSQL tool to a
/// different server or data directory than the one we pass explicitly.
const SCRUBBED_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
];

impl OsUser {
    /// The `postgres` account when we are root, otherwise ourselves.
    pub(crate) fn for_postgres() -> Result<Self> {
        let euid = Uid::effective();
        if euid.is_root() {
            let name = "postgres";
            let user = User::from_name(name).ok().flatten().ok_or_else(|| Error::UserNotFound { name: name.into() })?;
            Ok(Self { name: user.name, uid: user.uid, gid: user.gid, switch: true })
        } else {
            let name = User::from_uid(euid).ok().flatten().map_or_else(|| euid.to_string(), |u| u.name);
            Ok(Self { name, uid: euid, gid: Gid::effective(), switch: false })
        }
    }

    /// The account's uid, used to key caches shared across processes.
    pub(crate) fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// A command that runs `program` as this account, with a scrubbed
    /// environment, no stdin, and a working directory the account can enter
    /// (PostgreSQL warns, and some tools fail, when the inherited one, such
    /// as `/root`, is unreadable).
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        for var in SCRUBBED_ENV {
            command.env_remove(var);
        }
        command.env("LC_ALL", "C").current_dir("/").stdin(Stdio::null()).kill_on_drop(true);
        if self.switch {
            command.uid(self.uid.as_raw()).gid(self.gid.as_raw());
            if let Some(home) = User::from_uid(self.uid).ok().flatten().map(|u| u.dir) {
                command.env("HOME", home);
            }
        }
        command
    }

    /// Creates `dir` (and missing parents) and hands it to this account with
    /// mode 0700, as PostgreSQL requires for data directories.
    pub(crate) fn create_private_dir(&self, dir: &Path) -> Result<()> {
        self.create_dir(dir, 0o700)
    }

    /// Creates `dir` (and missing parents; those keep their owner) and hands
    /// it to this account with `mode`.
    pub(crate) fn create_dir(&self, dir: &Path, mode: u32) -> Result<()> {
        std::fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .io_context(|| format!("chmod {mode:o} {}", dir.display()))?;
        self.chown(dir)
    }

    /// Gives `path` to this account; a no-op when we already are it.
    pub(crate) fn chown(&self, path: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).map_err(|errno| Error::Io {
            action: format!("chown {} to {}", path.display(), self.name),
            source: errno.into(),
        })
    }

    /// Checks that this account can search every directory from `/` down to
    /// `dir`, so a bad choice of base directory fails with a clear message
    /// instead of an `initdb` permission error.
    pub(crate) fn check_reachable(&self, dir: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        for ancestor in dir.ancestors() {
            let meta =
                std::fs::metadata(ancestor).io_context(|| format!("reading metadata of {}", ancestor.display()))?;
            let mode = meta.mode();
            let searchable = if meta.uid() == self.uid.as_raw() {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !searchable {
                return Err(Error::NotAccessible {
                    path: ancestor.to_path_buf(),
                    user: self.name.clone(),
                    reason: format!("directory mode {:o} does not let it search", mode & 0o7777),
                });
            }
        }
        Ok(())
    }
}
