//! `meridian demo stop --dir DIR`: stop a demo from another process.
//!
//! ```text
//!   read DIR/demo.json (none: error)
//!     ─▶ SIGTERM the demo process ─▶ wait ≤ 15 s ─▶ SIGKILL ─▶ wait ≤ 5 s
//!     ─▶ stop every PostgreSQL server listed (or found in DIR/pg) still running
//!     ─▶ demo.json "status": "stopped"
//! ```
//!
//! The demo process normally stops PostgreSQL itself on SIGTERM; the second
//! step covers a demo process that was SIGKILLed. Stopping a demo that is
//! already stopped succeeds.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cluster;
use super::state::{DemoState, STATE_FILE, Status, is_alive, is_demo_process, now_rfc3339};

/// How long the demo process may take to stop after SIGTERM.
const TERM_TIMEOUT: Duration = Duration::from_secs(15);

/// How long it may take to disappear after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn stop(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = DemoState::read(dir)? else {
        anyhow::bail!("{} has no {STATE_FILE}: no demo was started in this directory (check --dir)", dir.display());
    };

    let pids: Vec<u32> = state.meridian_pids().into_iter().filter(|pid| is_demo_process(*pid)).collect();
    if !pids.is_empty() {
        println!("Stopping the Meridian demo process (pid {})...", join(&pids));
        for pid in &pids {
            signal(*pid, Signal::SIGTERM);
        }
        if !wait_gone(&pids, TERM_TIMEOUT).await {
            let left: Vec<u32> = pids.iter().copied().filter(|p| is_alive(*p)).collect();
            eprintln!("The demo process did not stop within {TERM_TIMEOUT:?}; killing pid {}", join(&left));
            for pid in &left {
                signal(*pid, Signal::SIGKILL);
            }
            if !wait_gone(&left, KILL_TIMEOUT).await {
                anyhow::bail!("pid {} is still running after SIGKILL", join(&left));
            }
        }
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
