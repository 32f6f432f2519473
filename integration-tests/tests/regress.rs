//! The PostgreSQL 15 core regression suite (pg_regress, installcheck mode),
//! run once straight against a fresh cluster and once through Meridian
//! (transaction pooling, the default) against another fresh cluster, both as
//! the test bed's app superuser. Every test that passes directly must pass
//! through Meridian, except `stats` and `temp`, which observe backend
//! identity (session counters, a backend's temporary namespace) that a
//! pooler cannot preserve.
//!
//! The suite is driven by `shared/tools/pg-regress` (beside the repository:
//! `../shared` relative to the repo root), which builds and caches
//! `regress.so` the first time; that needs the PostgreSQL server headers,
//! which [`ensure_prerequisites`] installs (pinned to the server's version)
//! when neither they nor the cache are there.
//!
//! Outputs stay in `target/tmp/pg-regress/{direct,meridian}` after the run
//! (`regression.diffs`, `results/*.out`, `pg_regress.log`).
//!
//! The other tests here are minimal reproductions of what made regression
//! tests differ through Meridian, so that a failure points at its cause in
//! seconds rather than after a suite run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use integration_tests::{APP_PASSWORD, APP_USER, BedSpec, TestBed};
use tokio::time::Instant;

/// Tests that may differ through a pooler: they observe the server backend
/// itself. `stats` checks that `\c` opened a new backend session
/// (pg_stat_database.sessions); `temp` checks that `\c` gives a backend
/// without a temporary namespace (PREPARE TRANSACTION after current_schema()
/// with search_path = pg_temp). `guc` sets a placeholder
/// (`plpgsql.extra_foo_warnings`) that PostgreSQL accepts only in a backend
/// that has not loaded plpgsql yet; a pooled backend has usually run some
/// PL/pgSQL for an earlier client, so the SET is refused there. No pooler
/// that reuses backends can pass it (PgBouncer fails it the same way).
const ALLOWED_TO_DIFFER: &[&str] = &["stats", "temp", "guc"];

/// One suite run may take several minutes on a loaded machine; this is far
/// above that and only catches a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The environment variable the script reads the password from.
const PASSWORD_ENV: &str = "MERIDIAN_REGRESS_PASSWORD";

/// `shared/` beside the repository root.
fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

fn script() -> PathBuf {
    shared_dir().join("tools/pg-regress")
}

/// Where a run keeps its outputs (kept after the test for inspection).
fn outdir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg-regress").join(name)
}

/// The outcome of one regression test in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed,
    /// Failed, but marked `ignore:` in the schedule.
    Ignored,
}

/// One finished run of the script.
#[derive(Debug)]
struct SuiteRun {
    outdir: PathBuf,
    verdicts: BTreeMap<String, Verdict>,
    summary: String,
    elapsed: Duration,
}

impl SuiteRun {
    fn passed(&self) -> BTreeSet<&str> {
        self.verdicts.iter().filter(|(_, v)| **v == Verdict::Ok).map(|(k, _)| k.as_str()).collect()
    }

    fn failed(&self) -> Vec<&str> {
        self.verdicts.iter().filter(|(_, v)| **v != Verdict::Ok).map(|(k, _)| k.as_str()).collect()
    }
}

/// Parse pg_regress's per-test lines:
/// `test name   ... ok   12 ms`, `     name   ... FAILED   12 ms`,
/// `     name   ... FAILED (test process exited with exit code 2)  12 ms`,
/// `     name   ... failed (ignored)   12 ms`.
fn parse_verdicts(log: &str) -> BTreeMap<String, Verdict> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let Some((head, tail)) = line.split_once(" ... ") else { continue };
        let head = head.trim();
        let name = head.strip_prefix("test ").unwrap_or(head).trim();
        if name.is_empty() || name.contains(' ') {
            continue;
        }
        let tail = tail.trim_start();
        let verdict = if tail.starts_with("ok") {
            Verdict::Ok
        } else if tail.starts_with("failed (ignored)") {
            Verdict::Ignored
        } else if tail.starts_with("FAILED") {
            Verdict::Failed
        } else {
            continue;
        };
        out.insert(name.to_owned(), verdict);
    }
    out
}

/// The tests a schedule file plans to run.
fn scheduled_tests(schedule: &str) -> BTreeSet<String> {
    schedule
        .lines()
        .filter_map(|l| l.strip_prefix("test:"))
        .flat_map(|l| l.split_whitespace().map(str::to_owned))
        .collect()
}

/// The script builds `regress.so` from source the first time and needs the
/// server headers for it; `pg_regress` itself ships with the client package
/// here, so the script's own install step (triggered only by a missing
/// `pg_regress`) does not bring them. Install them the way the script would,
/// pinned to the installed server version, unless the build is cached.
fn ensure_prerequisites() -> anyhow::Result<()> {
    use std::process::Command;
    let script = script();
    anyhow::ensure!(
        script.is_file(),
        "{} not found: the regression suite needs shared/tools/pg-regress beside the repository",
        script.display()
    );
    anyhow::ensure!(
        shared_dir().join("pg-regress-15/parallel_schedule").is_file(),
        "{} not found",
        shared_dir().join("pg-regress-15").display()
    );
    for tool in ["psql", "bash", "dpkg-query"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output()?;
        anyhow::ensure!(found.status.success(), "{tool} is not installed; the regression suite needs it");
    }
    let version = Command::new("dpkg-query").args(["-W", "-f=${Version}", "postgresql-15"]).output()?;
    anyhow::ensure!(version.status.success(), "package postgresql-15 is not installed");
    let version = String::from_utf8(version.stdout)?.trim().to_owned();
    let cache_root = match std::env::var_os("PG_REGRESS_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
            });
            base.join("pg-regress-15")
        }
    };
    if cache_root.join(&version).join("dlpath/regress.so").is_file() {
        return Ok(());
    }
    let incdir = Command::new("/usr/lib/postgresql/15/bin/pg_config").arg("--includedir-server").output();
    let has_headers = incdir
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("postgres.h"))
        .is_some_and(|p| p.is_file());
    if has_headers {
        return Ok(());
    }
    let pin = format!("postgresql-server-dev-15={version}");
    eprintln!("regress: installing {pin} (server headers, to build regress.so once)");
    let cached = Command::new("apt-cache").args(["show", &pin]).output()?;
    if !cached.status.success() {
        let update = Command::new("apt-get").args(["update", "-q"]).status()?;
        anyhow::ensure!(update.success(), "apt-get update failed");
    }
    let install = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends", &pin])
        .status()
        .context("running apt-get")?;
    anyhow::ensure!(install.success(), "apt-get install {pin} failed: install it by hand (as root)");
    Ok(())
}

/// Run the whole suite against `host:port` as the app user.
async fn run_suite(label: &'static str, host: &str, port: u16) -> anyhow::Result<SuiteRun> {
    let dir = outdir(label);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script())
        .args(["--host", host, "--port", &port.to_string(), "--user", APP_USER, "--password-env", PASSWORD_ENV])
        .arg("--outdir")
        .arg(&dir)
        .env(PASSWORD_ENV, APP_PASSWORD)
        .current_dir(&dir);
    let started = Instant::now();
    let out = integration_tests::run_tool(cmd, SUITE_TIMEOUT).await.with_context(|| format!("{label} run"))?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::write(dir.join("script.stdout"), stdout.as_bytes())?;
    std::fs::write(dir.join("script.stderr"), stderr.as_bytes())?;
    let summary = stdout.lines().rev().find(|l| l.starts_with("pg_regress: ")).unwrap_or_default().to_owned();
    // Exit status 2 is a setup error: nothing to compare.
    anyhow::ensure!(
        out.status.code() != Some(2) && !summary.is_empty(),
        "{label}: pg-regress could not run (status {:?})\nstderr:\n{stderr}\nstdout (tail):\n{}",
        out.status.code(),
        tail(&stdout, 40)
    );
    let log = std::fs::read_to_string(dir.join("pg_regress.log")).context("reading pg_regress.log")?;
    let verdicts = parse_verdicts(&log);
    let schedule = std::fs::read_to_string(dir.join("schedule")).context("reading the schedule")?;
    let planned = scheduled_tests(&schedule);
    let mut verdicts = verdicts;
    for t in planned {
        // A test that never reported counts as failed.
        verdicts.entry(t).or_insert(Verdict::Failed);
    }
    eprintln!("regress: {label}: {summary} in {:.0?}", elapsed);
    Ok(SuiteRun { outdir: dir, verdicts, summary, elapsed })
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The hunks of `regression.diffs` that belong to `test`.
fn diff_of(run: &SuiteRun, test: &str, max_lines: usize) -> String {
    let Ok(diffs) = std::fs::read_to_string(run.outdir.join("regression.diffs")) else { return String::new() };
    let mut out = Vec::new();
    let mut inside = false;
    for line in diffs.lines() {
        if line.starts_with("diff ") {
            inside = line.contains(&format!("/results/{test}.out"));
        }
        if inside {
            out.push(line);
        }
    }
    let total = out.len();
    let mut text = out.into_iter().take(max_lines).collect::<Vec<_>>().join("\n");
    if total > max_lines {
        text.push_str(&format!("\n... ({} more lines)", total - max_lines));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_suite_through_meridian_matches_direct() -> anyhow::Result<()> {
    ensure_prerequisites()?;
    let direct_bed = TestBed::start().await?;
    let meridian_bed = TestBed::start_with(BedSpec::default()).await?;
    // Routing on: reads to two streaming replicas, read-your-writes.
    let routed_bed = TestBed::start_with(BedSpec {
        cluster: harness::ClusterSpec::default().with_replicas(2),
        routed: true,
        ..BedSpec::default()
    })
    .await?;

    // Sequential runs: each uses both cores well, and one run takes about a
    // minute here (about two with both in parallel on 2 cores).
    let p = direct_bed.cluster.primary();
    let direct = run_suite("direct", &p.host().to_string(), p.port()).await?;
    let meridian = run_suite("meridian", &meridian_bed.addr.ip().to_string(), meridian_bed.addr.port()).await?;
    let routed = run_suite("routed", &routed_bed.addr.ip().to_string(), routed_bed.addr.port()).await?;
    let mut report = compare(&direct, &meridian);
    report.push_str(&compare(&direct, &routed));
    anyhow::ensure!(report.is_empty(), "{report}");
    Ok(())
}

/// What passes in `direct` but not in `through` (beyond the allowed), as a
/// report with diffs; empty when nothing regressed.
fn compare(direct: &SuiteRun, meridian: &SuiteRun) -> String {
    // The direct run is the baseline: it must have run the suite for real.
    let direct_passed = direct.passed();
    if direct_passed.len() < 200 {
        return format!(
            "the direct run passed only {} tests ({}); the environment is broken, see {}\n",
            direct_passed.len(),
            direct.summary,
            direct.outdir.display()
        );
    }

    let meridian_passed = meridian.passed();
    let mut regressions = Vec::new();
    let mut allowed = Vec::new();
    for t in &direct_passed {
        if !meridian_passed.contains(t) {
            if ALLOWED_TO_DIFFER.contains(t) {
                allowed.push(*t);
            } else {
                regressions.push(*t);
            }
        }
    }
    let improved: Vec<&str> = meridian_passed.iter().filter(|t| !direct_passed.contains(*t)).copied().collect();

    eprintln!(
        "regress: direct {:.0?} ({}), {} {:.0?} ({})",
        direct.elapsed,
        direct.summary,
        meridian.outdir.file_name().unwrap_or_default().to_string_lossy(),
        meridian.elapsed,
        meridian.summary
    );
    eprintln!("regress: failing directly too (not Meridian's): {:?}", direct.failed());
    eprintln!("regress: allowed to differ and differing: {allowed:?}");
    if !improved.is_empty() {
        eprintln!("regress: pass only through Meridian: {improved:?}");
    }

    let mut report = String::new();
    if !regressions.is_empty() {
        report = format!(
            "{} regression test(s) pass directly but not through Meridian: {}\n\
             diffs: {}\nresults: {}\ndirect run: {}\n",
            regressions.len(),
            regressions.join(" "),
            meridian.outdir.join("regression.diffs").display(),
            meridian.outdir.join("results").display(),
            direct.outdir.display(),
        );
        for t in &regressions {
            report.push_str(&format!("\n===== {t} =====\n{}\n", diff_of(meridian, t, 40)));
        }
    }
    report
}

// ---------------------------------------------------------------------------
// Minimal reproductions of the differences above.
// ---------------------------------------------------------------------------

/// A bed whose pool has one server connection, so consecutive clients are
/// served by the same PostgreSQL backend.
async fn one_connection_bed() -> anyhow::Result<TestBed> {
    TestBed::start_with(BedSpec {
        extra_config: "[pool]\nsize = 1\ncheckout_timeout = \"60s\"\n".into(),
        ..BedSpec::default()
    })
    .await
}

/// From `privileges`: `SET lo_compat_privileges = ...` (superuser only), then
/// `SET SESSION AUTHORIZATION <non-superuser>`, then `\c -`. The departed
/// client's server connection goes back to the pool as it is; the next
/// client's checkout resets its settings in name order, `RESET
/// lo_compat_privileges` before `RESET SESSION AUTHORIZATION`, i.e. as the
/// non-superuser, which PostgreSQL refuses (42501) — and Meridian turns that
/// into a FATAL login failure of the new, innocent client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departed_clients_session_authorization_does_not_break_next_login() -> anyhow::Result<()> {
    let bed = one_connection_bed().await?;
    bed.cluster.primary().execute("CREATE ROLE regress_nonsuper LOGIN").await?;

    let first = bed.connect().await?;
    first.batch_execute("SET lo_compat_privileges = on").await?;
    first.batch_execute("SET SESSION AUTHORIZATION regress_nonsuper").await?;
    let who: String = first.query_one("SELECT current_user::text", &[]).await?.get(0);
    assert_eq!(who, "regress_nonsuper");
    drop(first);

    // The next client gets the same (only) server connection.
    let second = integration_tests::patiently("second login", bed.connect())
        .await?
        .context("a new client must be able to log in after another client left with SET SESSION AUTHORIZATION")?;
    let row = second.query_one("SELECT current_user::text, current_setting('lo_compat_privileges')", &[]).await?;
    assert_eq!(row.get::<_, String>(0), APP_USER, "the new client must not inherit the old session user");
    assert_eq!(row.get::<_, String>(1), "off", "the new client must not inherit the old settings");
    Ok(())
}

/// The same ordering problem when settings are replayed onto another server
/// connection in transaction mode: the client ran `SET track_io_timing = on`
/// (superuser only) and then `SET SESSION AUTHORIZATION <non-superuser>`.
/// When it next needs a server connection other than its last one, Meridian
/// replays `SET SESSION AUTHORIZATION ...` before `SET track_io_timing`
/// (name order), PostgreSQL refuses the second, and the client is
/// disconnected although it did nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_settings_keep_session_authorization_last() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        extra_config: "[pool]\nsize = 1\ncheckout_timeout = \"60s\"\n".into(),
        ..BedSpec::default()
    })
    .await?;
    bed.cluster.primary().execute("CREATE ROLE regress_nonsuper2 LOGIN").await?;

    let a = bed.connect().await?;
    a.batch_execute("SET track_io_timing = on").await?;
    a.batch_execute("SET SESSION AUTHORIZATION regress_nonsuper2").await?;

    // Another client takes the only server connection (resetting A's
    // settings on it) and holds it in a transaction; A's next statement
    // waits, then must replay both settings on it, in an order that works.
    let b = bed.connect().await?;
    b.batch_execute("BEGIN").await?;
    assert_eq!(b.query_one("SELECT current_user::text", &[]).await?.get::<_, String>(0), integration_tests::APP_USER);
    let a_next =
        tokio::spawn(
            async move { a.query_one("SELECT current_user::text, current_setting('track_io_timing')", &[]).await },
        );
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.batch_execute("COMMIT").await?;
    let row = integration_tests::patiently("A's next statement", a_next)
        .await??
        .context("A's settings must be replayed onto the server connection without error")?;
    assert_eq!(row.get::<_, String>(0), "regress_nonsuper2");
    assert_eq!(row.get::<_, String>(1), "on");
    Ok(())
}

#[test]
fn parses_pg_regress_lines() {
    let log = "\
parallel group (3 tests):  a b c
     boolean                      ... ok          123 ms
     privileges                   ... FAILED (test process exited with exit code 2)    10397 ms
     stats_ext                    ... FAILED     1491 ms
     random                       ... failed (ignored)  12 ms
test fast_default                 ... ok          512 ms
 All 217 tests passed. 
";
    let v = parse_verdicts(log);
    assert_eq!(v.get("boolean"), Some(&Verdict::Ok));
    assert_eq!(v.get("privileges"), Some(&Verdict::Failed));
    assert_eq!(v.get("stats_ext"), Some(&Verdict::Failed));
    assert_eq!(v.get("random"), Some(&Verdict::Ignored));
    assert_eq!(v.get("fast_default"), Some(&Verdict::Ok));
    assert_eq!(v.len(), 5);
    let s = scheduled_tests("# c\ntest: a b\nignore: x\ntest: c\n");
    assert_eq!(s.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
}
