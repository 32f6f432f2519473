//! `DIR/demo.json`: what a demo started, for operators, scripts and
//! `meridian demo stop`, plus the process checks built on it.
//!
//! The field names are a public contract (docs/demo.md): new fields may be
//! added, existing ones are never renamed. Readers therefore accept fields
//! they do not know and keep them (`extra`) when they rewrite the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The state file's name inside the demo directory.
pub const STATE_FILE: &str = "demo.json";

/// Where a demo is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The demo process runs and is bringing things up.
    Starting,
    /// Every part accepts connections.
    Ready,
    /// The demo process is shutting things down.
    Stopping,
    /// Everything it started has stopped.
    Stopped,
    /// Startup failed; `error` says why. What had started was stopped.
    Failed,
    /// A state this version does not know (written by a newer one).
    #[serde(other)]
    Unknown,
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoState {
    pub status: Status,
    /// The demo directory (absolute).
    pub dir: PathBuf,
    /// The demo process: it starts the Meridian nodes (each its own
    /// process, `meridian_nodes[].pid`), runs the relays between regions
    /// and owns the PostgreSQL servers.
    pub pid: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// Why startup failed (with `status = "failed"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub app_user: String,
    pub app_password: String,
    pub database: String,
    #[serde(default)]
    pub meridian_nodes: Vec<MeridianNode>,
    #[serde(default)]
    pub postgres_servers: Vec<PostgresServer>,
    /// The generated configuration of the first node (each node's is
    /// `meridian_nodes[].config_file`) and the users file they share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// Where the demo process logs when detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// Fields this version does not know, kept when the file is rewritten.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One Meridian node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeridianNode {
    pub id: String,
    pub region: String,
    /// For applications: `postgresql://app:app@127.0.0.1:PORT/DB`.
    pub client_url: String,
    /// The admin console: database `meridian` on the client port.
    pub admin_url: Option<String>,
    /// `/metrics`, `/healthz`, `/readyz`: `http://127.0.0.1:PORT`.
    pub http_url: Option<String>,
    /// The process serving the node (`meridian serve --config ...`).
    pub pid: u32,
    /// Its Raft member id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<u64>,
    /// Its Raft endpoint as the other members reach it (through the
    /// demo's relays): `http://127.0.0.1:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_url: Option<String>,
    /// Where its Raft endpoint listens itself (no added latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_listen: Option<String>,
    /// Its generated configuration, log and Raft data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One PostgreSQL server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostgresServer {
    /// Such as `s1-primary`, `s1-replica-eu-west`: the node name in
    /// Meridian's topology (the data directory keeps the harness's
    /// numbering, `pg/s1-replica-1`).
    pub name: String,
    pub shard: String,
    pub region: String,
    /// `primary` or `replica`.
    pub role: String,
    /// The server's own address: direct access, bypassing Meridian and the
    /// simulated latency.
    pub host: String,
    pub port: u16,
    /// The postmaster, while it runs.
    pub pid: Option<u32>,
    pub data_dir: PathBuf,
    /// The app user straight to this server, bypassing Meridian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// The port (on `host`) through which every Meridian node reaches this
    /// server: its address in the topology. It delays each node's
    /// connections by that node's distance (`latency_ms_by_node`); any
    /// other client's like `meridian-1`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_port: Option<u16>,
    /// The round-trip time added between `meridian-1` and this server, in
    /// milliseconds (half of it each way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The round-trip time added between each Meridian node (by id) and
    /// this server, in milliseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latency_ms_by_node: BTreeMap<String, f64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl DemoState {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads `DIR/demo.json`; `Ok(None)` if there is none.
    pub fn read(dir: &Path) -> anyhow::Result<Option<DemoState>> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(state))
    }

    /// Writes `DIR/demo.json` atomically (readers never see half a file).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(format!(".{STATE_FILE}.{}.tmp", std::process::id()));
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    }

    /// Every pid this state names as Meridian's: the demo process, then
    /// the node processes.
    pub fn meridian_pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        for node in &self.meridian_nodes {
            if !pids.contains(&node.pid) {
                pids.push(node.pid);
            }
        }
        pids
    }

    /// The pid of a live demo process recorded here, if any.
    pub fn live_pid(&self) -> Option<u32> {
        self.meridian_pids().into_iter().find(|pid| is_demo_process(*pid))
    }
}

/// Whether `pid` is alive (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    if pid <= 1 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may hold spaces and parentheses.
    let state = stat.rfind(')').and_then(|i| stat.get(i + 1..)).and_then(|rest| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

/// Whether `pid` is a live `meridian demo` process (guards against a
/// recorded pid that was reused by an unrelated program).
pub fn is_demo_process(pid: u32) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline.split(|b| *b == 0).any(|arg| arg == b"demo")
}

/// Whether `pid` is a live `meridian serve` process of the demo in `dir`
/// (its config file is under `dir`), not a reused pid.
pub fn is_node_process(pid: u32, dir: &Path) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let dir = dir.as_os_str().as_encoded_bytes();
    args.contains(&b"serve".as_slice()) && args.iter().any(|arg| arg.starts_with(dir))
}

/// The current time as RFC 3339 in UTC, second precision.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let (year, month, day, h, m, sec) = crate::civil_time::utc_parts(secs as i64);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{sec:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn our_process_is_alive_and_zero_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(0));
    }

    #[test]
    fn unknown_fields_and_statuses_are_tolerated() {
        let json = r#"{"status": "rebalancing", "dir": "/tmp/x", "pid": 7, "started_at": "t",
            "app_user": "app", "app_password": "app", "database": "demo", "future_field": 1,
            "meridian_nodes": [{"id": "meridian-1", "region": "local", "client_url": "u",
              "admin_url": null, "http_url": null, "pid": 8, "extra": true}]}"#;
        let state: DemoState = serde_json::from_str(json).unwrap();
        assert_eq!(state.status, Status::Unknown);
        assert_eq!(state.meridian_pids(), vec![7, 8]);
        let again = serde_json::to_string(&state).unwrap();
        assert!(again.contains(r#""future_field":1"#), "{again}");
        assert!(again.contains(r#""extra":true"#), "{again}");
    }
}
