//! Finding the PostgreSQL server binaries.
//!
//! Search order, first match wins:
//!
//! 1. `$MERIDIAN_PG_BINDIR` — an explicit choice; if it lacks a tool we fail
//!    rather than quietly use some other installation.
//! 2. `pg_config --bindir` — on Debian `pg_config` may belong to a client-only
//!    package whose version has no server installed, so a directory without
//!    the server tools falls through to the next step.
//! 3. The highest `/usr/lib/postgresql/<major>/bin`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Environment variable that pins the PostgreSQL binary directory.
pub const BINDIR_ENV: &str = "MERIDIAN_PG_BINDIR";

/// Tools every cluster needs; checked up front so a missing package fails
/// at the start of a test, not halfway through building a replica.
const REQUIRED: &[&str] = &["initdb", "pg_ctl", "postgres", "pg_basebackup"];

/// A directory holding a usable set of PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bindir: PathBuf,
    /// The version `postgres --version` reports, such as `15.18`.
    version: String,
}

impl PgBinaries {
    /// Finds the binaries (see the module docs for the search order).
    ///
    /// Runs `pg_config` and `postgres --version`, two short blocking calls.
    pub fn find() -> Result<Self> {
        let mut tried = Vec::new();
        if let Some(dir) = std::env::var_os(BINDIR_ENV) {
            let dir = PathBuf::from(dir);
            return Self::at(&dir).map_err(|reason| Error::BinariesNotFound {
                tried: format!("{BINDIR_ENV}={}: {reason}", dir.display()),
            });
        }
        match pg_config_bindir() {
            Ok(dir) => match Self::at(&dir) {
                Ok(found) => return Ok(found),
                Err(reason) => tried.push(format!("pg_config --bindir {}: {reason}", dir.display())),
            },
            Err(reason) => tried.push(format!("pg_config: {reason}")),
        }
        let mut debian = debian_bindirs();
        if debian.is_empty() {
            tried.push("/usr/lib/postgresql/*/bin: none".into());
        }
        while let Some((_, dir)) = debian.pop() {
            match Self::at(&dir) {
                Ok(found) => return Ok(found),
                Err(reason) => tried.push(format!("{}: {reason}", dir.display())),
            }
        }
        Err(Error::BinariesNotFound { tried: tried.join("; ") })
    }

    /// Uses the binaries in `bindir`, checking that every required tool is
    /// there and that `postgres` runs.
    pub fn from_dir(bindir: impl Into<PathBuf>) -> Result<Self> {
        let bindir = bindir.into();
        Self::at(&bindir).map_err(|reason| Error::BinariesNotFound { tried: format!("{}: {reason}", bindir.display()) })
    }

    fn at(bindir: &Path) -> Result<Self, String> {
        let missing: Vec<&str> = REQUIRED.iter().copied().filter(|tool| !bindir.join(tool).is_file()).collect();
        if !missing.is_empty() {
            return Err(format!("missing {}", missing.join(", ")));
        }
        let output = Command::new(bindir.join("postgres"))
            .arg("--version")
            .output()
            .map_err(|e| format!("running postgres --version: {e}"))?;
        if !output.status.success() {
            return Err(format!("postgres --version exited with {}", output.status));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let version = parse_version(&text).ok_or_else(|| format!("unexpected postgres --version output {text:?}"))?;
        Ok(Self { bindir: bindir.to_path_buf(), version })
    }

    /// The directory holding the binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The server version, such as `15.18`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The major version, such as 15.
    pub fn major(&self) -> u32 {
        major_of(&self.version).unwrap_or(0)
    }

    /// Full path of one tool in [`bindir`](Self::bindir).
    pub(crate) fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// Asks `pg_config` on `PATH` for its binary directory.
fn pg_config_bindir() -> Result<PathBuf, String> {
    let output = Command::new("pg_config").arg("--bindir").output().map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("exited with {}", output.status));
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if dir.is_empty() {
        return Err("printed nothing".into());
    }
    Ok(PathBuf::from(dir))
}

/// `/usr/lib/postgresql/<major>/bin` directories, lowest major first.
fn debian_bindirs() -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut dirs: Vec<(u32, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Extracts `15.18` from `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
fn parse_version(text: &str) -> Option<String> {
    let rest = text.split_once(")")?.1.trim_start();
    let version: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    major_of(&version).map(|_| version)
}

fn major_of(version: &str) -> Option<u32> {
    version.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n").as_deref(), Some("15.18"));
        assert_eq!(parse_version("postgres (PostgreSQL) 17beta1\n").as_deref(), Some("17beta1"));
        assert_eq!(parse_version("nonsense"), None);
        assert_eq!(major_of("17beta1"), Some(17));
    }

    #[test]
    fn finds_installed_binaries() {
        let found = PgBinaries::find().expect("PostgreSQL must be installed to run these tests");
        assert!(found.major() >= 12, "{found:?}");
        assert!(found.bindir().join("initdb").is_file());
    }
}
