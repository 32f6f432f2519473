//! Process signals for `meridian serve`: SIGTERM drains, SIGINT stops now,
//! SIGHUP reloads the configuration file.

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::node::NodeHandle;

/// Handle signals for `node` until `stop` is cancelled.
pub async fn handle_signals(node: NodeHandle, config_path: PathBuf, stop: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        // cancel safety: Signal::recv and cancelled() are cancel safe.
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                node.shutdown();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping now");
                node.kill();
            }
            _ = hup.recv() => {
                tracing::info!(path = %config_path.display(), "SIGHUP: reloading configuration");
                match Config::load(&config_path).and_then(|c| node.reload(c)) {
                    Ok(()) => {}
                    Err(e) => tracing::error!(error = %e, "reload failed; the running configuration is unchanged"),
                }
            }
            _ = stop.cancelled() => return Ok(()),
        }
    }
}
