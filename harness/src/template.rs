//! A cache of freshly initialised data directories.
//!
//! `initdb` takes a second or more; copying its result takes a fraction of
//! that. The first cluster for a given (binaries, OS user, superuser name)
//! runs `initdb` into a template directory, and every cluster after that,
//! in this process or a later one, copies it with `cp -a`.
//!
//! Only the superuser's *name* is baked in by `initdb`. Its password, the
//! authentication rules and all server settings are applied to each copy
//! (`pg_hba.conf`, `meridian.conf`, `ALTER ROLE ... PASSWORD`), so they are
//! not part of the cache key.
//!
//! ```text
//!   <scratch>/meridian-harness-<euid>/templates/     (scratch: see crate::scratch)
//!       .build-<pid>-<n>/data      initdb runs here (removed if abandoned) ...
//!       pg15.18-u101-<hash>-postgres/data
//!                                  ... then the build dir is renamed into place
//! ```
//!
//! The rename is atomic, so a template that exists is complete, and two
//! processes racing to build the same template both succeed (the loser
//! discards its copy).

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::binaries::PgBinaries;
use crate::command;
use crate::conf;
use crate::error::{Error, IoContext, Result};
use crate::os_user::OsUser;
use crate::scratch;

/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);

/// How long copying a template may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(60);

/// Templates already located or built by this process, by cache key; the
/// cell makes parallel tests wait for one build instead of racing.
static TEMPLATES: LazyLock<Mutex<HashMap<String, Arc<OnceCell<PathBuf>>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Distinguishes build directories of concurrent builds in one process.
static BUILD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Returns the data directory of a template for `superuser`, building it on
/// first use.
pub(crate) async fn data_dir_for(binaries: &PgBinaries, user: &OsUser, superuser: &str) -> Result<PathBuf> {
    let key = cache_key(binaries, user, superuser);
    let cell = TEMPLATES.lock().entry(key.clone()).or_default().clone();
    cell.get_or_try_init(|| locate_or_build(binaries, user, superuser, key)).await.cloned()
}

/// Copies the template at `template` to `dest`, which must not exist yet
/// and whose parent must belong to `user`.
pub(crate) async fn copy(template: &Path, dest: &Path, user: &OsUser) -> Result<()> {
    let mut cp = user.command("cp");
    cp.arg("-a").arg(template).arg(dest);
    command::run(cp, COPY_TIMEOUT).await?;
    Ok(())
}

async fn locate_or_build(binaries: &PgBinaries, user: &OsUser, superuser: &str, key: String) -> Result<PathBuf> {
    let root = cache_root(user)?;
    let done = root.join(&key);
    let data = done.join("data");
    if data.join("PG_VERSION").is_file() {
        return Ok(data);
    }
    if done.exists() {
        // Left behind by something other than our atomic rename; do not
        // trust it.
        tracing::warn!(path = %done.display(), "discarding incomplete template");
        std::fs::remove_dir_all(&done).io_context(|| format!("removing {}", done.display()))?;
    }

    remove_abandoned_builds(&root);
    let build =
        root.join(format!("{BUILD_PREFIX}{}-{}", std::process::id(), BUILD_SEQ.fetch_add(1, Ordering::Relaxed)));
    // Removes the build directory on every way out, including this future
    // being dropped half way; after a successful rename there is nothing
    // left to remove.
    let _cleanup = RemoveOnDrop(build.clone());
    let started = tokio::time::Instant::now();
    build_into(binaries, user, superuser, &build).await?;
    match std::fs::rename(&build, &done) {
        Ok(()) => {
            tracing::info!(path = %data.display(), elapsed = ?started.elapsed(), "built initdb template");
        }
        // Another process finished first; use its template.
        Err(e) if data.join("PG_VERSION").is_file() => {
            tracing::debug!(error = %e, "another process built the template first");
        }
        Err(e) => {
            return Err(e).io_context(|| format!("renaming template to {}", done.display()));
        }
    }
    Ok(data)
}

/// Names of build directories start with this, followed by `<pid>-<n>`.
const BUILD_PREFIX: &str = ".build-";

/// Removes a directory when dropped, if it still exists.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.0.display(), error = %e, "removing a template build failed");
            }
        }
    }
}

/// Removes build directories left by processes that died mid-build.
fn remove_abandoned_builds(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BUILD_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(path = %entry.path().display(), "removing an abandoned template build");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

async fn build_into(binaries: &PgBinaries, user: &OsUser, superuser: &str, build: &Path) -> Result<()> {
    user.create_private_dir(build)?;
    let data = build.join("data");
    let mut initdb = user.command(binaries.tool("initdb"));
    initdb.arg("--pgdata").arg(&data).args(["--username", superuser]).args([
        "--auth",
        "trust",
        "--encoding",
        "UTF8",
        "--locale",
        "C",
        "--no-sync",
    ]);
    command::run(initdb, INITDB_TIMEOUT).await?;

    let conf_path = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf_path).io_context(|| format!("reading {}", conf_path.display()))?;
    text.push_str(conf::INCLUDE_LINE);
    std::fs::write(&conf_path, text).io_context(|| format!("writing {}", conf_path.display()))?;
    user.chown(&conf_path)
}

/// `<scratch>/meridian-harness-<euid>/templates`, created on first use and
/// required to belong to us so nobody else can plant a template.
fn cache_root(user: &OsUser) -> Result<PathBuf> {
    let euid = nix::unistd::Uid::effective();
    let base = scratch::root().join(format!("meridian-harness-{euid}"));
    let root = base.join("templates");
    std::fs::create_dir_all(&root).io_context(|| format!("creating {}", root.display()))?;
    for dir in [&base, &root] {
        let meta = std::fs::metadata(dir).io_context(|| format!("reading metadata of {}", dir.display()))?;
        if meta.uid() != euid.as_raw() {
            return Err(Error::NotAccessible {
                path: dir.clone(),
                user: euid.to_string(),
                reason: format!("it belongs to uid {}, not to us", meta.uid()),
            });
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .io_context(|| format!("chmod 0755 {}", dir.display()))?;
    }
    user.check_reachable(&root)?;
    Ok(root)
}

/// A file-name-safe key naming the version, the binaries' location, the
/// owning account and the superuser.
fn cache_key(binaries: &PgBinaries, user: &OsUser, superuser: &str) -> String {
    let bindir = binaries.bindir().as_os_str().as_encoded_bytes();
    let safe_name: String =
        superuser.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("pg{}-u{}-{:016x}-{}", binaries.version(), user.uid(), fnv1a(&[bindir, superuser.as_bytes()]), safe_name)
}

/// FNV-1a: stable across Rust versions, unlike `DefaultHasher`, which
/// matters because the key names directories shared between builds.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0u8)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(&[b"a", b"b"]), fnv1a(&[b"ab"]));
    }
}
