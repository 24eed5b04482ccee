//! `augurd`: the Augur host daemon.
#![forbid(unsafe_code)]

use anyhow::Context;
use augurd::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

const DEFAULT_CONFIG: &str = "/etc/augur/augurd.toml";

#[derive(Debug, Parser)]
#[command(
    name = "augurd",
    version,
    about = "Augur host daemon: profiles the VMs of a KVM host"
)]
struct Cli {
    /// Config file (TOML). Defaults to /etc/augur/augurd.toml when it exists.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Check the config file and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Start a host with three microVMs and show what Augur senses, live.
    Demo {
        /// How long to run; 0 runs until Ctrl-C.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Sampling interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Admin socket path (default: inside the demo's temporary directory).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Ok(Config::load(std::path::Path::new(DEFAULT_CONFIG))?)
        }
        None => Ok(Config::default()),
    }
}

fn init_logging(filter: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let result = (|| -> anyhow::Result<()> {
        let config = load_config(cli.config.as_ref())?;
        if cli.check_config {
            println!("config ok");
            return Ok(());
        }
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => {
                init_logging(&config.log);
                augurd::daemon::run(config)
            }
            Command::Demo {
                seconds,
                interval_ms,
                socket,
            } => {
                init_logging("warn");
                if !(100..=60_000).contains(&interval_ms) {
                    anyhow::bail!("--interval-ms must be within 100..=60000");
                }
                augurd::demo::run(augurd::demo::DemoOptions {
                    seconds,
                    interval_ms,
                    socket,
                })
                .context("demo failed")
                .map(|_| ())
            }
        }
    })();
    if let Err(error) = result {
        eprintln!("augurd: error: {error:#}");
        std::process::exit(1);
    }
}
