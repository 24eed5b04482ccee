//! `augurctl`: talks to augurd over its admin socket.
#![forbid(unsafe_code)]

use augur_admin::{render, AdminClient, ClientError, Reply, Request};
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
    /// Start or stop microVMs.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
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
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let request = request(&cli.command)?;
    let mut client = AdminClient::connect(&cli.socket)?;
    let reply = client.call(request)?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", human(&reply));
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
