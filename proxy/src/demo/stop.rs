//! `meridian demo stop --dir DIR`: stop a demo from another process.
//!
//! ```text
//!   read DIR/demo.json (none: error)
//!     ─▶ SIGTERM the demo process ─▶ wait ≤ 15 s ─▶ SIGKILL ─▶ wait ≤ 5 s
//!     ─▶ the same for every Meridian node process listed still running
//!     ─▶ stop every PostgreSQL server listed (or found in DIR/pg) still running
//!     ─▶ demo.json "status": "stopped"
//! ```
//!
//! The demo process normally stops its nodes and PostgreSQL itself on
//! SIGTERM; the later steps cover a demo process that was SIGKILLed. Stopping a demo that is
//! already stopped succeeds.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cluster;
use super::state::{DemoState, STATE_FILE, Status, is_alive, is_demo_process, is_node_process, now_rfc3339};

/// How long the demo process may take to stop after SIGTERM.
const TERM_TIMEOUT: Duration = Duration::from_secs(15);

/// How long it may take to disappear after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn stop(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = DemoState::read(dir)? else {
        anyhow::bail!("{} has no {STATE_FILE}: no demo was started in this directory (check --dir)", dir.display());
    };

    if is_demo_process(state.pid) {
        println!("Stopping the Meridian demo process (pid {})...", state.pid);
        terminate(&[state.pid], "the demo process").await?;
    }
    // Nodes left by a demo process that was killed (or that did not stop
    // them): only processes that are still this demo's nodes.
    let nodes: Vec<u32> = state.meridian_nodes.iter().map(|n| n.pid).filter(|pid| is_node_process(*pid, dir)).collect();
    if !nodes.is_empty() {
        println!("Stopping Meridian node processes (pid {})...", join(&nodes));
        stop_nodes(dir, &nodes).await?;
    }

    // The demo process may have rewritten the file while stopping.
    let state = DemoState::read(dir)?.unwrap_or(state);
    let errors = cluster::stop_servers(dir, &state.postgres_servers).await;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("stopping the demo's PostgreSQL servers"));
    }

    mark_stopped(dir)?;
    println!("The demo in {} is stopped. Its files are kept.", dir.display());
    Ok(())
}

/// Stops the Meridian node processes `pids` of the demo in `dir`
/// (SIGTERM, then SIGKILL).
pub async fn stop_nodes(dir: &Path, pids: &[u32]) -> anyhow::Result<()> {
    let pids: Vec<u32> = pids.iter().copied().filter(|pid| is_node_process(*pid, dir)).collect();
    terminate(&pids, "Meridian node").await
}

/// SIGTERM, wait up to [`TERM_TIMEOUT`], then SIGKILL whatever is left.
async fn terminate(pids: &[u32], what: &str) -> anyhow::Result<()> {
    for pid in pids {
        signal(*pid, Signal::SIGTERM);
    }
    if !wait_gone(pids, TERM_TIMEOUT).await {
        let left: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
        eprintln!("{what} did not stop within {TERM_TIMEOUT:?}; killing pid {}", join(&left));
        for pid in &left {
            signal(*pid, Signal::SIGKILL);
        }
        if !wait_gone(&left, KILL_TIMEOUT).await {
            anyhow::bail!("pid {} is still running after SIGKILL", join(&left));
        }
    }
    Ok(())
}

/// Sets `"status": "stopped"` (and `stopped_at` if missing). Every other
/// field stays as written, including `error` if startup had failed and
/// fields this version does not know.
fn mark_stopped(dir: &Path) -> anyhow::Result<()> {
    let mut state = DemoState::read(dir)?.with_context(|| format!("{} disappeared", DemoState::path(dir).display()))?;
    state.status = Status::Stopped;
    state.stopped_at.get_or_insert_with(now_rfc3339);
    state.write(dir)
}

fn signal(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    if let Err(e) = kill(Pid::from_raw(raw), sig) {
        tracing::debug!(pid, signal = %sig, error = %e, "signal not delivered");
    }
}

async fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if pids.iter().all(|pid| !is_alive(*pid)) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn join(pids: &[u32]) -> String {
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}
