//! `cargo run -p benches --bin failover_rto -- --runs 10`: the issue-4
//! failover measurement. Each run starts a fresh bed (a Meridian cluster
//! node in front of a primary and two synchronous standbys, see
//! `integration_tests::failover`), kills the primary with SIGKILL under
//! continuous writes through Meridian, and records the client-visible
//! write outage (the longest gap between two acknowledged writes), the time
//! until the new primary is committed, and the acknowledged writes lost
//! (RPO). Meridian's default timings unless `--quick`. Prints one line per run, then median and worst, and writes a
//! markdown table to `--out` when given.

use std::time::Duration;

use clap::Parser;
use integration_tests::failover::Timings;

#[derive(Parser)]
struct Args {
    /// How many kill -9 runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Write the results as markdown here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// The tests' fast detection (probe every 100 ms, failure_timeout 1 s)
    /// instead of Meridian's defaults (500 ms, 2 s).
    #[arg(long)]
    quick: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timings = if args.quick { Timings::QUICK } else { Timings::DEFAULT };
    let mut table = String::from(
        "| run | write outage (ms) | new primary committed (ms) | acknowledged | lost | errors | phases |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let (mut outages, mut promoted, mut lost_total) = (Vec::new(), Vec::new(), 0usize);
    for i in 1..=args.runs {
        let run = integration_tests::failover::kill_primary_under_writes(timings).await?;
        // One row per run: printed as it comes, and kept for the table.
        let cells = [
            format!("{:.0}", ms(run.outage)),
            format!("{:.0}", ms(run.promoted_after)),
            run.acknowledged.to_string(),
            run.lost.len().to_string(),
            run.errors.len().to_string(),
            run.phases.clone(),
        ];
        println!("run {i}: {}", cells.join(" | "));
        table.push_str(&format!("| {i} | {} |\n", cells.join(" | ")));
        outages.push(ms(run.outage));
        promoted.push(ms(run.promoted_after));
        lost_total += run.lost.len();
    }
    let worst = outages.iter().copied().fold(0.0, f64::max);
    let summary = format!(
        "{} runs ({timings:?}): write outage median {:.0} ms, worst {worst:.0} ms; new primary median {:.0} ms; acknowledged writes lost: {lost_total}",
        args.runs,
        median(outages.clone()),
        median(promoted)
    );
    println!("{summary}");
    if let Some(out) = args.out {
        std::fs::write(out, format!("{summary}\n\n{table}"))?;
    }
    Ok(())
}
