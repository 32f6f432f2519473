//! The `meridian` binary: parses arguments and hands over to the library.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "meridian", version, about = "Multi-region PostgreSQL federation proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one Meridian node.
    Serve {
        /// The node's configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print a secret for the users file; reads the password from standard input.
    Passwd {
        /// User name (md5 secrets are salted with it).
        #[arg(long)]
        user: String,
        /// scram-sha-256 or md5.
        #[arg(long, default_value = "scram-sha-256")]
        method: String,
    },
    /// Run a local demo cluster.
    Demo(proxy::demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Passwd { user, method } => {
            let kind = method.parse::<proxy::auth::SecretKind>()?;
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password).context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!password.is_empty(), "empty password on stdin");
            println!("{}", proxy::auth::make_secret(kind, &user, password));
            Ok(())
        }
        Command::Demo(args) => proxy::demo::main(args),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let config = proxy::Config::load(&config_path)?;
    let runtime = proxy::busy_poll::runtime(config.node.worker_threads, config.node.busy_poll)?;
    runtime.block_on(async {
        let node = proxy::Node::bind(config).await?;
        node.set_config_path(config_path.clone());
        let stop = CancellationToken::new();
        let signals = tokio::spawn(proxy::signals::handle_signals(node.handle(), config_path, stop.clone()));
        node.serve().await;
        stop.cancel();
        signals.await??;
        Ok(())
    })
}
