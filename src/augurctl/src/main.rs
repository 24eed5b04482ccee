//! `augurctl`: talks to augurd over its admin socket.
#![forbid(unsafe_code)]

mod eval;
mod simulate;
mod time_arg;

use augur_admin::{render, AdminClient, ClientError, ExportFormat, Reply, Request};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "augurctl",
    version,
    about = "Administer augurd, the Augur host daemon"
)]
struct Cli {
    /// Admin socket of augurd.
    #[arg(
        long,
        global = true,
        env = "AUGUR_SOCKET",
        default_value = "/run/augur/augurd.sock"
    )]
    socket: PathBuf,
    /// Print the reply as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Daemon health and host capabilities.
    Status,
    /// The VMs and what each is doing now.
    Vms,
    /// One VM's behavioural profile: current window and recent history.
    Profile {
        /// VM id or name.
        vm: String,
        /// Windows of history to show.
        #[arg(long, default_value_t = 10)]
        history: usize,
    },
    /// Forecasts of a VM's CPU, memory, disk and network, with upper bounds and its workload class.
    Predict {
        /// VM id or name (any VM in the store, running or not).
        vm: String,
    },
    /// Live-migrate a libvirt domain to another libvirt daemon (peer to peer).
    Migrate {
        /// VM id or name.
        vm: String,
        /// Destination libvirt URI, e.g. qemu+tcp://host2/system.
        #[arg(long)]
        to: String,
        /// Where QEMU's migration stream goes, e.g. tcp://10.0.0.2:49152 (libvirt picks if absent).
        #[arg(long)]
        migrate_uri: Option<String>,
        /// pre-copy, auto-converge or post-copy (the cost model picks if absent).
        #[arg(long)]
        method: Option<String>,
        /// Domain XML to define on the destination, when its paths differ from the source's.
        #[arg(long)]
        dest_xml: Option<PathBuf>,
    },
    /// The mesh: this host and its peers, their capacity, bookings and headroom.
    Peers,
    /// The moves this host's orchestrator tried, with negotiation, timings and predictions.
    Migrations,
    /// Why the orchestrator did (or did not) move a VM: inputs, forecast, alternatives rejected.
    Explain {
        /// VM name.
        vm: String,
    },
    /// Maintenance: this host takes no VMs and moves every VM to its peers.
    Drain {
        /// This host's mesh name (a check against draining the wrong host).
        host: Option<String>,
    },
    /// Stop automatic moves (decisions are still made and explained).
    Pause,
    /// Restart automatic moves (and end a drain).
    Resume,
    /// Start or stop microVMs.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// The embedded time-series store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Replay real traces on a simulated cluster under a balancing policy (no daemon needed).
    Simulate(simulate::SimulateArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `augurctl man > augurctl.1`.
    Man,
    /// Offline evaluation on real traces (no daemon needed).
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Forecast accuracy of every model: MAE, MASE and coverage on the last 10% of each series.
    Forecast(eval::ForecastArgs),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Size, series, samples, time span and bytes per sample.
    Stats,
    /// One VM's stored series (the VM may have stopped).
    Export {
        /// VM id or name.
        vm: String,
        /// Start: unix seconds, "now", or relative like -30m, -6h, -7d.
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive), same forms as --from.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
enum VmCommand {
    /// Start a microVM from a spec file (TOML).
    Start { spec: PathBuf },
    /// Stop a VM by id or name.
    Stop { vm: String },
}

fn request(command: &Command) -> anyhow::Result<Request> {
    Ok(match command {
        Command::Status => Request::Status,
        Command::Vms => Request::Vms,
        Command::Predict { vm } => Request::Predict { vm: vm.clone() },
        Command::Profile { vm, history } => Request::Profile {
            vm: vm.clone(),
            history: Some(*history),
        },
        Command::Vm {
            command: VmCommand::Start { spec },
        } => Request::VmStart {
            spec: std::fs::read_to_string(spec)
                .map_err(|e| anyhow::anyhow!("cannot read spec file {}: {e}", spec.display()))?,
            origin: Some(spec.display().to_string()),
        },
        Command::Vm {
            command: VmCommand::Stop { vm },
        } => Request::VmStop { vm: vm.clone() },
        Command::Store {
            command: StoreCommand::Stats,
        } => Request::StoreStats,
        Command::Peers => Request::Peers,
        Command::Migrations => Request::Migrations,
        Command::Explain { vm } => Request::Explain { vm: vm.clone() },
        Command::Drain { host } => Request::Drain { host: host.clone() },
        Command::Pause => Request::Pause,
        Command::Resume => Request::Resume,
        Command::Migrate {
            vm,
            to,
            migrate_uri,
            method,
            dest_xml,
        } => Request::Migrate(augur_admin::MigrateRequest {
            vm: vm.clone(),
            to: to.clone(),
            migrate_uri: migrate_uri.clone(),
            method: method.clone(),
            dest_xml: dest_xml
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("cannot read domain XML {}: {e}", p.display()))
                })
                .transpose()?,
        }),
        Command::Eval { .. }
        | Command::Simulate(_)
        | Command::Completions { .. }
        | Command::Man => {
            anyhow::bail!("this command runs locally, not through augurd")
        }
        Command::Store {
            command:
                StoreCommand::Export {
                    vm,
                    from,
                    to,
                    format,
                },
        } => {
            let now = time_arg::now_ns();
            Request::StoreExport {
                vm: vm.clone(),
                from_ns: time_arg::parse(from, now).map_err(|e| anyhow::anyhow!("--from: {e}"))?,
                to_ns: time_arg::parse(to, now).map_err(|e| anyhow::anyhow!("--to: {e}"))?,
                format: match format {
                    Format::Csv => ExportFormat::Csv,
                    Format::Json => ExportFormat::Json,
                },
            }
        }
    })
}

fn human(reply: &Reply) -> String {
    match reply {
        Reply::Status(status) => render::status(status),
        Reply::Vms { vms } if vms.is_empty() => "no VMs\n".into(),
        Reply::Vms { vms } => render::vm_table(vms),
        Reply::Profile(profile) => render::profile(profile),
        Reply::VmStarted { vm } => format!("started VM {} ({})\n", vm.id, vm.name),
        Reply::VmStopped { id, name } => format!("stopped VM {id} ({name})\n"),
        Reply::StoreStats(stats) => render::store_stats(stats),
        Reply::Predict(predict) => render::predict(predict),
        Reply::Migrated(migration) => render::migration(migration),
        Reply::Peers(peers) => render::peers(peers),
        Reply::Migrations { migrations } => render::migrations(migrations),
        Reply::Explain { vm, decisions } => render::explain(vm, decisions),
        Reply::Orchestrator {
            host_id,
            paused,
            draining,
        } => format!(
            "host {host_id}: automatic moves {}{}\n",
            if *paused { "paused" } else { "on" },
            if *draining { ", draining" } else { "" }
        ),
        Reply::Export { content, .. } => {
            let mut text = content.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Command::Eval {
        command: EvalCommand::Forecast(args),
    } = &cli.command
    {
        return eval::forecast(args, cli.json);
    }
    if let Command::Simulate(args) = &cli.command {
        return simulate::run(args, cli.json);
    }
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "augurctl", &mut std::io::stdout());
        return Ok(());
    }
    if let Command::Man = &cli.command {
        let command = <Cli as clap::CommandFactory>::command();
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(());
    }
    let request = request(&cli.command)?;
    let mut client = AdminClient::connect(&cli.socket)?;
    if matches!(request, Request::Migrate(_)) {
        // The reply comes when the migration ends, however long that takes.
        client.set_timeout(None)?;
    }
    let reply = client.call(request)?;
    // An export's text is printed as it is, unless --json asks for JSON and it is CSV.
    let raw_export = match &reply {
        Reply::Export { format, .. } => !cli.json || *format == ExportFormat::Json,
        _ => false,
    };
    if cli.json && !raw_export {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", human(&reply));
    }
    if let Reply::Migrated(migration) = &reply {
        if !migration.ok {
            anyhow::bail!(
                "the migration of {} failed: {}",
                migration.vm,
                migration.error.as_deref().unwrap_or("no reason given")
            );
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(&cli) {
        let message = match error.downcast_ref::<ClientError>() {
            Some(ClientError::Remote(remote)) => {
                format!(
                    "{} ({})",
                    remote.message,
                    serde_json::to_string(&remote.code)
                        .unwrap_or_default()
                        .trim_matches('"')
                )
            }
            _ => format!("{error:#}"),
        };
        eprintln!("augurctl: error: {message}");
        std::process::exit(1);
    }
}
