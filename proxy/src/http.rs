//! The node's HTTP endpoint (`[http] listen`): `GET /metrics` (Prometheus,
//! OpenMetrics text), `GET /healthz` (the process serves) and `GET /readyz`
//! (the node should get clients).
//!
//! ```text
//!   Node::bind ──bind()──▶ TcpListener (a bad http.listen fails the start)
//!   Node::serve ──serve(listener, shared, stop)──▶ axum, until `stop`
//!        /metrics ─▶ cluster status (bounded wait) ─▶ metrics::Sample ─▶ text
//!        /healthz ─▶ 200 "ok", or 503 "shutting down" once draining
//!        /readyz  ─▶ readiness(): 200 "ready", or 503 and the reason
//! ```
//!
//! The endpoint keeps answering while the node drains (SIGTERM), so that a
//! load balancer sees `503 shutting down` rather than a refused connection;
//! the node stops it once its sessions have ended.
//!
//! Nothing here changes the node: every handler only reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::metrics::{self, Sample};
use crate::node::Shared;

/// How long `/metrics` waits for the Raft member's status before it
/// answers without the `meridian_consensus_*` values it could not read
/// (the lease values are read without waiting and are always there).
const RAFT_STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Bind the endpoint's listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("http.listen {addr}: {e}"))))
}

/// Serve the endpoint on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "serving /metrics, /healthz, /readyz");
    }
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::warn!(error = %e, "http endpoint failed");
    }
}

/// The endpoint's routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

/// Why the node should not get clients now (the one-line body of a 503
/// from `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("shutting down")]
    ShuttingDown,
    #[error("no topology yet")]
    NoTopology,
    #[error("no write lease yet")]
    NoLease,
    #[error("write lease expired")]
    LeaseExpired,
}

/// Ready: the node accepts clients (not draining), knows a topology with at
/// least one shard (on a cluster node, the committed one), and, on a
/// cluster node, holds a valid write lease.
pub(crate) fn readiness(shared: &Shared) -> Result<(), NotReady> {
    if shared.drain.is_cancelled() {
        return Err(NotReady::ShuttingDown);
    }
    match &shared.cluster {
        None => {
            if shared.topology.borrow().shards.is_empty() {
                return Err(NotReady::NoTopology);
            }
        }
        Some(cluster) => {
            // The file's topology is only a seed here: until it (or any
            // topology) is committed, the node routes nothing.
            if cluster.state().shards.is_empty() {
                return Err(NotReady::NoTopology);
            }
            let lease = cluster.lease();
            if !lease.valid {
                return Err(if lease.epoch_view == 0 { NotReady::NoLease } else { NotReady::LeaseExpired });
            }
        }
    }
    Ok(())
}

async fn healthz(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.drain.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    match readiness(&shared) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let status = match &shared.cluster {
        Some(c) => tokio::time::timeout(RAFT_STATUS_TIMEOUT, c.status()).await.ok(),
        None => None,
    };
    let sample = Sample::of(&shared, status.as_ref(), readiness(&shared).is_ok());
    match metrics::encode(sample) {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => {
            tracing::warn!("metrics encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
