use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::metrics::tests::{parse, value};

/// A node's config: one backend nobody listens on (no PostgreSQL needed),
/// the HTTP endpoint on a free port, and `extra` sections.
fn config(dir: &std::path::Path, extra: &str) -> Config {
    std::fs::write(dir.join("users.toml"), "[[user]]\nname = \"app\"\nauth = \"trust\"\n").unwrap();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = format!(
        "[node]\nname = \"m1\"\nregion = \"eu\"\n\
         [listen]\naddress = \"127.0.0.1:0\"\n\
         [auth]\nusers_file = \"users.toml\"\n\
         [backend]\naddress = \"{unused}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [shutdown]\ngrace = \"5s\"\n{extra}"
    );
    Config::parse(&text, dir).unwrap()
}

/// `GET path` over HTTP/1.1: status, headers (lower-cased), body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn health_ready_and_metrics_on_a_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::Node::bind(config(dir.path(), "")).await.unwrap();
    let http = node.http_addr().expect("[http] listen was given");
    let pg = node.local_addr().unwrap();
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());

    let (status, _, body) = get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, head, body) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{head}");
    let lines = parse(&body);
    assert_eq!(value(&lines, "meridian_proxy_ready", &[]), Some(1.0));
    assert_eq!(value(&lines, "meridian_proxy_topology_shards", &[]), Some(1.0));
    assert_eq!(value(&lines, "meridian_proxy_client_connections", &[("state", "idle")]), Some(0.0));
    assert_eq!(value(&lines, "meridian_proxy_routes_total", &[("kind", "primary")]), Some(0.0));
    assert!(value(&lines, "meridian_proxy_uptime_seconds", &[]).is_some());
    assert!(lines.iter().all(|l| !l.name.starts_with("meridian_consensus_")), "no cluster, no raft metrics");
    assert_eq!(get(http, "/nothing-here").await.0, 404);

    // A client still in its startup keeps the node draining: meanwhile
    // the endpoint says so.
    let pending = TcpStream::connect(pg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.shutdown();
    let (status, _, body) = get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (503, "shutting down\n"));
    let (status, _, body) = get(http, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "shutting down\n"));
    drop(pending);
    tokio::time::timeout(Duration::from_secs(15), serve).await.unwrap().unwrap();
    assert!(TcpStream::connect(http).await.is_err(), "the endpoint stops with the node");
}

#[tokio::test]
async fn a_taken_http_address_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(dir.path(), "");
    c.http_listen = Some(taken.local_addr().unwrap());
    let err = crate::Node::bind(c).await.err().expect("the address is in use");
    assert!(err.to_string().contains("http.listen"), "{err}");
}

/// `[cluster]` with this node as member 1 and `others` as further peers
/// (nobody listens for them), and where member 1's Raft listens.
fn cluster_section(others: &[u64]) -> (String, SocketAddr) {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let raft = free();
    let mut s = format!(
        "[cluster]\nmember_id = 1\nraft_listen = \"{raft}\"\ndata_dir = \"raft\"\n\
         heartbeat_interval = \"50ms\"\nelection_timeout = \"300ms\"\nwrite_lease = \"500ms\"\n\
         [[cluster.peer]]\nid = 1\nname = \"m1\"\nregion = \"eu\"\nraft_addr = \"http://{raft}\"\n\
         client_addr = \"127.0.0.1:1\"\n"
    );
    for id in others {
        s.push_str(&format!(
            "[[cluster.peer]]\nid = {id}\nname = \"m{id}\"\nregion = \"eu\"\nraft_addr = \"http://{}\"\n\
             client_addr = \"127.0.0.1:1\"\n",
            free()
        ));
    }
    (s, raft)
}

#[tokio::test]
async fn a_cluster_node_without_quorum_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    // Member 2 never answers: member 1 cannot be elected, nothing commits.
    let node = crate::Node::bind(config(dir.path(), &cluster_section(&[2]).0)).await.unwrap();
    let http = node.http_addr().unwrap();
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());

    for _ in 0..5 {
        let (status, _, body) = get(http, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "no topology yet\n"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(http, "/healthz").await.0, 200);
    let (status, _, body) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    let lines = parse(&body);
    let v = |name: &str| value(&lines, name, &[]);
    assert_eq!(v("meridian_proxy_ready"), Some(0.0));
    assert_eq!(v("meridian_proxy_topology_shards"), Some(0.0));
    assert_eq!(v("meridian_consensus_is_leader"), Some(0.0));
    assert_eq!(v("meridian_consensus_leader_id"), None);
    assert_eq!(v("meridian_consensus_voters"), Some(2.0));
    assert_eq!(v("meridian_consensus_lease_valid"), Some(0.0));
    assert_eq!(v("meridian_consensus_lease_epoch_view"), Some(0.0));

    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(15), serve).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_cluster_node_is_ready_once_it_holds_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, raft) = cluster_section(&[]);
    let node = crate::Node::bind(config(dir.path(), &cluster)).await.unwrap();
    let http = node.http_addr().unwrap();
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());

    // A one-member group elects itself, commits the seed topology and
    // takes its lease within moments; until then /readyz says why not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = get(http, "/readyz").await;
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert_eq!(status, 503);
        assert!(["no topology yet\n", "no write lease yet\n"].contains(&body.as_str()), "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, body) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    let lines = parse(&body);
    let v = |name: &str| value(&lines, name, &[]);
    assert_eq!(v("meridian_consensus_is_leader"), Some(1.0));
    assert_eq!(v("meridian_consensus_leader_id"), Some(1.0));
    assert_eq!(value(&lines, "meridian_consensus_role", &[("role", "leader")]), Some(1.0));
    assert!(v("meridian_consensus_term").is_some_and(|t| t >= 1.0));
    assert_eq!(v("meridian_consensus_voters"), Some(1.0));
    assert!(v("meridian_consensus_commit_index").is_some_and(|i| i >= 1.0));
    assert!(v("meridian_consensus_applied_index").is_some());
    assert_eq!(v("meridian_consensus_lease_valid"), Some(1.0));
    assert!(v("meridian_consensus_lease_remaining_seconds").is_some_and(|s| s > 0.0 && s <= 0.5));
    assert_eq!(v("meridian_proxy_topology_shards"), Some(1.0));
    assert_eq!(v("meridian_proxy_ready"), Some(1.0));
    // No report yet: every counter is there, at 0; no RTO gauge.
    let failovers = |lines: &[crate::metrics::tests::Line], kind, outcome| {
        value(lines, "meridian_failovers_total", &[("kind", kind), ("outcome", outcome)])
    };
    assert_eq!(failovers(&lines, "switchover", "completed"), Some(0.0));
    assert_eq!(value(&lines, "meridian_drills_total", &[("kind", "failover"), ("passed", "true")]), Some(0.0));
    assert!(lines.iter().all(|l| l.name != "meridian_last_failover_rto_seconds"));

    // A recorded switchover and a drill are counted at the next scrape.
    use consensus::state::{Report, ReportKind};
    let mut switchover = Report::new(ReportKind::Switchover, Some("default"), None);
    switchover.rto_ms = Some(1500);
    crate::admin::cluster_tests::record_report(raft, "boss", switchover).await;
    let mut drill = Report::new(ReportKind::DrillFailover, Some("default"), None);
    drill.passed = Some(false);
    crate::admin::cluster_tests::record_report(raft, "boss", drill).await;
    let (status, _, body) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    let lines = parse(&body);
    assert_eq!(failovers(&lines, "switchover", "completed"), Some(1.0));
    assert_eq!(failovers(&lines, "failover", "completed"), Some(0.0));
    assert_eq!(value(&lines, "meridian_drills_total", &[("kind", "failover"), ("passed", "false")]), Some(1.0));
    assert_eq!(value(&lines, "meridian_last_failover_rto_seconds", &[("shard", "default")]), Some(1.5));

    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(15), serve).await.unwrap().unwrap();
}
