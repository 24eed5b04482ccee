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
    /// Three hosts on this machine: watch a VM's cycles, learn them, then move it before its
    /// host saturates.
    Demo {
        /// Cycles of the watched VM observed with automatic moves paused, then learnt.
        #[arg(long, default_value_t = 6)]
        learn_cycles: u32,
        /// Cycles observed with automatic moves on.
        #[arg(long, default_value_t = 2)]
        act_cycles: u32,
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
                learn_cycles,
                act_cycles,
            } => {
                init_logging("warn");
                augurd::demo::run(augurd::demo::DemoOptions {
                    learn_cycles,
                    act_cycles,
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
