//! The demo's three hosts: each a whole augurd host (sampling, store, forecaster, orchestrator,
//! admin socket) in this process, meshed over loopback with a fresh key.

use crate::config::{Config, Driver, ForecastConfig, MeshConfig};
use crate::host::Host;
use crate::server::AdminSocket;
use anyhow::Context;
use augur_microvm::VmSpec;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// What one demo host is: its name, the vCPUs it offers and the VMs it starts with.
#[derive(Debug)]
pub struct HostPlan {
    pub name: &'static str,
    pub capacity_cpu: f64,
    pub vms: &'static [(&'static str, &'static str)],
}

/// The grid the demo forecasts on: one-second steps, horizons of seconds.
pub const STEP_S: u64 = 1;
pub const HORIZONS_S: [u64; 3] = [4, 8, 16];

#[derive(Debug)]
pub struct DemoHost {
    pub name: &'static str,
    pub capacity_cpu: f64,
    pub host: Arc<Host>,
    pub socket: PathBuf,
}

#[derive(Debug)]
pub struct Cluster {
    pub hosts: Vec<DemoHost>,
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

/// A 32-byte mesh key from the kernel's random source, in a file only its owner reads.
fn write_key(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("cannot read /dev/urandom for the demo's mesh key")?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{hex}")?;
    Ok(())
}

fn config(
    dir: &Path,
    plan: &HostPlan,
    key: &Path,
    seeds: &[SocketAddr],
    interval_ms: u64,
) -> Config {
    let data_dir = dir.join(plan.name);
    Config {
        driver: Driver::Microvm,
        admin_socket: data_dir.join("augurd.sock"),
        data_dir,
        sample_interval_ms: interval_ms,
        mesh: MeshConfig {
            enabled: true,
            host_id: plan.name.into(),
            listen: "127.0.0.1:0".into(),
            microvm_listen: "127.0.0.1:0".into(),
            peers: seeds.iter().map(ToString::to_string).collect(),
            key_file: key.to_path_buf(),
            capacity_cpu: plan.capacity_cpu,
            capacity_memory_mib: 1024,
            lease_s: 30,
            plan_every_s: 1,
            ..MeshConfig::default()
        },
        forecast: ForecastConfig {
            step_s: STEP_S,
            horizons_s: HORIZONS_S.to_vec(),
            train_days: 1,
            // The demo trains when it has seen enough cycles, not on a timer.
            retrain_s: 86_400,
            // The compute phase is a level change the disk reads foretell: let the models
            // learn all of it.
            clip_sigma: 16.0,
            ..ForecastConfig::default()
        },
        ..Config::default()
    }
}

impl Cluster {
    /// Starts every host of `plans` under `dir`, the first one the others' seed, with the
    /// orchestrators paused, and each host's VMs.
    pub fn start(
        runtime: &Runtime,
        dir: &Path,
        plans: &[HostPlan],
        interval_ms: u64,
    ) -> anyhow::Result<Cluster> {
        let key = dir.join("mesh.key");
        write_key(&key)?;
        let (stop, stop_rx) = watch::channel(false);
        let mut cluster = Cluster {
            hosts: Vec::new(),
            stop,
            servers: Vec::new(),
        };
        let mut seeds = Vec::new();
        for plan in plans {
            let config = config(dir, plan, &key, &seeds, interval_ms);
            let socket_path = config.admin_socket.clone();
            let host = Host::new(config).with_context(|| format!("host {}", plan.name))?;
            let orchestrator = host
                .orchestrator()
                .cloned()
                .context("the demo host has no orchestrator")?;
            orchestrator.set_paused(true);
            host.start_threads()?;
            let socket = runtime.block_on(AdminSocket::bind(&socket_path))?;
            cluster
                .servers
                .push(runtime.spawn(socket.serve(host.clone(), stop_rx.clone())));
            runtime.block_on(crate::orchestrator::start(&host, stop_rx.clone()))?;
            if seeds.is_empty() {
                let addr = *crate::lock(&orchestrator.listen_addr);
                seeds.push(addr.context("the first host's mesh address is unknown")?);
            }
            for (file, text) in plan.vms {
                let spec = VmSpec::from_toml(text).with_context(|| format!("demo spec {file}"))?;
                host.start_vm(spec)
                    .map_err(|e| anyhow::anyhow!("cannot start {file} on {}: {e}", plan.name))?;
            }
            cluster.hosts.push(DemoHost {
                name: plan.name,
                capacity_cpu: plan.capacity_cpu,
                host,
                socket: socket_path,
            });
        }
        Ok(cluster)
    }

    /// Whether every host has heard from every other over the authenticated channel.
    pub fn meshed(&self) -> bool {
        self.hosts.iter().all(|h| {
            h.host.orchestrator().is_some_and(|o| {
                o.peers().peers.iter().filter(|p| p.up).count() >= self.hosts.len() - 1
            })
        })
    }

    pub fn set_paused(&self, paused: bool) {
        for h in &self.hosts {
            if let Some(o) = h.host.orchestrator() {
                o.set_paused(paused);
            }
        }
    }

    /// Stops the orchestrators, the admin sockets and every VM.
    pub fn shutdown(self, runtime: &Runtime) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = runtime.block_on(server);
        }
        for h in &self.hosts {
            h.host.shutdown();
        }
    }
}
