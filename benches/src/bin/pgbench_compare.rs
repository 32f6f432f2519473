//! pgbench against PostgreSQL directly, through Meridian and through
//! PgBouncer, side by side on one machine.
//!
//! ```text
//! cargo run --release -p benches --bin pgbench_compare -- [--rounds 3] [--duration 10] [--quick]
//!     [--pool-size 20] [--scale 10] [--out results.md] [--idle-clients 10000] [--no-pgbench]
//! ```
//!
//! What it does:
//! 1. starts one PostgreSQL primary with the `harness` crate (trust on TCP,
//!    `max_connections = 300`, bigger `shared_buffers`) and runs
//!    `pgbench -i -s 10` (`-s 2` with `--quick`);
//! 2. starts the release `meridian` binary (built with
//!    `cargo build --release -p proxy --bin meridian` first, so it is never
//!    stale) in transaction mode with a pool of `--pool-size` connections,
//!    and PgBouncer (installed with `apt-get` if missing) in transaction mode
//!    with the same pool size;
//! 3. for each round, for each workload, runs pgbench against the three
//!    targets in turn (the order rotates per round) and records tps, mean
//!    latency, failures, and the proxy's own CPU time per transaction
//!    (utime + stime from `/proc/<pid>/stat`);
//! 4. prints Markdown tables of the medians over rounds (and writes them to
//!    `--out`);
//! 5. with `--idle-clients N`, opens N idle logged-in client connections to a
//!    fresh Meridian and a fresh PgBouncer and reports each one's RSS before,
//!    with the clients, and after they left.
//!
//! Everything it starts is stopped at the end, also on error or Ctrl-C:
//! PostgreSQL by dropping the harness cluster, the proxies by pid.
//!
//! The machine is small (2 cores shared by pgbench, PostgreSQL and the
//! proxy), so only compare numbers from the same run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use harness::{ClusterSpec, HostAuth, PgCluster};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Set by Ctrl-C / SIGTERM: finish the current run, then clean up and exit.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug, Clone)]
#[command(about = "pgbench: PostgreSQL direct vs Meridian vs PgBouncer")]
struct Args {
    /// Rounds; each round runs every workload against every target
    /// (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per pgbench run (default 10; 3 with --quick).
    #[arg(long)]
    duration: Option<u64>,
    /// Short validation run: smaller scale, fewer workloads, shorter runs.
    #[arg(long)]
    quick: bool,
    /// pgbench scale factor (default 10; 2 with --quick).
    #[arg(long)]
    scale: Option<u32>,
    /// Server connections per pool, for Meridian and PgBouncer alike.
    #[arg(long, default_value_t = 20)]
    pool_size: usize,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Open this many idle client connections to each proxy and report RSS.
    #[arg(long, default_value_t = 0)]
    idle_clients: usize,
    /// Skip the pgbench workloads (useful with --idle-clients).
    #[arg(long)]
    no_pgbench: bool,
    /// Only run workloads whose name contains this text (e.g. "prepared").
    #[arg(long)]
    only: Option<String>,
    /// Use this meridian binary instead of building target/release/meridian.
    #[arg(long)]
    meridian: Option<PathBuf>,
    /// Do not run `cargo build` for meridian (it must exist).
    #[arg(long)]
    no_build: bool,
    /// Tokio worker threads for the main Meridian (TOKIO_WORKER_THREADS;
    /// default: tokio's, one per core).
    #[arg(long)]
    meridian_workers: Option<usize>,
    /// Add a fourth target, `meridian-alt`: a second Meridian process with
    /// TOKIO_WORKER_THREADS set to this, to compare runtime settings side by side.
    #[arg(long)]
    alt_meridian_workers: Option<usize>,
    /// Add a fourth target, `meridian-alt`: this other meridian binary (e.g.
    /// a copy of the build before a change), to compare two builds side by
    /// side in the same interleaved rounds.
    #[arg(long, conflicts_with_all = ["alt_meridian_workers", "routed"])]
    alt_meridian: Option<PathBuf>,
    /// `node.busy_poll` for the main Meridian (e.g. `200us`; default off).
    #[arg(long)]
    meridian_busy_poll: Option<String>,
    /// Add a fourth target, `meridian-alt`: a second Meridian process with
    /// `node.busy_poll` set to this (e.g. `200us`).
    #[arg(long, conflicts_with_all = ["alt_meridian_workers", "routed", "alt_meridian"])]
    alt_meridian_busy_poll: Option<String>,
    /// Record `perf record -F 999 [-g]` of the proxy process during every
    /// proxy run into this directory (perf-<target>-<workload>-r<round>.data).
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// With --perf-dir: record call graphs (DWARF; larger files).
    #[arg(long)]
    perf_callgraph: bool,
    /// Count the proxy's system calls and context switches per transaction
    /// with `perf stat` (tracepoints; adds a little overhead to the proxy).
    #[arg(long)]
    count_syscalls: bool,
    /// A fourth target, `meridian-alt`: Meridian with routing on, a
    /// `[topology]` of the primary and one streaming replica (started for
    /// this), so every statement is classified and reads go to the replica.
    #[arg(long, conflicts_with = "alt_meridian_workers")]
    routed: bool,
    /// Every leg over Unix-domain sockets instead of loopback TCP: pgbench
    /// to PostgreSQL, to Meridian (`listen.unix_socket_dir`) and to
    /// PgBouncer (`unix_socket_dir`); both proxies to PostgreSQL's socket.
    /// What a proxy beside its server and its clients on one host does.
    #[arg(long)]
    unix: bool,
}

#[derive(Debug, Clone)]
struct Workload {
    builtin: &'static str,
    mode: &'static str,
    clients: u32,
}

impl Workload {
    fn name(&self) -> String {
        format!("{} -M {} -c {}", self.builtin, self.mode, self.clients)
    }
}

fn workloads(quick: bool) -> Vec<Workload> {
    let w = |builtin, mode, clients| Workload { builtin, mode, clients };
    if quick {
        return vec![
            w("select-only", "simple", 1),
            w("select-only", "extended", 16),
            w("select-only", "prepared", 16),
            w("tpcb-like", "simple", 16),
        ];
    }
    let mut v = Vec::new();
    for mode in ["simple", "extended", "prepared"] {
        for c in [1, 16, 64] {
            v.push(w("select-only", mode, c));
        }
    }
    v.push(w("tpcb-like", "simple", 16));
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TargetKind {
    Direct,
    Meridian,
    PgBouncer,
    MeridianAlt,
}

impl TargetKind {
    fn label(self) -> &'static str {
        match self {
            TargetKind::Direct => "direct",
            TargetKind::Meridian => "meridian",
            TargetKind::PgBouncer => "pgbouncer",
            TargetKind::MeridianAlt => "meridian-alt",
        }
    }
}

#[derive(Debug, Clone)]
struct Target {
    kind: TargetKind,
    /// pgbench's `-h`: 127.0.0.1, or a socket directory with --unix.
    host: String,
    port: u16,
    /// The proxy process whose CPU time is measured.
    pid: Option<u32>,
}

/// One pgbench run's outcome.
#[derive(Debug, Clone, Default)]
struct RunResult {
    tps: Option<f64>,
    latency_ms: Option<f64>,
    txns: u64,
    failed_txns: u64,
    aborted_clients: u64,
    first_error: Option<String>,
    exit_ok: bool,
    proxy_cpu_s: Option<f64>,
    /// The user-space part of `proxy_cpu_s` (utime): what the proxy's own
    /// code costs, apart from the kernel's work for its system calls.
    proxy_user_s: Option<f64>,
    host_busy_pct: Option<f64>,
    /// `perf stat` counts for the proxy process during the run.
    counters: BTreeMap<String, u64>,
}

impl RunResult {
    fn cpu_us_per_txn(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_s?;
        (self.txns > 0).then(|| cpu * 1e6 / self.txns as f64)
    }

    fn user_us_per_txn(&self) -> Option<f64> {
        let cpu = self.proxy_user_s?;
        (self.txns > 0).then(|| cpu * 1e6 / self.txns as f64)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        eprintln!("interrupted: stopping after the current step and cleaning up");
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
    let result = run(&args, &rt);
    if let Err(e) = &result {
        eprintln!("pgbench_compare failed: {e:#}");
    }
    result
}

fn run(args: &Args, rt: &tokio::runtime::Runtime) -> Result<()> {
    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let duration = args.duration.unwrap_or(if quick { 3 } else { 10 }).max(1);
    let scale = args.scale.unwrap_or(if quick { 2 } else { 10 });
    let mut loads = workloads(quick);
    if let Some(only) = &args.only {
        loads.retain(|w| w.name().contains(only.as_str()));
    }
    if args.no_pgbench {
        loads.clear();
    }
    let nofile = raise_nofile_limit(args.idle_clients)?;
    let clk_tck = clock_ticks();

    // Tools first: fail before starting anything if one is missing.
    let pgbench = which("pgbench").ok_or_else(|| anyhow!("pgbench not found in PATH (Debian: postgresql-client)"))?;
    let pgbouncer = ensure_pgbouncer()?;
    let meridian = meridian_binary(args)?;
    let versions = format!(
        "{} | {} | meridian {}",
        command_first_line(&pgbench, &["--version"]),
        command_first_line(&pgbouncer, &["--version"]),
        git_rev(),
    );
    let n_targets = if args.alt_meridian_workers.is_some()
        || args.routed
        || args.alt_meridian.is_some()
        || args.alt_meridian_busy_poll.is_some()
    {
        4
    } else {
        3
    };
    let est_runs = rounds * loads.len() * n_targets;
    let est_secs = est_runs as u64 * (duration + 2) + if loads.is_empty() { 0 } else { 3 * 3 + 30 };
    eprintln!(
        "plan: {} workloads x {n_targets} targets x {rounds} rounds of {duration}s = {est_runs} runs, about {} min; scale {scale}, pool size {}",
        loads.len(),
        est_secs.div_ceil(60),
        args.pool_size
    );

    let work = tempfile::Builder::new().prefix("meridian-bench-").tempdir().context("creating a work directory")?;
    make_reachable_by_postgres(work.path())?;

    eprintln!("starting PostgreSQL ...");
    let cluster = rt.block_on(PgCluster::start(
        ClusterSpec::default()
            .with_host_auth(HostAuth::Trust)
            .with_name_prefix("bench")
            .with_conf("max_connections = 300")
            .with_conf("shared_buffers = 256MB")
            .with_conf("synchronous_commit = off")
            .with_conf("max_wal_size = 4GB")
            .with_conf("checkpoint_timeout = 30min")
            .with_replicas(usize::from(args.routed)),
    ))?;
    let pg = cluster.primary();
    let pg_port = pg.port();
    let pg_version = rt.block_on(pg.query_value("SHOW server_version"))?.unwrap_or_default();
    eprintln!("PostgreSQL {pg_version} on 127.0.0.1:{pg_port}");

    let mut report = String::new();
    writeln!(report, "# pgbench: PostgreSQL direct vs Meridian vs PgBouncer\n")?;
    writeln!(
        report,
        "- machine: {} cores, {}; PostgreSQL {pg_version} (fsync=off, synchronous_commit=off, shared_buffers=256MB)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        mem_total()
    )?;
    writeln!(report, "- tools: {versions}")?;
    writeln!(report, "- load average at start: {} (other work on this machine skews absolute numbers)", loadavg())?;
    writeln!(
        report,
        "- pool size {} (transaction mode) for both proxies; pgbench scale {scale}, {duration}s per run, {rounds} round(s), \
         targets interleaved (order rotated per round); -j 2 (-j 1 at -c 1); RLIMIT_NOFILE {nofile}",
        args.pool_size
    )?;
    writeln!(
        report,
        "- values are medians over rounds; CPU µs/txn = proxy process utime+stime during the run / transactions; \
         host busy = whole-machine CPU busy during the run"
    )?;

    if loads.is_empty() {
        report.push('\n');
    } else {
        eprintln!("pgbench -i -s {scale} ...");
        let t = Instant::now();
        let out = Command::new(&pgbench)
            .args(["-i", "-q", "-s", &scale.to_string(), "-h", "127.0.0.1", "-p", &pg_port.to_string()])
            .args(["-U", "postgres", "postgres"])
            .envs(pg_env())
            .output()
            .context("running pgbench -i")?;
        if !out.status.success() {
            bail!("pgbench -i failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        rt.block_on(pg.execute("VACUUM ANALYZE; CHECKPOINT")).or_else(|_| rt.block_on(pg.execute("CHECKPOINT")))?;
        rt.block_on(cluster.wait_replicas_caught_up())?;
        eprintln!("initialised in {:.1}s", t.elapsed().as_secs_f64());

        // With --unix, servers are given as `/socket/dir:port` and each
        // proxy also listens on a socket in its own directory.
        let pg_host = if args.unix { pg.socket_dir().display().to_string() } else { "127.0.0.1".to_owned() };
        let backend = backend_section(&pg_host, pg_port);
        let unix = args.unix;
        let meridian_proc = start_meridian(
            &meridian,
            work.path(),
            "meridian",
            &backend,
            args.pool_size,
            1000,
            args.meridian_workers,
            args.meridian_busy_poll.as_deref(),
            unix,
        )?;
        let pgbouncer_proc =
            start_pgbouncer(&pgbouncer, work.path(), "pgbouncer", &pg_host, pg_port, args.pool_size, 1000, unix)?;
        // The fourth target, if any: its binary, servers, worker threads and busy-poll budget.
        let busy_poll = args.meridian_busy_poll.as_deref();
        let alt: Option<(&Path, String, Option<usize>, Option<&str>)> = if let Some(w) = args.alt_meridian_workers {
            Some((&meridian, backend.clone(), Some(w), busy_poll))
        } else if args.routed {
            let replica = cluster.replicas().first().ok_or_else(|| anyhow!("no replica"))?;
            let replica_host = if unix { replica.socket_dir().display().to_string() } else { "127.0.0.1".to_owned() };
            let topology = routed_section(&pg_host, pg_port, &replica_host, replica.port());
            Some((&meridian, topology, args.meridian_workers, busy_poll))
        } else if let Some(bin) = &args.alt_meridian {
            Some((bin, backend.clone(), args.meridian_workers, busy_poll))
        } else {
            args.alt_meridian_busy_poll
                .as_deref()
                .map(|d| (meridian.as_path(), backend.clone(), args.meridian_workers, Some(d)))
        };
        let alt_proc = match alt {
            Some((bin, servers, workers, busy_poll)) => Some(start_meridian(
                bin,
                work.path(),
                "meridian-alt",
                &servers,
                args.pool_size,
                1000,
                workers,
                busy_poll,
                unix,
            )?),
            None => None,
        };
        let target = |kind, p: &Proc| Target { kind, host: p.client_host(unix), port: p.port, pid: Some(p.pid()) };
        let mut targets = vec![
            Target { kind: TargetKind::Direct, host: pg_host.clone(), port: pg_port, pid: None },
            target(TargetKind::Meridian, &meridian_proc),
            target(TargetKind::PgBouncer, &pgbouncer_proc),
        ];
        if let Some(p) = &alt_proc {
            targets.push(target(TargetKind::MeridianAlt, p));
        }
        let procs: Vec<&Proc> =
            [Some(&meridian_proc), Some(&pgbouncer_proc), alt_proc.as_ref()].into_iter().flatten().collect();
        for p in &procs {
            writeln!(report, "- {}: {} threads at start", p.name, proc_threads(p.pid()).unwrap_or(0))?;
        }
        if let Some(w) = args.alt_meridian_workers {
            writeln!(report, "- meridian-alt: a second Meridian with TOKIO_WORKER_THREADS={w}")?;
        }
        if let Some(bin) = &args.alt_meridian {
            writeln!(report, "- meridian-alt: the meridian binary {}", bin.display())?;
        }
        if let Some(d) = &args.meridian_busy_poll {
            writeln!(report, "- meridian: node.busy_poll = {d}")?;
        }
        if let Some(d) = &args.alt_meridian_busy_poll {
            writeln!(report, "- meridian-alt: the same build with node.busy_poll = {d}")?;
        }
        if args.routed {
            writeln!(
                report,
                "- meridian-alt: Meridian with routing on: a [topology] of the primary and one streaming replica \
                 (same machine); every statement is classified, select-only reads go to the replica, \
                 tpcb-like writes to the primary with read-your-writes bookkeeping"
            )?;
        }
        if let Some(w) = args.meridian_workers {
            writeln!(report, "- meridian: TOKIO_WORKER_THREADS={w}")?;
        }
        if unix {
            writeln!(
                report,
                "- **every leg over Unix-domain sockets** (--unix): pgbench to each target's socket, \
                 both proxies to PostgreSQL's socket"
            )?;
        }
        report.push('\n');
        if let Some(d) = &args.perf_dir {
            std::fs::create_dir_all(d)?;
        }

        // Warm-up: caches, pools, first connections; not recorded.
        let warm = Workload { builtin: "select-only", mode: "simple", clients: 16 };
        for t in &targets {
            let r = run_pgbench(&pgbench, t, &warm, duration.min(3), clk_tck, None);
            eprintln!(
                "warm-up {:>9}: {}",
                t.kind.label(),
                r.tps.map(|v| format!("{v:.0} tps")).unwrap_or("no tps".into())
            );
            if matches!(t.kind, TargetKind::Meridian | TargetKind::MeridianAlt) && r.tps.is_none() {
                bail!(
                    "pgbench through Meridian does not work: {}\nmeridian log:\n{}",
                    r.first_error.unwrap_or_default(),
                    meridian_proc.log_tail(30)
                );
            }
        }

        // results[workload][target] = runs
        let mut results: BTreeMap<usize, BTreeMap<TargetKind, Vec<RunResult>>> = BTreeMap::new();
        'rounds: for round in 0..rounds {
            for (wi, w) in loads.iter().enumerate() {
                if w.builtin == "tpcb-like" {
                    // What pgbench's own pre-run vacuum does, done directly so
                    // it does not count against a proxy.
                    for sql in ["VACUUM pgbench_branches", "VACUUM pgbench_tellers", "TRUNCATE pgbench_history"] {
                        rt.block_on(pg.execute(sql))?;
                    }
                }
                for k in 0..targets.len() {
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        break 'rounds;
                    }
                    let t = &targets[(k + round + wi) % targets.len()];
                    for p in &procs {
                        p.check_alive()?;
                    }
                    let perf = PerfSpec {
                        record: args.perf_dir.as_ref().map(|d| {
                            d.join(format!(
                                "perf-{}-{}-r{}.data",
                                t.kind.label(),
                                w.name().replace([' ', '-'], "_").replace("__", "_"),
                                round + 1
                            ))
                        }),
                        callgraph: args.perf_callgraph,
                        stat: args.count_syscalls.then(|| work.path().join("perf-stat.csv")),
                    };
                    let r = run_pgbench(&pgbench, t, w, duration, clk_tck, Some(&perf));
                    eprintln!(
                        "[round {}/{rounds}] {:<32} {:>9}: {:>9} tps  lat {:>7} ms  cpu {:>6} µs/txn (user {:>5})  busy {:>3}%  failed {} aborted {}{}",
                        round + 1,
                        w.name(),
                        t.kind.label(),
                        fmt_opt(r.tps, 0),
                        fmt_opt(r.latency_ms, 3),
                        fmt_opt(r.cpu_us_per_txn(), 1),
                        fmt_opt(r.user_us_per_txn(), 1),
                        fmt_opt(r.host_busy_pct, 0),
                        r.failed_txns,
                        r.aborted_clients,
                        r.first_error.as_deref().map(|e| format!("  ({})", truncate(e, 90))).unwrap_or_default(),
                    );
                    results.entry(wi).or_default().entry(t.kind).or_default().push(r);
                }
            }
        }
        report.push_str(&render_results(&loads, &results));
        drop(procs);
        drop(alt_proc);
        drop(pgbouncer_proc);
        drop(meridian_proc);
    }

    if args.idle_clients > 0 && !INTERRUPTED.load(Ordering::SeqCst) {
        let n = args.idle_clients;
        let max_clients = n + 1000;
        let mut section = format!("\n## {n} idle clients\n\n");
        section.push_str(
            "Fresh proxy process; clients log in (trust, startup packet by hand) and stay idle. \
             RSS from VmRSS in /proc/<pid>/status.\n\n",
        );
        section.push_str("| proxy | connected | failed | connect time s | RSS before MiB | RSS with clients MiB | KiB per client | RSS after close MiB |\n");
        section.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for kind in [TargetKind::Meridian, TargetKind::PgBouncer] {
            let proc = match kind {
                TargetKind::Meridian => start_meridian(
                    &meridian,
                    work.path(),
                    "meridian-idle",
                    &backend_section("127.0.0.1", pg_port),
                    args.pool_size,
                    max_clients,
                    args.meridian_workers,
                    args.meridian_busy_poll.as_deref(),
                    false,
                )?,
                _ => start_pgbouncer(
                    &pgbouncer,
                    work.path(),
                    "pgbouncer-idle",
                    "127.0.0.1",
                    pg_port,
                    args.pool_size,
                    max_clients,
                    false,
                )?,
            };
            let r = rt.block_on(idle_test(&proc, n))?;
            let (label, before, with, per, after) = (
                kind.label(),
                kib_to_mib(r.rss_before_kib),
                kib_to_mib(r.rss_with_kib),
                r.per_client_kib(),
                kib_to_mib(r.rss_after_kib),
            );
            let (connected, failed, secs) = (r.connected, r.failed, r.connect_secs);
            let first_error = r.first_error.as_deref().map(|e| format!(" (first error: {e})")).unwrap_or_default();
            eprintln!(
                "idle {label:>9}: {connected} connected, {failed} failed in {secs:.1}s; RSS {before:.1} -> {with:.1} MiB ({per:.1} KiB/client), after close {after:.1} MiB{first_error}"
            );
            writeln!(
                section,
                "| {label} | {connected} | {failed} | {secs:.1} | {before:.1} | {with:.1} | {per:.1} | {after:.1} |"
            )?;
            if let Some(e) = &r.first_error {
                writeln!(section, "\n{}: first connection error: `{}`\n", kind.label(), e)?;
            }
            drop(proc);
        }
        report.push_str(&section);
    }

    if INTERRUPTED.load(Ordering::SeqCst) {
        report.push_str("\n**Interrupted: results are incomplete.**\n");
    }
    writeln!(report, "\nload average at end: {}", loadavg())?;
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    drop(cluster);
    Ok(())
}

// ---------------------------------------------------------------- pgbench

fn pg_env() -> [(&'static str, &'static str); 3] {
    // No SSL/GSS negotiation round trips; no password prompt.
    [("PGSSLMODE", "disable"), ("PGGSSENCMODE", "disable"), ("PGCONNECT_TIMEOUT", "10")]
}

/// What to record about the proxy with perf during one run.
struct PerfSpec {
    /// `perf record` into this file.
    record: Option<PathBuf>,
    callgraph: bool,
    /// `perf stat` of [`STAT_EVENTS`] via this scratch file.
    stat: Option<PathBuf>,
}

/// Events counted with `--count-syscalls`: all system calls, the ones a
/// proxy's data path makes, and context switches.
const STAT_EVENTS: &[&str] = &[
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_sched_yield",
    "context-switches",
];

fn stat_label(event: &str) -> &str {
    match event {
        "raw_syscalls:sys_enter" => "syscalls",
        "context-switches" => "ctx-switches",
        e => e.strip_prefix("syscalls:sys_enter_").unwrap_or(e),
    }
}

/// Parse `perf stat -x,` output: `value,unit,event,...`.
fn parse_perf_stat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            let value = f.next()?.trim().parse::<u64>().ok()?;
            let _unit = f.next()?;
            let event = f.next()?.trim();
            Some((stat_label(event).to_owned(), value))
        })
        .collect()
}

fn run_pgbench(
    pgbench: &Path,
    t: &Target,
    w: &Workload,
    duration: u64,
    clk_tck: f64,
    perf: Option<&PerfSpec>,
) -> RunResult {
    let mut cmd = Command::new(pgbench);
    cmd.args(["-h", &t.host, "-p", &t.port.to_string(), "-U", "postgres", "-n"])
        .args(["-b", w.builtin, "-M", w.mode])
        .args(["-c", &w.clients.to_string(), "-j", &w.clients.min(2).to_string()])
        .args(["-T", &duration.to_string(), "postgres"])
        .envs(pg_env())
        .stdin(Stdio::null());
    let mut recorders = Vec::new();
    if let (Some(p), Some(pid)) = (perf, t.pid) {
        if let Some(file) = &p.record {
            let mut c = Command::new("perf");
            c.args(["record", "-q", "-F", "999", "-p", &pid.to_string(), "-o"]).arg(file);
            if p.callgraph {
                c.args(["--call-graph", "dwarf,16384"]);
            }
            recorders.extend(c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok());
        }
        if let Some(file) = &p.stat {
            let _ = std::fs::remove_file(file);
            let mut c = Command::new("perf");
            c.args(["stat", "-x,", "-e", &STAT_EVENTS.join(","), "-p", &pid.to_string(), "-o"]).arg(file);
            recorders.extend(c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok());
        }
        if !recorders.is_empty() {
            // Let perf attach before the load starts.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let cpu_before = t.pid.and_then(proc_cpu_ticks);
    let host_before = host_cpu();
    let out = cmd.output();
    let cpu_after = t.pid.and_then(proc_cpu_ticks);
    let host_after = host_cpu();
    for rec in &mut recorders {
        let _ = kill(Pid::from_raw(rec.id() as i32), Signal::SIGINT);
        let _ = rec.wait();
    }
    let mut r = match out {
        Ok(out) => {
            let mut r = parse_pgbench(&String::from_utf8_lossy(&out.stdout), &String::from_utf8_lossy(&out.stderr));
            r.exit_ok = out.status.success();
            if !r.exit_ok && r.first_error.is_none() {
                r.first_error = Some(format!("pgbench exited with {}", out.status));
            }
            r
        }
        Err(e) => RunResult { first_error: Some(format!("cannot run pgbench: {e}")), ..Default::default() },
    };
    if let (Some((ua, sa)), Some((ub, sb))) = (cpu_before, cpu_after) {
        r.proxy_cpu_s = Some(((ub + sb) - (ua + sa)) as f64 / clk_tck);
        r.proxy_user_s = Some((ub - ua) as f64 / clk_tck);
    }
    if let Some(file) = perf.and_then(|p| p.stat.as_ref()).filter(|_| t.pid.is_some()) {
        r.counters = parse_perf_stat(&std::fs::read_to_string(file).unwrap_or_default());
    }
    if let (Some((busy_a, total_a)), Some((busy_b, total_b))) = (host_before, host_after)
        && total_b > total_a
    {
        r.host_busy_pct = Some(100.0 * (busy_b - busy_a) as f64 / (total_b - total_a) as f64);
    }
    r
}

fn parse_pgbench(stdout: &str, stderr: &str) -> RunResult {
    let mut r = RunResult::default();
    let num_after = |line: &str, prefix: &str| -> Option<String> {
        line.strip_prefix(prefix).map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(v) = num_after(line, "tps =") {
            if line.contains("without initial connection time") || r.tps.is_none() {
                r.tps = v.parse().ok();
            }
        } else if let Some(v) = num_after(line, "latency average =") {
            r.latency_ms = v.parse().ok();
        } else if let Some(v) = num_after(line, "number of transactions actually processed:") {
            r.txns = v.split('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        } else if let Some(v) = num_after(line, "number of failed transactions:") {
            r.failed_txns = v.parse().unwrap_or(0);
        }
    }
    for line in stderr.lines() {
        if line.contains("aborted in command") {
            r.aborted_clients += 1;
        }
        if r.first_error.is_none() && (line.contains("error") || line.contains("ERROR") || line.contains("fatal")) {
            let msg = line
                .split_once("ERROR:")
                .map(|(_, m)| format!("ERROR: {}", m.trim()))
                .unwrap_or(line.trim().to_owned());
            r.first_error = Some(msg);
        }
    }
    r
}

// ---------------------------------------------------------------- report

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    tps: Option<f64>,
    lat_ms: Option<f64>,
    cpu_us: Option<f64>,
    busy: Option<f64>,
    failed: u64,
    aborted: u64,
    runs: usize,
}

fn summarise(runs: &[RunResult]) -> Summary {
    Summary {
        tps: median(runs.iter().map(|r| r.tps.unwrap_or(0.0)).collect()),
        lat_ms: median(runs.iter().filter_map(|r| r.latency_ms).collect()),
        cpu_us: median(runs.iter().filter_map(RunResult::cpu_us_per_txn).collect()),
        busy: median(runs.iter().filter_map(|r| r.host_busy_pct).collect()),
        failed: runs.iter().map(|r| r.failed_txns).sum(),
        aborted: runs.iter().map(|r| r.aborted_clients).sum(),
        runs: runs.len(),
    }
}

/// Median over runs of a perf counter divided by the run's transactions.
fn per_txn(runs: &[RunResult], label: &str) -> Option<f64> {
    median(
        runs.iter()
            .filter(|r| r.txns > 0)
            .filter_map(|r| r.counters.get(label).map(|&v| v as f64 / r.txns as f64))
            .collect(),
    )
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "–".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { format!("{}…", s.chars().take(n).collect::<String>()) }
}

fn render_results(loads: &[Workload], results: &BTreeMap<usize, BTreeMap<TargetKind, Vec<RunResult>>>) -> String {
    let mut s = String::new();
    let get = |wi: usize, k: TargetKind| -> Summary {
        results.get(&wi).and_then(|m| m.get(&k)).map(|r| summarise(r)).unwrap_or_default()
    };
    let _ = writeln!(s, "## Summary (medians)\n");
    let has_alt = results.values().any(|m| m.contains_key(&TargetKind::MeridianAlt));
    let _ = writeln!(
        s,
        "| workload | direct tps | meridian tps | pgbouncer tps | meridian/direct | meridian/pgbouncer | meridian +lat µs | pgbouncer +lat µs | meridian CPU µs/txn | pgbouncer CPU µs/txn |{}",
        if has_alt { " meridian-alt tps | meridian-alt CPU µs/txn |" } else { "" }
    );
    let _ =
        writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}", if has_alt { "---:|---:|" } else { "" });
    for (wi, w) in loads.iter().enumerate() {
        if !results.contains_key(&wi) {
            continue;
        }
        let (d, m, b) = (get(wi, TargetKind::Direct), get(wi, TargetKind::Meridian), get(wi, TargetKind::PgBouncer));
        let added = |x: &Summary| match (x.lat_ms, d.lat_ms) {
            (Some(x), Some(d)) => format!("{:+.0}", (x - d) * 1000.0),
            _ => "–".into(),
        };
        let failed_note = |x: &Summary| if x.failed > 0 || x.aborted > 0 { " ⚠" } else { "" };
        let _ = writeln!(
            s,
            "| {} | {} | {}{} | {}{} | {} | {} | {} | {} | {} | {} |",
            w.name(),
            fmt_opt(d.tps, 0),
            fmt_opt(m.tps, 0),
            failed_note(&m),
            fmt_opt(b.tps, 0),
            failed_note(&b),
            ratio(m.tps, d.tps),
            if b.aborted > 0 { "n/a (pgbouncer failed)".to_owned() } else { ratio(m.tps, b.tps) },
            added(&m),
            added(&b),
            fmt_opt(m.cpu_us, 1),
            fmt_opt(b.cpu_us, 1),
        );
        if has_alt {
            let a = get(wi, TargetKind::MeridianAlt);
            s.pop();
            let _ = writeln!(s, " {}{} | {} |", fmt_opt(a.tps, 0), failed_note(&a), fmt_opt(a.cpu_us, 1));
        }
    }
    let _ = writeln!(s, "\n⚠ = failed transactions or aborted clients in some run (see the workload's table).\n");

    for (wi, w) in loads.iter().enumerate() {
        let Some(by_target) = results.get(&wi) else { continue };
        let d = get(wi, TargetKind::Direct);
        let _ = writeln!(s, "### {}\n", w.name());
        let _ = writeln!(
            s,
            "| target | runs | tps | mean latency ms | added latency µs | CPU µs/txn | host busy % | failed txns | aborted clients | first error |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (kind, runs) in by_target {
            let x = summarise(runs);
            let added = match (x.lat_ms, d.lat_ms) {
                (Some(a), Some(b)) if *kind != TargetKind::Direct => format!("{:+.0}", (a - b) * 1000.0),
                _ => "–".into(),
            };
            let err = runs.iter().find_map(|r| r.first_error.clone()).map(|e| truncate(&e, 100)).unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                kind.label(),
                x.runs,
                fmt_opt(x.tps, 0),
                fmt_opt(x.lat_ms, 3),
                added,
                fmt_opt(x.cpu_us, 1),
                fmt_opt(x.busy, 0),
                x.failed,
                x.aborted,
                err.replace('|', "\\|"),
            );
        }
        let (m, b) = (get(wi, TargetKind::Meridian), get(wi, TargetKind::PgBouncer));
        let _ = writeln!(
            s,
            "\nmeridian/direct tps {}, meridian/pgbouncer tps {}, meridian/pgbouncer CPU per txn {}\n",
            ratio(m.tps, d.tps),
            if b.aborted > 0 { "n/a (pgbouncer failed)".to_owned() } else { ratio(m.tps, b.tps) },
            if b.aborted > 0 { "n/a".to_owned() } else { ratio(m.cpu_us, b.cpu_us) },
        );
        let per_round: Vec<String> = by_target
            .iter()
            .map(|(k, runs)| {
                format!("{} [{}]", k.label(), runs.iter().map(|r| fmt_opt(r.tps, 0)).collect::<Vec<_>>().join(", "))
            })
            .collect();
        let _ = writeln!(s, "per-round tps: {}\n", per_round.join("; "));
        if by_target.values().flatten().any(|r| !r.counters.is_empty()) {
            let labels: Vec<&str> = STAT_EVENTS.iter().map(|e| stat_label(e)).collect();
            let _ = writeln!(s, "proxy events per transaction (perf stat, median over rounds):\n");
            let _ = writeln!(s, "| target | {} |", labels.join(" | "));
            let _ = writeln!(s, "|---|{}", "---:|".repeat(labels.len()));
            for (kind, runs) in by_target {
                if runs.iter().all(|r| r.counters.is_empty()) {
                    continue;
                }
                let cells: Vec<String> = labels.iter().map(|l| fmt_opt(per_txn(runs, l), 2)).collect();
                let _ = writeln!(s, "| {} | {} |", kind.label(), cells.join(" | "));
            }
            s.push('\n');
        }
    }
    s
}

// ---------------------------------------------------------------- processes

/// A proxy we started; stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    port: u16,
    log: PathBuf,
    /// Its directory, which holds its Unix socket with --unix.
    dir: PathBuf,
}

impl Proc {
    /// pgbench's `-h` for this proxy.
    fn client_host(&self, unix: bool) -> String {
        if unix { self.dir.display().to_string() } else { "127.0.0.1".to_owned() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn check_alive(&self) -> Result<()> {
        // try_wait needs &mut; a zero signal is enough here.
        if kill(Pid::from_raw(self.pid() as i32), None).is_err() || proc_state(self.pid()) == Some('Z') {
            bail!("{} (pid {}) is not running; log:\n{}", self.name, self.pid(), self.log_tail(30));
        }
        Ok(())
    }

    /// Wait until the port accepts connections.
    fn wait_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at startup with {status}; log:\n{}", self.name, self.log_tail(30));
            }
            if StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within {timeout:?}; log:\n{}", self.name, self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("{} (pid {pid}) ignored SIGTERM; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The config section for Meridian in front of the primary alone (`host`:
/// 127.0.0.1 or the server's socket directory).
fn backend_section(host: &str, pg_port: u16) -> String {
    format!("[backend]\naddress = \"{host}:{pg_port}\"\n")
}

/// A one-shard topology of the primary and one replica, probed as postgres.
fn routed_section(pg_host: &str, pg_port: u16, replica_host: &str, replica_port: u16) -> String {
    format!(
        "[health]\nuser = \"postgres\"\n\n[topology]\n[[topology.shard]]\nname = \"s1\"\n\n\
         [[topology.node]]\nname = \"primary\"\naddress = \"{pg_host}:{pg_port}\"\nshard = \"s1\"\nregion = \"local\"\nrole = \"primary\"\n\n\
         [[topology.node]]\nname = \"replica\"\naddress = \"{replica_host}:{replica_port}\"\nshard = \"s1\"\nregion = \"local\"\nrole = \"replica\"\n"
    )
}

/// `servers`: the `[backend]` or `[topology]` (+ `[health]`) sections;
/// `unix`: also listen on a socket in the process's directory.
#[allow(clippy::too_many_arguments)]
fn start_meridian(
    bin: &Path,
    work: &Path,
    name: &str,
    servers: &str,
    pool_size: usize,
    max_clients: usize,
    workers: Option<usize>,
    busy_poll: Option<&str>,
    unix: bool,
) -> Result<Proc> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let port = harness::free_port()?;
    let socket = if unix { format!("unix_socket_dir = \"{}\"", dir.display()) } else { String::new() };
    let busy_poll = busy_poll.map(|d| format!("busy_poll = \"{d}\"")).unwrap_or_default();
    std::fs::write(dir.join("users.toml"), "[[user]]\nname = \"postgres\"\nauth = \"trust\"\n")?;
    let config = format!(
        r#"[node]
name = "{name}"
{busy_poll}

[listen]
address = "127.0.0.1:{port}"
max_client_connections = {max_clients}
{socket}

[auth]
users_file = "users.toml"

[pool]
mode = "transaction"
size = {pool_size}
queue_limit = {max_clients}

{servers}

[shutdown]
grace = "2s"
"#
    );
    let config_path = dir.join("meridian.toml");
    std::fs::write(&config_path, config)?;
    let log = dir.join("meridian.log");
    let mut cmd = Command::new(bin);
    if let Some(w) = workers {
        cmd.env("TOKIO_WORKER_THREADS", w.to_string());
    }
    let child = cmd
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env("MERIDIAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("meridian.stdout"))?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut p = Proc { name: name.to_owned(), child, port, log, dir };
    p.wait_listening(Duration::from_secs(15))?;
    eprintln!("{name} (pid {}) on 127.0.0.1:{port}", p.pid());
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn start_pgbouncer(
    bin: &Path,
    work: &Path,
    name: &str,
    pg_host: &str,
    pg_port: u16,
    pool_size: usize,
    max_clients: usize,
    unix: bool,
) -> Result<Proc> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    let port = harness::free_port()?;
    let auth_file = dir.join("userlist.txt");
    std::fs::write(&auth_file, "\"postgres\" \"\"\n")?;
    let log = dir.join("pgbouncer.log");
    let ini = format!(
        "[databases]\n\
         postgres = host={pg_host} port={pg_port} dbname=postgres\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir = {socket}\n\
         auth_type = trust\n\
         auth_file = {auth}\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = {max_clients}\n\
         logfile = {log}\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         log_pooler_errors = 1\n\
         stats_period = 3600\n",
        auth = auth_file.display(),
        log = log.display(),
        socket = if unix { dir.display().to_string() } else { String::new() },
    );
    let ini_path = dir.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini)?;
    let root = nix::unistd::geteuid().is_root();
    if root {
        // PgBouncer refuses to run as root; `-u postgres` drops privileges in
        // the same process (so the pid is still the one to measure). It then
        // has to be able to write its log in this directory.
        chown_to_postgres(&dir)?;
    }
    let mut cmd = Command::new(bin);
    if root {
        cmd.args(["-u", "postgres"]);
    }
    let child = cmd
        .arg(&ini_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join(format!("{name}.stdout")))?)
        .stderr(std::fs::File::create(work.join(format!("{name}.stderr")))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut p = Proc { name: name.to_owned(), child, port, log, dir };
    p.wait_listening(Duration::from_secs(15)).map_err(|e| {
        let stderr = std::fs::read_to_string(work.join(format!("{name}.stderr"))).unwrap_or_default();
        anyhow!("{e:#}\nstderr: {stderr}")
    })?;
    eprintln!("{name} (pid {}) on 127.0.0.1:{port}", p.pid());
    Ok(p)
}

fn which(name: &str) -> Option<PathBuf> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// PgBouncer from PATH or /usr/sbin, else `apt-get install -y pgbouncer`.
fn ensure_pgbouncer() -> Result<PathBuf> {
    let find = || which("pgbouncer").or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.exists()));
    if let Some(p) = find() {
        return Ok(p);
    }
    eprintln!("pgbouncer not found: installing the Debian package ...");
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "pgbouncer is not installed and this is not root, so `apt-get install -y pgbouncer` cannot run; install it first"
        );
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "pgbouncer"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let mut out = install().context("running apt-get (is this Debian/Ubuntu?)")?;
    if !out.status.success() {
        let _ = Command::new("apt-get").args(["update", "-q"]).output();
        out = install().context("running apt-get")?;
    }
    if !out.status.success() {
        bail!(
            "`apt-get install -y pgbouncer` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    find().ok_or_else(|| anyhow!("apt-get installed pgbouncer but no pgbouncer binary is in PATH or /usr/sbin"))
}

/// The release `meridian`, next to this binary; rebuilt first so it matches the source.
fn meridian_binary(args: &Args) -> Result<PathBuf> {
    if let Some(p) = &args.meridian {
        anyhow::ensure!(p.exists(), "--meridian {} does not exist", p.display());
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    let bin = dir.join("meridian");
    if !dir.ends_with("release") {
        eprintln!("warning: this is not a release build ({}); numbers will be meaningless", dir.display());
    }
    if !args.no_build {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("cargo build --release -p proxy --bin meridian ...");
        let status = Command::new(&cargo)
            .args(["build", "--release", "-p", "proxy", "--bin", "meridian"])
            .current_dir(root)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => {
                if bin.exists() {
                    eprintln!("warning: building meridian failed ({other:?}); using the existing {}", bin.display());
                } else {
                    bail!("building meridian failed ({other:?}) and {} does not exist", bin.display());
                }
            }
        }
    }
    anyhow::ensure!(
        bin.exists(),
        "{} not found (build it with cargo build --release -p proxy --bin meridian)",
        bin.display()
    );
    Ok(bin)
}

fn command_first_line(bin: &Path, args: &[&str]) -> String {
    Command::new(bin)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| format!("{} (unknown version)", bin.display()))
}

fn git_rev() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let out = Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root).output();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    match out {
        Ok(o) if o.status.success() => {
            format!("{}{}", String::from_utf8_lossy(&o.stdout).trim(), if dirty { "+dirty" } else { "" })
        }
        _ => "(unknown rev)".into(),
    }
}

fn make_reachable_by_postgres(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn chown_to_postgres(dir: &Path) -> Result<()> {
    let user = nix::unistd::User::from_name("postgres")?
        .ok_or_else(|| anyhow!("no `postgres` OS user to run pgbouncer as (it refuses root)"))?;
    for entry in
        std::iter::once(dir.to_path_buf()).chain(std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())))
    {
        nix::unistd::chown(&entry, Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- /proc

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// (utime, stime) of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm)": state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

fn proc_threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn proc_state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

fn proc_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// (busy, total) jiffies of the whole machine.
fn host_cpu() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn mem_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB RAM", kib as f64 / 1048576.0))
        .unwrap_or_default()
}

fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

/// Raise RLIMIT_NOFILE (soft and, as root, hard) so that this process and
/// the proxies it starts (they inherit it) can hold the idle clients.
fn raise_nofile_limit(idle_clients: usize) -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = (idle_clients as u64 * 2 + 4096).max(65_536);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_ok() {
        return Ok(want);
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if (soft as usize) < idle_clients + 500 {
        eprintln!("warning: RLIMIT_NOFILE is only {soft}; {idle_clients} idle clients may not fit");
    }
    Ok(soft)
}

// ---------------------------------------------------------------- idle clients

struct IdleResult {
    connected: usize,
    failed: usize,
    connect_secs: f64,
    rss_before_kib: u64,
    rss_with_kib: u64,
    rss_after_kib: u64,
    first_error: Option<String>,
}

impl IdleResult {
    fn per_client_kib(&self) -> f64 {
        if self.connected == 0 {
            return 0.0;
        }
        (self.rss_with_kib as f64 - self.rss_before_kib as f64) / self.connected as f64
    }
}

async fn idle_test(proc: &Proc, n: usize) -> Result<IdleResult> {
    let pid = proc.pid();
    let addr = SocketAddr::from(([127, 0, 0, 1], proc.port));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = proc_rss_kib(pid).unwrap_or(0);
    let startup = Arc::new(benches::startup_packet(&[
        ("user", "postgres"),
        ("database", "postgres"),
        ("application_name", "idle"),
    ]));
    let limit = Arc::new(tokio::sync::Semaphore::new(128));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let startup = startup.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(30), login(addr, &startup))
                .await
                .map_err(|_| "login timed out".to_string())?
        });
    }
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(s) => conns.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            tasks.abort_all();
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_with_kib = proc_rss_kib(pid).unwrap_or(0);
    let connected = conns.len();
    // Say goodbye properly (Terminate), then close.
    for mut c in conns {
        let _ = c.write_all(&[b'X', 0, 0, 0, 4]).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after_kib = proc_rss_kib(pid).unwrap_or(0);
    Ok(IdleResult { connected, failed, connect_secs, rss_before_kib, rss_with_kib, rss_after_kib, first_error })
}

/// Connect, send the startup packet, read up to ReadyForQuery (trust auth).
async fn login(addr: SocketAddr, startup: &[u8]) -> Result<tokio::net::TcpStream, String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.write_all(startup).await.map_err(|e| format!("write startup: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        // Walk complete messages; stop at ReadyForQuery or ErrorResponse.
        let mut at = 0;
        while buf.len() >= at + 5 {
            let tag = buf[at];
            let len = i32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
            if buf.len() < at + 1 + len {
                break;
            }
            match tag {
                b'Z' => return Ok(s),
                b'E' => {
                    let fields = proxy::wire::messages::parse_error_fields(&buf[at + 5..at + 1 + len]);
                    return Err(format!("{} {}", fields.code, fields.message));
                }
                b'R' if i32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]) != 0 => {
                    return Err("server asked for a password".into());
                }
                _ => {}
            }
            at += 1 + len;
        }
        buf.drain(..at);
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed during login".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_output() {
        let stdout = "pgbench (15.18 (Debian 15.18-0+deb12u1))\n\
            transaction type: <builtin: select only>\nscaling factor: 10\nquery mode: prepared\n\
            number of clients: 16\nnumber of threads: 2\nmaximum number of tries: 1\nduration: 10 s\n\
            number of transactions actually processed: 181234\nnumber of failed transactions: 3 (0.002%)\n\
            latency average = 0.883 ms\ninitial connection time = 12.345 ms\n\
            tps = 18123.456789 (without initial connection time)\n";
        let stderr = "pgbench: error: client 3 script 0 aborted in command 1 query 0: ERROR:  prepared statement \"P_0\" already exists\n\
            pgbench: error: client 5 script 0 aborted in command 1 query 0: ERROR:  prepared statement \"P_0\" already exists\n";
        let r = parse_pgbench(stdout, stderr);
        assert_eq!(r.tps, Some(18123.456789));
        assert_eq!(r.latency_ms, Some(0.883));
        assert_eq!(r.txns, 181234);
        assert_eq!(r.failed_txns, 3);
        assert_eq!(r.aborted_clients, 2);
        assert_eq!(r.first_error.as_deref(), Some("ERROR: prepared statement \"P_0\" already exists"));
    }

    #[test]
    fn parses_perf_stat_csv() {
        let text = "# started on ...\n\n120,,raw_syscalls:sys_enter,5000,100.00,,\n\
            40,,syscalls:sys_enter_recvfrom,5000,100.00,,\n7,,context-switches,5000,100.00,,\n\
            <not supported>,,syscalls:sys_enter_read,0,100.00,,\n";
        let m = parse_perf_stat(text);
        assert_eq!(m.get("syscalls"), Some(&120));
        assert_eq!(m.get("recvfrom"), Some(&40));
        assert_eq!(m.get("ctx-switches"), Some(&7));
        assert!(!m.contains_key("read"));
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
