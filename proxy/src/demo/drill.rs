//! `meridian demo --drill failover|switchover|region`: a drill run live
//! against the demo cluster, its report printed.
//!
//! The drill is the admin console's own (`DRILL FAILOVER SHARD s1`, `DRILL
//! SWITCHOVER SHARD s1`, `DRILL REGION '<s1's primary's region>' OUTAGE`),
//! sent to a Meridian node outside the region it cuts off; that node runs
//! the drill's small write load through its own client port and measures
//! the outage and the loss. Then `SHOW DRILL <id>` is printed.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::SimpleQueryMessage;

use super::state::DemoState;

/// Which drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillKind {
    /// Kill -9 the primary of shard s1; the cluster fails it over.
    Failover,
    /// A planned switchover of shard s1 (no client error expected).
    Switchover,
    /// Cut off the region of s1's primary (its servers and its Meridian
    /// node).
    Region,
}

/// The shard the drills exercise.
const SHARD: &str = "s1";

/// Run `kind` against the demo described by `state` and print the report.
pub async fn run(state: &DemoState, kind: DrillKind) -> anyhow::Result<()> {
    let first = state.meridian_nodes.first().context("demo.json lists no Meridian node")?;
    let console = connect(&admin_url(first)).await?;
    let shards = rows(&console, "SHOW SHARDS").await?;
    // SHOW SHARDS: name, epoch, primary, ...
    let primary = shards
        .iter()
        .find(|r| r.first().and_then(Option::as_deref) == Some(SHARD))
        .and_then(|r| r.get(2).cloned().flatten())
        .context("shard s1 has no primary")?;
    let region = state
        .postgres_servers
        .iter()
        .find(|s| s.name == primary)
        .map(|s| s.region.clone())
        .context("s1's primary is not one of the demo's servers")?;
    let (statement, node) = match kind {
        DrillKind::Failover => (format!("DRILL FAILOVER SHARD {SHARD}"), first),
        DrillKind::Switchover => (format!("DRILL SWITCHOVER SHARD {SHARD}"), first),
        DrillKind::Region => {
            let outside = state
                .meridian_nodes
                .iter()
                .find(|n| n.region != region)
                .context("every Meridian node is in the region of s1's primary")?;
            (format!("DRILL REGION '{region}' OUTAGE"), outside)
        }
    };
    eprintln!(
        "\n{statement}\n  on {} ({}); s1's primary is {primary} in {region}. The node writes 20 rows a second to s1\n  \
         through its own client port while the drill runs, and measures what an application would see...",
        node.id, node.region
    );
    let started = tokio::time::Instant::now();
    let console = connect(&admin_url(node)).await?;
    let report = rows(&console, &statement).await.with_context(|| format!("{statement} on {}", node.id))?;
    let id = report.first().and_then(|r| r.first().cloned().flatten()).context("the drill returned no report")?;
    eprintln!("done in {:.1} s. SHOW DRILL {id}:\n", started.elapsed().as_secs_f64());
    let detail = rows(&console, &format!("SHOW DRILL {id}")).await?;
    // item, value, at, since_start_ms
    let width = detail.iter().filter_map(|r| r.first().cloned().flatten()).map(|s| s.len()).max().unwrap_or(0);
    for r in &detail {
        let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        if cell(0) == "phase" {
            println!("  {:<width$}  +{:>6} ms  {}", "phase", cell(3), cell(1));
        } else {
            println!("  {:<width$}  {}", cell(0), cell(1));
        }
    }
    Ok(())
}

fn admin_url(node: &super::state::MeridianNode) -> String {
    node.admin_url.clone().unwrap_or_else(|| super::admin_url(&node.client_url))
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse().with_context(|| format!("parsing {url}"))?;
    config.connect_timeout(Duration::from_secs(10)).application_name("meridian-demo-drill");
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    for m in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    Ok(out)
}
