use std::collections::BTreeMap;

use super::*;

/// One exposition line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parse OpenMetrics text back into lines; checks the framing on the way
/// (every sample belongs to a family announced by `# TYPE`, `# EOF` last).
pub(crate) fn parse(text: &str) -> Vec<Line> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker: {text}");
    let mut families: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            families.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label k=\"v\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        assert!(families.iter().any(|(f, _)| name.starts_with(f.as_str())), "{name} has no # TYPE line before it");
        assert!(name.starts_with("meridian_"), "{name} lacks the prefix");
        out.push(Line { name, labels, value });
    }
    out
}

/// The value of `name` with exactly these labels.
pub(crate) fn value(lines: &[Line], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    lines.iter().find(|l| l.name == name && l.labels == want).map(|l| l.value)
}

#[test]
fn latency_buckets_sum_and_count() {
    let l = StatementLatency::default();
    for _ in 0..8 {
        l.record("s1", Role::Primary, Duration::from_micros(50));
    }
    l.record("s1", Role::Primary, Duration::from_millis(1));
    l.record("s1", Role::Primary, Duration::from_millis(3));
    l.record("s1", Role::Primary, Duration::from_secs(70));
    l.record("s2", Role::Replica, Duration::ZERO);
    let samples = l.samples();
    assert_eq!(
        samples.iter().map(|s| (s.shard.as_str(), s.role)).collect::<Vec<_>>(),
        [("s1", Role::Primary), ("s2", Role::Replica)]
    );
    let s1 = &samples[0];
    assert_eq!(s1.count, 11);
    assert!((s1.sum_seconds - (8.0 * 50e-6 + 0.001 + 0.003 + 70.0)).abs() < 1e-9, "{}", s1.sum_seconds);
    let count_at = |bound: f64| s1.buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
    assert_eq!(count_at(0.0001), Some(8));
    assert_eq!(count_at(0.001), Some(1), "1 ms lands in the 1 ms bucket");
    assert_eq!(count_at(0.005), Some(1));
    assert_eq!(count_at(60.0), Some(1), "beyond 60 s saturates into the last finite bucket");
    assert_eq!(s1.buckets.iter().map(|(_, n)| n).sum::<u64>(), s1.count);
    assert_eq!(s1.buckets.last().map(|(b, _)| *b), Some(f64::INFINITY));
    assert_eq!(samples[1].count, 1);
}

fn sample() -> Sample {
    Sample {
        version: "9.9.9",
        uptime: Duration::from_millis(2500),
        ready: true,
        clients: [3, 1, 2, 0],
        servers: vec![
            ServerSample {
                server: "s1-a".into(),
                idle: 4,
                busy: 1,
                waiting: 2,
                checkouts: 100,
                waits: 7,
                wait_seconds: 0.25,
                timeouts: 1,
                connects: 5,
                connect_errors: 0,
                discards: 1,
                routed_primary: 90,
                routed_replica: 0,
            },
            ServerSample { server: "10.0.0.9:5432".into(), ..ServerSample::default() },
        ],
        routes: RouteSample { primary: 90, replica: 10, fanout: 2, every_primary: 1, rejected: 4 },
        latency: {
            let l = StatementLatency::default();
            l.record("s1", Role::Primary, Duration::from_micros(700));
            l.record("s1", Role::Primary, Duration::from_millis(20));
            l.record("s1", Role::Replica, Duration::from_millis(2));
            l.samples()
        },
        topology_version: 7,
        topology_shards: 2,
        busy_polls: Some((10, 7)),
        raft: Some(RaftSample {
            role: RaftRole::Leader,
            term: 3,
            leader: Some(1),
            is_leader: true,
            commit_index: Some(12),
            applied_index: Some(11),
            last_log_index: Some(12),
            voters: 3,
            members: 4,
        }),
        lease: Some(LeaseState { valid: true, expires_in: Some(Duration::from_millis(800)), epoch_view: 7 }),
        reports: Some(ReportSample {
            failovers: [[2, 0, 1], [0, 1, 0], [3, 0, 0]],
            drills: [[1, 1, 0], [0, 0, 0], [0, 0, 2]],
            last_rto_seconds: [("s1".to_owned(), 1.25)].into(),
        }),
    }
}

#[test]
fn exposition_parses_back() {
    let text = encode(sample()).unwrap();
    let lines = parse(&text);
    let v = |name: &str, labels: &[(&str, &str)]| value(&lines, name, labels);
    assert_eq!(v("meridian_proxy_build_info", &[("version", "9.9.9")]), Some(1.0));
    assert_eq!(v("meridian_proxy_uptime_seconds", &[]), Some(2.5));
    assert_eq!(v("meridian_proxy_ready", &[]), Some(1.0));
    assert_eq!(v("meridian_proxy_busy_polls_total", &[("outcome", "caught")]), Some(7.0));
    assert_eq!(v("meridian_proxy_busy_polls_total", &[("outcome", "slept")]), Some(3.0));
    assert_eq!(v("meridian_proxy_client_connections", &[("state", "idle")]), Some(3.0));
    assert_eq!(v("meridian_proxy_client_connections", &[("state", "in_transaction")]), Some(2.0));
    assert_eq!(v("meridian_proxy_client_connections", &[("state", "failed_transaction")]), Some(0.0));
    assert_eq!(v("meridian_proxy_server_connections", &[("server", "s1-a"), ("state", "idle")]), Some(4.0));
    assert_eq!(v("meridian_proxy_server_connections", &[("server", "s1-a"), ("state", "busy")]), Some(1.0));
    assert_eq!(v("meridian_proxy_server_connections", &[("server", "10.0.0.9:5432"), ("state", "idle")]), Some(0.0));
    assert_eq!(v("meridian_proxy_pool_waiting_clients", &[("server", "s1-a")]), Some(2.0));
    assert_eq!(v("meridian_proxy_pool_checkouts_total", &[("server", "s1-a")]), Some(100.0));
    assert_eq!(v("meridian_proxy_pool_waits_total", &[("server", "s1-a")]), Some(7.0));
    assert_eq!(v("meridian_proxy_pool_wait_seconds_total", &[("server", "s1-a")]), Some(0.25));
    assert_eq!(v("meridian_proxy_pool_timeouts_total", &[("server", "s1-a")]), Some(1.0));
    assert_eq!(v("meridian_proxy_server_connects_total", &[("server", "s1-a")]), Some(5.0));
    assert_eq!(v("meridian_proxy_server_connect_errors_total", &[("server", "s1-a")]), Some(0.0));
    assert_eq!(v("meridian_proxy_server_discards_total", &[("server", "s1-a")]), Some(1.0));
    for (kind, n) in [("primary", 90.0), ("replica", 10.0), ("fanout", 2.0), ("every_primary", 1.0), ("rejected", 4.0)]
    {
        assert_eq!(v("meridian_proxy_routes_total", &[("kind", kind)]), Some(n), "{kind}");
    }
    assert_eq!(v("meridian_proxy_server_routes_total", &[("server", "s1-a"), ("role", "primary")]), Some(90.0));
    let h = "meridian_proxy_statement_latency_seconds";
    let p = [("shard", "s1"), ("role", "primary")];
    assert_eq!(v(&format!("{h}_count"), &p), Some(2.0));
    assert!((v(&format!("{h}_sum"), &p).unwrap() - 0.0207).abs() < 1e-9);
    let bucket = |le: &str| v(&format!("{h}_bucket"), &[p[0], p[1], ("le", le)]);
    assert_eq!(bucket("0.0005"), Some(0.0));
    assert_eq!(bucket("0.001"), Some(1.0), "buckets are cumulative");
    assert_eq!(bucket("0.025"), Some(2.0));
    assert_eq!(bucket("+Inf"), Some(2.0));
    assert_eq!(v(&format!("{h}_count"), &[("shard", "s1"), ("role", "replica")]), Some(1.0));
    assert_eq!(v("meridian_proxy_topology_version", &[]), Some(7.0));
    assert_eq!(v("meridian_proxy_topology_shards", &[]), Some(2.0));
    assert_eq!(v("meridian_consensus_role", &[("role", "leader")]), Some(1.0));
    assert_eq!(v("meridian_consensus_role", &[("role", "follower")]), Some(0.0));
    assert_eq!(v("meridian_consensus_term", &[]), Some(3.0));
    assert_eq!(v("meridian_consensus_is_leader", &[]), Some(1.0));
    assert_eq!(v("meridian_consensus_leader_id", &[]), Some(1.0));
    assert_eq!(v("meridian_consensus_commit_index", &[]), Some(12.0));
    assert_eq!(v("meridian_consensus_applied_index", &[]), Some(11.0));
    assert_eq!(v("meridian_consensus_last_log_index", &[]), Some(12.0));
    assert_eq!(v("meridian_consensus_voters", &[]), Some(3.0));
    assert_eq!(v("meridian_consensus_members", &[]), Some(4.0));
    assert_eq!(v("meridian_consensus_lease_valid", &[]), Some(1.0));
    assert_eq!(v("meridian_consensus_lease_remaining_seconds", &[]), Some(0.8));
    assert_eq!(v("meridian_consensus_lease_epoch_view", &[]), Some(7.0));
    let f = |kind, outcome| v("meridian_failovers_total", &[("kind", kind), ("outcome", outcome)]);
    assert_eq!(f("failover", "completed"), Some(2.0));
    assert_eq!(f("failover", "aborted"), Some(0.0), "every label pair is exported");
    assert_eq!(f("failover", "stopped"), Some(1.0));
    assert_eq!(f("manual_failover", "aborted"), Some(1.0));
    assert_eq!(f("switchover", "completed"), Some(3.0));
    let d = |kind, passed| v("meridian_drills_total", &[("kind", kind), ("passed", passed)]);
    assert_eq!(d("failover", "true"), Some(1.0));
    assert_eq!(d("failover", "false"), Some(1.0));
    assert_eq!(d("switchover", "unknown"), Some(0.0));
    assert_eq!(d("region_outage", "unknown"), Some(2.0));
    assert_eq!(v("meridian_last_failover_rto_seconds", &[("shard", "s1")]), Some(1.25));
    assert!(text.contains("# TYPE meridian_failovers counter\n"), "{text}");
    assert!(text.contains("# TYPE meridian_last_failover_rto_seconds gauge\n"), "{text}");
    // Counters are typed as such (the `_total` suffix is the sample's).
    assert!(text.contains("# TYPE meridian_proxy_routes counter\n"), "{text}");
    assert!(text.contains("# TYPE meridian_proxy_statement_latency_seconds histogram\n"), "{text}");
    assert!(text.contains("# UNIT meridian_proxy_statement_latency_seconds seconds\n"), "{text}");
}

#[test]
fn no_consensus_metrics_without_a_cluster() {
    let s = Sample { raft: None, lease: None, reports: None, ..sample() };
    let lines = parse(&encode(s).unwrap());
    assert!(lines.iter().all(|l| !l.name.starts_with("meridian_consensus_")));
    assert!(lines.iter().all(|l| !l.name.contains("failover") && !l.name.contains("drills")));
    assert!(lines.iter().any(|l| l.name == "meridian_proxy_routes_total"));
}

#[test]
fn a_member_without_leader_or_log_omits_them() {
    let mut s = sample();
    let raft = s.raft.as_mut().unwrap();
    raft.leader = None;
    raft.commit_index = None;
    raft.applied_index = None;
    raft.last_log_index = None;
    raft.is_leader = false;
    raft.role = RaftRole::Candidate;
    s.lease = Some(LeaseState { valid: false, expires_in: None, epoch_view: 0 });
    let lines = parse(&encode(s).unwrap());
    let v = |name: &str| value(&lines, name, &[]);
    assert_eq!(v("meridian_consensus_leader_id"), None);
    assert_eq!(v("meridian_consensus_commit_index"), None);
    assert_eq!(v("meridian_consensus_is_leader"), Some(0.0));
    assert_eq!(v("meridian_consensus_lease_valid"), Some(0.0));
    assert_eq!(v("meridian_consensus_lease_remaining_seconds"), Some(0.0));
    assert_eq!(value(&lines, "meridian_consensus_role", &[("role", "candidate")]), Some(1.0));
}

#[test]
fn nodes_of_one_process_keep_their_own_latencies() {
    let a = StatementLatency::default();
    let b = StatementLatency::default();
    a.record("s1", Role::Primary, Duration::from_millis(1));
    b.record("s1", Role::Primary, Duration::from_millis(2));
    b.record("s1", Role::Primary, Duration::from_millis(2));
    assert_eq!(a.samples()[0].count, 1);
    assert_eq!(b.samples()[0].count, 2);
}

#[test]
fn records_from_many_threads_add_up() {
    let l = std::sync::Arc::new(StatementLatency::default());
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let shard = if i % 2 == 0 { "s1" } else { "s2" };
                    l.record(shard, Role::Replica, Duration::from_micros(100));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let samples = l.samples();
    assert_eq!(samples.iter().map(|s| s.count).collect::<Vec<_>>(), [3000, 3000]);
    assert!((samples[0].sum_seconds - 0.3).abs() < 1e-9);
}
