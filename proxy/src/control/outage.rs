//! `DRILL REGION 'r' OUTAGE`.

use std::time::Duration;

use consensus::state::Report;
use tokio_util::sync::CancellationToken;

use super::ops::ControlError;
use crate::cluster::Cluster;
use crate::node::Shared;

pub(super) async fn drill(
    _cluster: &Cluster,
    _shared: &Shared,
    _write_lease: Duration,
    region: &str,
    _stop: &CancellationToken,
) -> Result<Report, ControlError> {
    Err(ControlError::Refused(format!("DRILL REGION '{region}' OUTAGE: being built")))
}
