//! Signalling a running PostgreSQL server: the postmaster and its children.
//!
//! We signal processes directly instead of calling `pg_ctl stop`: it is what
//! `pg_ctl` does anyway (SIGINT for a fast shutdown, SIGQUIT for an
//! immediate one), it needs no binaries (so [`stop_server`] works from a
//! process that did not start the server), and it can run inside `Drop`
//! without spawning anything.
//!
//! Every postmaster child calls `setsid()`, so there is no process group to
//! signal; the tree is found through `/proc/<pid>/stat` parent links. The
//! postmaster is reparented to init once `pg_ctl` exits, and init may be a
//! process that never reaps, so a zombie counts as gone.
//!
//! ```text
//!   pause:   SIGSTOP postmaster ─▶ SIGSTOP children   (nothing new is forked)
//!   resume:  SIGCONT children   ─▶ SIGCONT postmaster
//!   kill:    SIGSTOP postmaster ─▶ list children ─▶ SIGKILL all ─▶ wait gone
//!   stop:    SIGINT|SIGQUIT postmaster ─▶ SIGCONT all ─▶ wait ─▶ (kill)
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::error::{Error, IoContext, Result};

/// How often we look whether a process has exited.
const POLL: Duration = Duration::from_millis(10);

/// How long a SIGKILLed tree may take to disappear before we give up.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// How a server is asked to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownMode {
    /// Roll back open transactions, checkpoint, exit (`pg_ctl -m fast`).
    Fast,
    /// Exit at once without a checkpoint; recovery runs on the next start
    /// (`pg_ctl -m immediate`).
    Immediate,
}

impl ShutdownMode {
    fn signal(self) -> Signal {
        match self {
            ShutdownMode::Fast => Signal::SIGINT,
            ShutdownMode::Immediate => Signal::SIGQUIT,
        }
    }
}

/// A postmaster process, identified by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Postmaster {
    pid: Pid,
}

impl Postmaster {
    /// Wraps `pid`; refuses values that `kill(2)` would treat as a process
    /// group or as init.
    pub(crate) fn new(pid: u32) -> Option<Self> {
        let raw = i32::try_from(pid).ok().filter(|raw| *raw > 1)?;
        Some(Self { pid: Pid::from_raw(raw) })
    }

    /// Reads the pid from `<data_dir>/postmaster.pid`, if the file exists.
    pub(crate) fn from_data_dir(data_dir: &Path) -> Result<Option<Self>> {
        let path = data_dir.join("postmaster.pid");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).io_context(|| format!("reading {}", path.display())),
        };
        Ok(text.lines().next().and_then(|line| line.trim().parse::<u32>().ok()).and_then(Self::new))
    }

    /// The live postmaster serving `data_dir`: the pid in its
    /// `postmaster.pid`, if that process is alive and its command line names
    /// `data_dir` (a stale pid file may name a pid reused by another server).
    pub(crate) fn running_in(data_dir: &Path) -> Option<Self> {
        let postmaster = Self::from_data_dir(data_dir).ok().flatten()?;
        (postmaster.is_alive() && cmdline_mentions(postmaster.pid, data_dir)).then_some(postmaster)
    }

    /// Removes `<data_dir>/postmaster.pid` if the process it names is gone
    /// or a zombie. PostgreSQL removes stale lock files itself, but it
    /// probes with `kill(pid, 0)`, which succeeds on a zombie that a
    /// non-reaping init has not collected yet, and then refuses to start.
    pub(crate) fn clear_stale_pidfile(data_dir: &Path) -> Result<()> {
        let Some(postmaster) = Self::from_data_dir(data_dir)? else {
            return Ok(());
        };
        if postmaster.is_alive() {
            return Ok(());
        }
        let path = data_dir.join("postmaster.pid");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).io_context(|| format!("removing stale {}", path.display())),
        }
    }

    pub(crate) fn pid(self) -> u32 {
        self.pid.as_raw().unsigned_abs()
    }

    /// Whether the process still runs PostgreSQL (not exited, not a zombie,
    /// and not a different program that reused the pid).
    pub(crate) fn is_alive(self) -> bool {
        is_postgres_alive(self.pid)
    }

    /// Stops the server and waits until the postmaster is gone. Falls back
    /// to SIGKILL for the whole tree if it is still there after `timeout`.
    pub(crate) async fn shutdown(self, mode: ShutdownMode, timeout: Duration) -> Result<()> {
        self.request_shutdown(mode)?;
        if wait_gone(&[self.pid], timeout).await {
            return Ok(());
        }
        tracing::warn!(pid = self.pid(), ?mode, ?timeout, "postmaster ignored shutdown, killing it");
        self.kill().await
    }

    /// Sends the shutdown signal, then SIGCONT so a paused server can act on
    /// it. Returns without waiting.
    pub(crate) fn request_shutdown(self, mode: ShutdownMode) -> Result<()> {
        send(self.pid, mode.signal())?;
        for pid in self.tree() {
            send(pid, Signal::SIGCONT)?;
        }
        Ok(())
    }

    /// SIGKILLs the postmaster and every descendant, as a machine crash
    /// would, and waits until they are gone so the data directory can be
    /// started again at once (PostgreSQL refuses to start while old children
    /// still hold its shared memory).
    pub(crate) async fn kill(self) -> Result<()> {
        let tree = self.kill_tree()?;
        if wait_gone(&tree, KILL_GRACE).await {
            Ok(())
        } else {
            Err(Error::Timeout {
                server: format!("postmaster {}", self.pid()),
                what: "SIGKILLed processes to exit".into(),
                timeout: KILL_GRACE,
            })
        }
    }

    /// [`kill`](Self::kill) for `Drop`: blocks the thread, never fails.
    pub(crate) fn kill_blocking(self) {
        match self.kill_tree() {
            Ok(tree) => {
                if !wait_gone_blocking(&tree, KILL_GRACE) {
                    tracing::warn!(pid = self.pid(), "killed postgres processes did not exit");
                }
            }
            Err(e) => tracing::warn!(pid = self.pid(), error = %e, "killing postgres failed"),
        }
    }

    /// Freezes the postmaster first so it cannot fork a child we would miss,
    /// then kills everything. Returns the pids killed.
    fn kill_tree(self) -> Result<Vec<Pid>> {
        send(self.pid, Signal::SIGSTOP)?;
        let tree = self.tree();
        for pid in &tree {
            send(*pid, Signal::SIGKILL)?;
        }
        Ok(tree)
    }

    /// Stops every process of the server (SIGSTOP), simulating a hung
    /// machine: connections stay open but nothing answers.
    pub(crate) fn pause(self) -> Result<()> {
        send(self.pid, Signal::SIGSTOP)?;
        for pid in self.tree().into_iter().skip(1) {
            send(pid, Signal::SIGSTOP)?;
        }
        Ok(())
    }

    /// Undoes [`pause`](Self::pause).
    pub(crate) fn resume(self) -> Result<()> {
        for pid in self.tree().into_iter().rev() {
            send(pid, Signal::SIGCONT)?;
        }
        Ok(())
    }

    /// The postmaster followed by all its descendants.
    fn tree(self) -> Vec<Pid> {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.filter_map(|e| e.ok()) {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some(stat) = ProcStat::read(Pid::from_raw(pid)) {
                    children.entry(stat.ppid).or_default().push(pid);
                }
            }
        }
        let mut tree = vec![self.pid];
        let mut next = 0;
        while next < tree.len() {
            if let Some(kids) = children.get(&tree[next].as_raw()) {
                tree.extend(kids.iter().map(|k| Pid::from_raw(*k)));
            }
            next += 1;
        }
        tree
    }
}

/// Stops a server that another process started, such as one recorded by
/// `meridian demo` before it exited.
///
/// Checks that `pid` really is the postmaster of `data_dir` (its
/// `postmaster.pid` or command line says so) before signalling it, so a
/// stale record cannot kill an unrelated process that reused the pid.
/// Asks for a fast shutdown, escalating to SIGKILL after 30 s. A server that
/// is already gone is not an error.
pub async fn stop_server(data_dir: &Path, pid: u32) -> Result<()> {
    let not_ours = || Error::NotOurServer { pid, data_dir: data_dir.to_path_buf() };
    let postmaster = Postmaster::new(pid).ok_or_else(not_ours)?;
    if !postmaster.is_alive() {
        return Ok(());
    }
    let by_pidfile = Postmaster::from_data_dir(data_dir).ok().flatten().is_some_and(|recorded| recorded == postmaster);
    if !by_pidfile && !cmdline_mentions(postmaster.pid, data_dir) {
        return Err(not_ours());
    }
    postmaster.shutdown(ShutdownMode::Fast, Duration::from_secs(30)).await
}

/// Whether `/proc/<pid>/cmdline` names `data_dir` (pg_ctl starts the
/// postmaster as `postgres -D <data_dir>`).
fn cmdline_mentions(pid: Pid, data_dir: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    let canonical = std::fs::canonicalize(data_dir).ok();
    raw.split(|b| *b == 0)
        .any(|arg| arg == wanted || canonical.as_ref().is_some_and(|c| arg == c.as_os_str().as_encoded_bytes()))
}

/// Sends `sig`; a process that is already gone is fine.
fn send(pid: Pid, sig: Signal) -> Result<()> {
    match signal::kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(Error::Signal { pid: pid.as_raw().unsigned_abs(), signal: sig.as_str().to_owned(), source }),
    }
}

/// Makes this process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`). `pg_ctl` exits after starting a postmaster,
/// which would leave the postmaster to init; if init does not reap (common
/// in containers), every stopped server lingers as a zombie. As subreaper we
/// inherit the postmaster (and, after a SIGKILL, its children) and reap them
/// in [`wait_gone`]. Orphans we never wait for are collected by init once
/// this process exits.
pub(crate) fn adopt_orphans() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(target_os = "linux")]
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become child subreaper; stopped servers may linger as zombies");
        }
    });
}

/// Collects every exited `postgres` process whose parent we are: servers
/// this process adopted (see [`adopt_orphans`]) and someone else stopped or
/// killed, e.g. a Meridian node's drill or `REJOIN NODE`. Until it is
/// collected, a killed postmaster is a zombie whose pid still "exists", and
/// PostgreSQL refuses to start in its data directory ("lock file
/// postmaster.pid already exists"). Leaves every other child alone.
pub fn reap_exited_servers() {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let pid = Pid::from_raw(pid);
        if ProcStat::read(pid).is_some_and(|stat| {
            stat.ppid == me && stat.state == 'Z' && matches!(stat.comm.as_str(), "postgres" | "postmaster")
        }) {
            reap(pid);
        }
    }
}

/// Collects `pid` if it is our exited child; otherwise does nothing.
fn reap(pid: Pid) {
    let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
}

/// Whether `pid` is gone, reaping it if it is our exited child.
fn gone(pid: Pid) -> bool {
    reap(pid);
    !is_postgres_alive(pid)
}

/// Waits until every process in `pids` is gone, in order. Callers list
/// parents before children: a child of a SIGKILLed postmaster is only
/// reparented to us (and so only reapable) once the postmaster has exited.
async fn wait_gone(pids: &[Pid], timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    for pid in pids {
        while !gone(*pid) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    true
}

/// [`wait_gone`] for `Drop`, which cannot await.
fn wait_gone_blocking(pids: &[Pid], timeout: Duration) -> bool {
    let deadline = std::time::SystemTime::now() + timeout;
    for pid in pids {
        while !gone(*pid) {
            if std::time::SystemTime::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
    true
}

/// Stops, for `Drop`, whatever runs in `data_dirs` (listed in the order to
/// stop them): running servers get an immediate shutdown, escalating to
/// SIGKILL after `timeout`; a server caught starting up, before it wrote
/// `postmaster.pid` (possible when the future starting it was dropped), is
/// SIGKILLed at once. Never fails; problems are logged.
pub(crate) fn stop_all_in_blocking(data_dirs: &[&Path], timeout: Duration) {
    let mut postmasters = Vec::new();
    let mut starting = Vec::new();
    for data_dir in data_dirs {
        match Postmaster::running_in(data_dir) {
            Some(postmaster) => postmasters.push(postmaster),
            None => starting.extend(starting_in(data_dir)),
        }
    }
    shutdown_all_blocking(&postmasters, timeout);
    for pid in &starting {
        tracing::warn!(%pid, "killing a server that was still starting");
        if let Err(e) = send(*pid, Signal::SIGKILL) {
            tracing::warn!(%pid, error = %e, "killing a starting server failed");
        }
    }
    if !wait_gone_blocking(&starting, KILL_GRACE) {
        tracing::warn!(?starting, "killed starting servers did not exit");
    }
    for data_dir in data_dirs {
        release_stale_shmem(data_dir);
    }
}

/// Processes about to become the postmaster of `data_dir` that have not
/// written `postmaster.pid` yet: `pg_ctl`'s forked child, the shell it
/// execs, or an early postmaster. All name `data_dir` on their command
/// line. Other programs that mention it (an editor, `ls`) are left alone.
fn starting_in(data_dir: &Path) -> Vec<Pid> {
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|pid| *pid != Pid::this())
        .filter(|pid| {
            ProcStat::read(*pid).is_some_and(|stat| {
                stat.state != 'Z'
                    && matches!(stat.comm.as_str(), "postgres" | "postmaster" | "pg_ctl" | "sh" | "dash" | "bash")
            })
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(wanted.len()).any(|w| w == wanted))
        })
        .collect()
}

/// Frees the System V shared-memory segment a SIGKILLed server left
/// behind, for `Drop` once nothing runs in `data_dir` any more.
///
/// PostgreSQL keeps a tiny SysV segment as an interlock and removes it on
/// any orderly exit, or on the next start in the same data directory after a
/// crash. A killed server whose directory is then deleted never gets that
/// next start, so its segment would stay until reboot and, over many test
/// runs, use up the system's segment limit (`kernel.shmmni`). The segment
/// is removed only if `/proc/sysvipc/shm` shows the key and id recorded in
/// `postmaster.pid` with nobody attached.
pub(crate) fn release_stale_shmem(data_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let owner_alive = lines
        .first()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .and_then(Postmaster::new)
        .is_some_and(Postmaster::is_alive);
    if owner_alive {
        return;
    }
    // Line 7: "<key> <shmid>".
    let Some((key, id)) = lines.get(6).and_then(|line| {
        let mut fields = line.split_whitespace().map(|f| f.parse::<i64>().ok());
        Some((fields.next()??, fields.next()??))
    }) else {
        return;
    };
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return;
    };
    // Columns: key shmid perms size cpid lpid nattch ...
    let unattached = table.lines().skip(1).any(|row| {
        let fields: Vec<i64> = row.split_whitespace().take(7).filter_map(|f| f.parse().ok()).collect();
        fields.len() == 7 && fields[0] == key && fields[1] == id && fields[6] == 0
    });
    if !unattached {
        return;
    }
    match std::process::Command::new("ipcrm").args(["-m", &id.to_string()]).stdin(std::process::Stdio::null()).output()
    {
        Ok(output) if output.status.success() => {
            tracing::debug!(data_dir = %data_dir.display(), shmid = id, "released a killed server's shared memory");
        }
        Ok(output) => tracing::debug!(
            shmid = id,
            stderr = %String::from_utf8_lossy(&output.stderr),
            "ipcrm failed"
        ),
        Err(e) => tracing::debug!(shmid = id, error = %e, "cannot run ipcrm"),
    }
}

/// Blocking shutdown of several servers at once, for `Drop`: signal them
/// all, wait up to `timeout` together, then SIGKILL what is left. Never
/// fails; problems are logged.
fn shutdown_all_blocking(postmasters: &[Postmaster], timeout: Duration) {
    for postmaster in postmasters {
        if let Err(e) = postmaster.request_shutdown(ShutdownMode::Immediate) {
            tracing::warn!(pid = postmaster.pid(), error = %e, "signalling postgres failed");
        }
    }
    let pids: Vec<Pid> = postmasters.iter().map(|p| p.pid).collect();
    if wait_gone_blocking(&pids, timeout) {
        return;
    }
    for postmaster in postmasters.iter().filter(|p| p.is_alive()) {
        tracing::warn!(pid = postmaster.pid(), "postgres ignored SIGQUIT, killing it");
        postmaster.kill_blocking();
    }
}

/// The fields of `/proc/<pid>/stat` we need.
struct ProcStat {
    comm: String,
    state: char,
    ppid: i32,
}

impl ProcStat {
    fn read(pid: Pid) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may contain spaces and parens,
        // so split at the last ')'.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_owned();
        let mut rest = text.get(close + 1..)?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some(Self { comm, state, ppid })
    }
}

fn is_postgres_alive(pid: Pid) -> bool {
    ProcStat::read(pid).is_some_and(|stat| {
        !matches!(stat.state, 'Z' | 'X' | 'x') && matches!(stat.comm.as_str(), "postgres" | "postmaster")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_dangerous_pids() {
        assert!(Postmaster::new(0).is_none());
        assert!(Postmaster::new(1).is_none());
        assert!(Postmaster::new(u32::MAX).is_none());
        assert!(Postmaster::new(1234).is_some());
    }

    #[test]
    fn our_own_process_is_not_postgres() {
        let me = Postmaster::new(std::process::id()).unwrap();
        assert!(!me.is_alive());
        let stat = ProcStat::read(Pid::this()).unwrap();
        assert_ne!(stat.state, 'Z');
    }

    #[tokio::test]
    async fn stop_server_ignores_gone_processes_and_refuses_strangers() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that does not exist (pid_max is at most 2^22).
        stop_server(dir.path(), 4_194_305).await.unwrap();
        // pid 0 would signal our own process group.
        assert!(matches!(stop_server(dir.path(), 0).await, Err(Error::NotOurServer { .. })));
    }
}
