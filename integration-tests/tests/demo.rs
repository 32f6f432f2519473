//! `meridian demo --detach` and `meridian demo stop`, through the binary:
//! the contract operators' scripts rely on (docs/demo.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use integration_tests::{meridian_bin, run_tool};
use proxy::demo::state::{DemoState, Status};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `meridian demo stop` on drop, so a failing test leaves nothing
/// running.
struct StopOnDrop {
    bin: PathBuf,
    dir: PathBuf,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.bin).args(["demo", "stop", "--dir"]).arg(&self.dir).output();
    }
}

async fn meridian(bin: &Path, args: &[&str], dir: &Path, timeout: Duration) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args).arg("--dir").arg(dir);
    run_tool(cmd, timeout).await
}

fn text(out: &std::process::Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Gone or a zombie nobody reaped yet (the detached demo process is
/// reparented to init, which may reap late).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|i| stat[i + 1..].trim_start().chars().next());
            matches!(state, Some('Z' | 'X' | 'x'))
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_demo_serves_clients_and_stop_ends_every_process() -> anyhow::Result<()> {
    integration_tests::init_tracing();
    let bin = meridian_bin()?;
    let tmp = tempfile::Builder::new().prefix("mdemo-").tempdir()?;
    let dir = tmp.path().to_path_buf();
    let _guard = StopOnDrop { bin: bin.clone(), dir: dir.clone() };

    let started = tokio::time::Instant::now();
    let out = meridian(&bin, &["demo", "--detach"], &dir, STARTUP_TIMEOUT).await?;
    anyhow::ensure!(out.status.success(), "demo --detach failed:\n{}", text(&out));
    eprintln!("demo --detach returned after {:?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);

    // demo.json: the documented fields, with their documented names.
    let raw = std::fs::read_to_string(dir.join("demo.json"))?;
    for key in [
        "\"status\"",
        "\"dir\"",
        "\"started_at\"",
        "\"app_user\"",
        "\"app_password\"",
        "\"database\"",
        "\"meridian_nodes\"",
        "\"postgres_servers\"",
        "\"client_url\"",
        "\"admin_url\": null",
        "\"http_url\": null",
        "\"shard\"",
        "\"region\"",
        "\"role\"",
        "\"host\"",
        "\"port\"",
        "\"pid\"",
        "\"data_dir\"",
    ] {
        assert!(raw.contains(key), "demo.json lacks {key}:\n{raw}");
    }
    let state = DemoState::read(&dir)?.context("no demo.json")?;
    assert_eq!(state.status, Status::Ready);
    assert_eq!(state.dir, std::fs::canonicalize(&dir)?);
    assert_eq!(state.app_user, "app");
    assert_eq!(state.meridian_nodes.len(), 1, "{raw}");
    let node = &state.meridian_nodes[0];
    assert_eq!(node.id, "meridian-1");
    assert_eq!(node.region, "local");
    assert!(node.client_url.starts_with("postgresql://app:"), "{}", node.client_url);
    assert!(node.client_url.ends_with(&format!("/{}", state.database)), "{}", node.client_url);
    assert!(stdout.contains(&format!("psql \"{}\"", node.client_url)), "{stdout}");
    let roles: Vec<(&str, &str, &str)> =
        state.postgres_servers.iter().map(|s| (s.role.as_str(), s.shard.as_str(), s.region.as_str())).collect();
    assert_eq!(roles, [("primary", "s1", "local"), ("replica", "s1", "local")], "{raw}");
    let mut pids = vec![node.pid];
    for server in &state.postgres_servers {
        assert!(server.data_dir.starts_with(&state.dir), "{raw}");
        pids.push(server.pid.context("a running server has a pid")?);
    }
    assert!(pids.iter().all(|pid| !gone(*pid)), "{pids:?} should be running");

    // A second demo in the same directory is refused.
    let second = meridian(&bin, &["demo", "--detach"], &dir, STARTUP_TIMEOUT).await?;
    assert!(!second.status.success(), "a second demo started:\n{}", text(&second));
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"), "{}", text(&second));

    // Queries and a write through Meridian.
    let config: tokio_postgres::Config = node.client_url.parse()?;
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let pets: i64 = client.query_one("SELECT count(*) FROM pets", &[]).await?.get(0);
    assert!(pets >= 200, "only {pets} pets");
    let owners: i64 = client.query_one("SELECT count(DISTINCT owner_id) FROM watch_sessions", &[]).await?.get(0);
    assert!(owners > 0);
    client.execute("INSERT INTO pets (owner_id, name, species) VALUES (1, 'Test', 'dog')", &[]).await?;
    let after: i64 = client.query_one("SELECT count(*) FROM pets", &[]).await?.get(0);
    assert_eq!(after, pets + 1);
    drop(client);
    let _ = driver.await;

    // Stop: every process listed is gone, demo.json says so.
    let stopped_at = tokio::time::Instant::now();
    let out = meridian(&bin, &["demo", "stop"], &dir, STOP_TIMEOUT).await?;
    anyhow::ensure!(out.status.success(), "demo stop failed:\n{}", text(&out));
    eprintln!("demo stop returned after {:?}", stopped_at.elapsed());
    for pid in &pids {
        assert!(gone(*pid), "pid {pid} still running after demo stop");
    }
    let state = DemoState::read(&dir)?.context("demo.json removed")?;
    assert_eq!(state.status, Status::Stopped);

    // Stopping again is fine; a directory without a demo is an error.
    let again = meridian(&bin, &["demo", "stop"], &dir, STOP_TIMEOUT).await?;
    assert!(again.status.success(), "second stop failed:\n{}", text(&again));
    let empty = tempfile::tempdir()?;
    let nothing = meridian(&bin, &["demo", "stop"], empty.path(), STOP_TIMEOUT).await?;
    assert!(!nothing.status.success(), "stop without demo.json succeeded:\n{}", text(&nothing));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("demo.json"), "{}", text(&nothing));
    Ok(())
}
