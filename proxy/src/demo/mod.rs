//! `meridian demo`: a local Meridian in front of real PostgreSQL servers,
//! with no set-up beyond an installed PostgreSQL. See docs/demo.md.
//!
//! ```text
//!   meridian demo [--dir DIR]            foreground; Ctrl-C or SIGTERM stops it
//!   meridian demo [--dir DIR] --detach   re-runs itself as
//!       meridian demo --dir DIR --foreground-child   (own session, log in DIR/demo.log)
//!     and returns once DIR/demo.json says "ready" and SELECT 1 works through every node
//!   meridian demo [--dir DIR] --drill failover|switchover|region
//!                                        run a drill against the demo in DIR (started
//!                                        detached first, and stopped after, if none runs)
//!   meridian demo stop --dir DIR         SIGTERM the demo process, make sure its
//!                                        Meridian nodes and PostgreSQL are down,
//!                                        mark demo.json "stopped"
//! ```
//!
//! Only one demo runs per directory: the demo process holds an exclusive
//! `flock` on `DIR/demo.lock` for its whole life, and every start checks it
//! (and the pid recorded in demo.json) first.
//!
//! What it runs (docs/demo.md): two shards, `s1` and `s2`, each a primary
//! and two streaming replicas spread over three simulated regions, and
//! three Meridian nodes, one per region, in one Raft group, each its own
//! process. Every node reaches every server (and every other node's Raft
//! endpoint) through a relay adding the latency between their regions.
//!
//! Modules: [`run`] is the demo process; [`layout`] says where everything
//! is and how far apart; [`cluster`] is the PostgreSQL side and [`sample`]
//! its data; [`network`] the switches and relays; [`node_config`] the
//! nodes' generated files; [`nodes`] their processes; [`state`] the
//! demo.json file; [`stop`] the stop command.

mod cluster;
mod drill;
mod layout;
mod network;
mod node_config;
mod nodes;
mod run;
mod sample;
pub mod state;
mod stop;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use state::{DemoState, Status};

/// The application role Meridian and PostgreSQL both know. A superuser, so
/// test suites can run through the demo.
pub const APP_USER: &str = "app";
/// Its password, the same for Meridian and PostgreSQL.
pub const APP_PASSWORD: &str = "app";
/// The database holding the sample data, owned by the app role.
pub const DATABASE: &str = "demo";
/// The first Meridian node's id (`us-east`); the others are `meridian-2`
/// (`eu-west`) and `meridian-3` (`ap-south`).
pub const NODE_ID: &str = "meridian-1";

/// The demo process's log when detached.
const LOG_FILE: &str = "demo.log";
/// Held (flock) by the running demo process.
const LOCK_FILE: &str = "demo.lock";
/// How long `--detach` waits for everything to accept connections.
const DETACH_TIMEOUT: Duration = Duration::from_secs(120);
/// Log lines shown when a detached start fails.
const LOG_TAIL_LINES: usize = 40;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    #[command(subcommand)]
    pub command: Option<DemoCommand>,
    /// The demo directory: PostgreSQL data, generated config, demo.json,
    /// logs. Default: a new /tmp/meridian-demo-XXXXXX. Kept after the demo
    /// stops; a later demo in the same directory replaces its contents.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Start in the background and return once every part accepts
    /// connections; stop it with `meridian demo stop --dir DIR`.
    #[arg(long)]
    pub detach: bool,
    /// Run a drill live against the demo and print its report: `failover`
    /// (kill -9 shard s1's primary), `switchover` (planned), `region`
    /// (cut off the region of s1's primary). Uses the demo running in
    /// `--dir`, or starts one for the drill and stops it afterwards.
    #[arg(long, value_enum, conflicts_with = "detach")]
    pub drill: Option<drill::DrillKind>,
    /// Internal: the background process `--detach` starts.
    #[arg(long, hide = true, conflicts_with = "detach", requires = "dir")]
    pub foreground_child: bool,
}

#[derive(clap::Subcommand)]
pub enum DemoCommand {
    /// Stop the demo running in DIR and every server it started; succeeds
    /// if it is already stopped.
    Stop {
        /// The demo's directory (where its demo.json is).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

pub fn main(args: DemoArgs) -> anyhow::Result<()> {
    match args.command {
        Some(DemoCommand::Stop { dir }) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(stop::stop(&dir))
        }
        None if args.foreground_child => {
            // Leave the parent's session and terminal, so its Ctrl-C and
            // hang-up do not reach us. (A fresh child is never a process
            // group leader, so this succeeds.)
            if let Err(e) = nix::unistd::setsid() {
                tracing::warn!(error = %e, "setsid failed; continuing in the parent's session");
            }
            let dir = args.dir.context("--foreground-child needs --dir")?;
            foreground(&dir, Some(dir.join(LOG_FILE)))
        }
        None if args.drill.is_some() => drill_demo(args.dir, args.drill.expect("checked")),
        None if args.detach => detach(args.dir).map(|_| ()),
        None => {
            let dir = match args.dir {
                Some(dir) => dir,
                None => fresh_dir()?,
            };
            foreground(&dir, None)
        }
    }
}

/// Runs the demo in this process until SIGINT or SIGTERM.
fn foreground(dir: &Path, log_file: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = prepare_dir(dir)?;
    let _lock = lock(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run::run(&dir, log_file))
}

/// `--drill`: against the demo running in `dir`, or one started for it.
fn drill_demo(dir: Option<PathBuf>, kind: drill::DrillKind) -> anyhow::Result<()> {
    let running = dir
        .as_deref()
        .and_then(|d| DemoState::read(d).ok().flatten())
        .filter(|s| s.status == Status::Ready && state::is_alive(s.pid));
    let (dir, started) = match running {
        Some(state) => (state.dir, false),
        None => (detach(dir)?, true),
    };
    let state = DemoState::read(&dir)?.context("demo.json is missing")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(drill::run(&state, kind));
    if started {
        eprintln!(
            "
Stopping the demo started for the drill..."
        );
        runtime.block_on(stop::stop(&dir))?;
    }
    result
}

/// Starts the demo as a background process and waits until it is ready;
/// returns its directory.
fn detach(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let started = tokio::time::Instant::now();
    let dir = match dir {
        Some(dir) => dir,
        None => fresh_dir()?,
    };
    let dir = prepare_dir(&dir)?;
    // Fail early and clearly; the child takes the lock for real.
    drop(lock(&dir)?);

    let log_path = dir.join(LOG_FILE);
    if log_path.exists() {
        let _ = std::fs::rename(&log_path, dir.join(format!("{LOG_FILE}.1")));
    }
    let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the meridian binary")?;
    let mut child = self_command()
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .arg("--foreground-child")
        // Plain log lines in demo.log, and no error backtraces in the tail
        // we show when startup fails (panics still get theirs).
        .env("NO_COLOR", "1")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} demo --foreground-child", exe.display()))?;
    eprintln!("Starting the Meridian demo in {} (pid {}, log {})...", dir.display(), child.id(), log_path.display());

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let state = runtime.block_on(wait_ready(&dir, &mut child, &log_path))?;
    print_ready(&state, true);
    eprintln!("(ready in {:.1} s)", started.elapsed().as_secs_f64());
    // The child runs on in its own session; it is not ours to wait for.
    drop(child);
    Ok(dir)
}

/// Waits for the child's demo.json to say "ready", then checks every node
/// ourselves. On failure, interruption or timeout the child is stopped and
/// the error carries the tail of its log.
async fn wait_ready(dir: &Path, child: &mut Child, log_path: &Path) -> anyhow::Result<DemoState> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let deadline = tokio::time::Instant::now() + DETACH_TIMEOUT;
    let pid = child.id();
    let problem = loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the demo process exited during startup ({status}); the end of {}:\n{}",
                log_path.display(),
                log_tail(log_path, LOG_TAIL_LINES)
            );
        }
        if let Ok(Some(state)) = DemoState::read(dir)
            && state.pid == pid
        {
            match state.status {
                Status::Ready => {
                    if state.meridian_nodes.is_empty() {
                        break anyhow::anyhow!("demo.json lists no Meridian node");
                    }
                    let checks = state.meridian_nodes.iter().map(|node| async move {
                        run::check_url(&node.client_url, Duration::from_secs(15))
                            .await
                            .with_context(|| format!("SELECT 1 through {} ({})", node.id, node.client_url))
                    });
                    match futures_util::future::try_join_all(checks).await {
                        Ok(_) => return Ok(state),
                        Err(e) => break e,
                    }
                }
                Status::Failed | Status::Stopping | Status::Stopped => {
                    // The child stops what it started and exits; wait for it.
                    let _ = wait_exit(child, Duration::from_secs(30)).await;
                    anyhow::bail!(
                        "the demo failed to start: {}\nthe end of {}:\n{}",
                        state.error.as_deref().unwrap_or("(no error recorded)"),
                        log_path.display(),
                        log_tail(log_path, LOG_TAIL_LINES)
                    );
                }
                Status::Starting | Status::Unknown => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break anyhow::anyhow!("the demo was not ready within {DETACH_TIMEOUT:?}");
        }
        // cancel safety: Signal::recv and sleep are cancel safe.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = int.recv() => break anyhow::anyhow!("interrupted (SIGINT)"),
            _ = term.recv() => break anyhow::anyhow!("interrupted (SIGTERM)"),
        }
    };
    eprintln!("Stopping the demo process (pid {pid}): {problem:#}");
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGTERM);
    }
    if !wait_exit(child, Duration::from_secs(30)).await {
        let _ = child.kill();
        let _ = child.wait();
    }
    anyhow::bail!("{problem:#}; the end of {}:\n{}", log_path.display(), log_tail(log_path, LOG_TAIL_LINES))
}

/// Waits up to `timeout` for the child to exit, reaping it.
async fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Prints how to connect, how to watch the routing, and how to stop.
fn print_ready(state: &DemoState, detached: bool) {
    use std::fmt::Write as _;
    let dir = state.dir.display();
    let mut out = String::new();
    let _ = writeln!(out, "\nMeridian demo is running in {dir} (pid {}).\n", state.pid);
    let _ = writeln!(
        out,
        "Connect through Meridian (applications), database \"{}\"; any node, one Raft group:",
        state.database
    );
    let client_width = state.meridian_nodes.iter().map(|n| n.client_url.len()).max().unwrap_or(0) + 2;
    for node in &state.meridian_nodes {
        let quoted = format!("\"{}\"", node.client_url);
        let _ = writeln!(out, "  psql {quoted:<client_width$}  # {} ({}, pid {})", node.id, node.region, node.pid);
    }
    let _ = writeln!(
        out,
        "Admin console (user {} is an admin; SHOW HELP lists the commands), HTTP endpoints:",
        state.app_user
    );
    for node in &state.meridian_nodes {
        let admin = node.admin_url.clone().unwrap_or_else(|| admin_url(&node.client_url));
        let quoted = format!("\"{admin}\"");
        let http = node.http_url.as_deref().unwrap_or("-");
        let _ = writeln!(out, "  psql {quoted:<client_width$}  # {} admin; {http}/metrics", node.id);
    }

    let ids: Vec<&str> = state.meridian_nodes.iter().map(|n| n.id.as_str()).collect();
    let _ = writeln!(
        out,
        "\nPostgreSQL, straight to each server (bypassing Meridian and the simulated latency);\n\
         the last columns are the round trip each Meridian node sees through the relays:"
    );
    let urls: Vec<String> = state.postgres_servers.iter().map(|server| server_url(state, server)).collect();
    let width = urls.iter().map(String::len).max().unwrap_or(0) + 2;
    let name_width = state.postgres_servers.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let header: String = ids.iter().map(|id| format!("  {id:>10}")).collect();
    // "  psql " + URL + "  # " + name + "  " + role + "  " + region
    let indent = 7 + width + 4 + name_width + 2 + 7 + 2 + 8;
    let _ = writeln!(out, "{:indent$}{header}", "");
    for (server, url) in state.postgres_servers.iter().zip(&urls) {
        let quoted = format!("\"{url}\"");
        let rtts: String = if server.latency_ms_by_node.is_empty() {
            server.latency_ms.map(|ms| format!("  {:>7.0} ms", ms)).unwrap_or_default()
        } else {
            ids.iter()
                .map(|id| server.latency_ms_by_node.get(*id).map(|ms| format!("  {ms:>7.0} ms")).unwrap_or_default())
                .collect()
        };
        let _ = writeln!(
            out,
            "  psql {quoted:<width$}  # {:<name_width$}  {:<7}  {:<8}{rtts}",
            server.name, server.role, server.region
        );
    }

    let shards: Vec<&str> = layout::SHARDS.iter().map(|s| s.name).collect();
    let examples = example_owners();
    let _ = writeln!(
        out,
        "\nSample data: owners ({} rows), pets ({}), watch_sessions ({}), sharded by owner_id\n\
         (hash over {}): {}.",
        sample::OWNERS,
        sample::PETS,
        sample::WATCH_SESSIONS,
        shards.join(", "),
        examples.iter().map(|(id, shard)| format!("owner {id} is on {shard}")).collect::<Vec<_>>().join(", ")
    );
    if let Some(node) = state.meridian_nodes.first() {
        let url = &node.client_url;
        let _ = writeln!(
            out,
            "\nWatch the routing: inet_server_port() is the port of the server that answered (above).\n\
             Keyed reads go to the shard's nearest fresh replica, writes to its primary:"
        );
        for (id, shard) in &examples {
            let _ = writeln!(
                out,
                "  psql \"{url}\" -c \"SELECT inet_server_port(), name FROM owners WHERE owner_id = {id}\"      # {shard}"
            );
        }
        if let Some((id, _)) = examples.first() {
            let _ = writeln!(
                out,
                "  psql \"{url}\" -c \"INSERT INTO pets (owner_id, name, species) VALUES ({id}, 'Newbie', 'dog') RETURNING pet_id, inet_server_port()\"\n\
                 \x20 psql \"{url}\" -c \"SET meridian.read_consistency = primary\" -c \"SELECT inet_server_port() FROM owners WHERE owner_id = {id}\"\n\
                 \x20 (meridian.read_consistency: read_your_writes (default), nearest or primary; \\timing in psql shows the distance;\n\
                 \x20 the same statements through another node show the routing from its region)"
            );
            let admin = node.admin_url.clone().unwrap_or_else(|| admin_url(&node.client_url));
            let _ = writeln!(out, "  psql \"{admin}\" -c \"EXPLAIN ROUTE SELECT * FROM owners WHERE owner_id = {id}\"");
        }
    }
    let config = state.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let _ = writeln!(out, "\nState: {dir}/demo.json   Config: {config} (and the other nodes')   Guide: docs/demo.md");
    if detached {
        let _ = writeln!(out, "Log:   {dir}/{LOG_FILE}   Nodes' logs: {dir}/nodes/<id>/meridian.log");
        let _ = writeln!(out, "Stop:  meridian demo stop --dir {dir}");
    } else {
        let _ = writeln!(out, "Nodes' logs: {dir}/nodes/<id>/meridian.log");
        let _ = writeln!(out, "Stop:  Ctrl-C here, or `meridian demo stop --dir {dir}`");
    }
    say(out.trim_end());
}

/// The app user straight to `server`.
fn server_url(state: &DemoState, server: &state::PostgresServer) -> String {
    server.url.clone().unwrap_or_else(|| {
        let (user, password, db) = (&state.app_user, &state.app_password, &state.database);
        format!("postgresql://{user}:{password}@{}:{}/{db}", server.host, server.port)
    })
}

/// The lowest sample owner of each shard: examples that land on
/// different shards.
fn example_owners() -> Vec<(i64, &'static str)> {
    layout::SHARDS
        .iter()
        .filter_map(|shard| {
            (1..=sample::OWNERS).find(|id| layout::shard_of(*id).name == shard.name).map(|id| (id, shard.name))
        })
        .collect()
}

/// The admin console's URL: database `meridian` on the node's port.
pub(crate) fn admin_url(client_url: &str) -> String {
    match client_url.rsplit_once('/') {
        Some((server, _database)) => format!("{server}/meridian"),
        None => client_url.to_owned(),
    }
}

/// A command running this very binary: `/proc/self/exe`, which stays valid
/// when the file is replaced meanwhile (a rebuild while a demo starts),
/// named after its path for `ps`; the path itself where there is no
/// `/proc`.
pub(crate) fn self_command() -> std::process::Command {
    use std::os::unix::process::CommandExt as _;
    let path = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("meridian"));
    let shown = path.to_string_lossy().trim_end_matches(" (deleted)").to_owned();
    let proc_exe = Path::new("/proc/self/exe");
    let mut cmd = std::process::Command::new(if proc_exe.exists() { proc_exe } else { path.as_path() });
    cmd.arg0(shown);
    cmd
}

/// Prints a line on stdout; a closed stdout (the terminal went away) is
/// not worth a panic.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// A new `/tmp/meridian-demo-XXXXXX`.
fn fresh_dir() -> anyhow::Result<PathBuf> {
    use rand::Rng;
    for _ in 0..100 {
        let suffix: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(6)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        let dir = std::env::temp_dir().join(format!("meridian-demo-{suffix}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    anyhow::bail!("could not create a fresh demo directory under {}", std::env::temp_dir().display())
}

/// Creates `dir` if needed and returns it absolute. A directory we create
/// is made 0755 so the PostgreSQL OS user can reach its own subdirectories.
fn prepare_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let existed = dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let fresh = !existed || std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    if fresh {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", dir.display()))?;
    }
    Ok(dir)
}

/// Takes `DIR/demo.lock`, or explains which demo holds it.
fn lock(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            // Between runs the lock is free but demo.json may still name a
            // live demo process (one started by an older binary): refuse too.
            if let Ok(Some(state)) = DemoState::read(dir)
                && state.status != Status::Stopped
                && let Some(pid) = state.live_pid()
                && pid != std::process::id()
            {
                anyhow::bail!(already_running(dir, pid, &state));
            }
            Ok(lock)
        }
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let state = DemoState::read(dir).ok().flatten();
            let pid = state.as_ref().and_then(DemoState::live_pid).unwrap_or(0);
            match state {
                Some(state) => anyhow::bail!(already_running(dir, pid, &state)),
                None => anyhow::bail!(
                    "a Meridian demo is already starting in {}; stop it with `meridian demo stop --dir {}`",
                    dir.display(),
                    dir.display()
                ),
            }
        }
        Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
    }
}

fn already_running(dir: &Path, pid: u32, state: &DemoState) -> String {
    let status =
        serde_json::to_value(state.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let url =
        state.meridian_nodes.first().map(|n| format!("; connect with psql \"{}\"", n.client_url)).unwrap_or_default();
    format!(
        "a Meridian demo is already running in {} (pid {pid}, status {status}){url}; stop it first with `meridian demo stop --dir {}`",
        dir.display(),
        dir.display()
    )
}

/// The last `n` lines of a file, or a note that it could not be read.
fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({} unreadable: {e})", path.display()),
    }
}
