//! `augurd demo`: a host with three microVMs whose behaviour differs, sensed live.
//!
//! It runs the same host, sampling and admin socket as the daemon, in a temporary data
//! directory, prints a table of what it senses each interval, and ends with a summary.

use crate::config::Config;
use crate::daemon;
use crate::host::Host;
use crate::server::AdminSocket;
use anyhow::Context;
use augur_admin::{render, VmSummary};
use augur_microvm::VmSpec;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The demo's VMs: an idle one, a batch job that reads then computes, and a growing one.
pub const DEMO_SPECS: [(&str, &str); 3] = [
    (
        "idle.toml",
        include_str!("../../../examples/specs/idle.toml"),
    ),
    (
        "batch.toml",
        include_str!("../../../examples/specs/batch.toml"),
    ),
    (
        "grower.toml",
        include_str!("../../../examples/specs/grower.toml"),
    ),
];

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub seconds: u64,
    pub interval_ms: u64,
    pub socket: Option<PathBuf>,
}

/// Peak and mean figures of one VM over the demo.
#[derive(Debug, Clone, Default)]
pub struct VmDemoSummary {
    pub name: String,
    pub progress: u64,
    pub mean_cpu: f64,
    pub peak_working_set_mib: f64,
    pub peak_dirty_mib_per_s: f64,
    pub disk_read_mb: f64,
    pub disk_write_mb: f64,
    pub net_tx_kb: f64,
}

fn summarize(host: &Host, vm: &VmSummary) -> VmDemoSummary {
    let history = host.history(vm.id, usize::MAX);
    let secs = host.config.sample_interval_ms as f64 / 1000.0;
    let total = |f: fn(&augur_sense::Window) -> Option<f64>| -> f64 {
        history.iter().filter_map(f).sum::<f64>() * secs
    };
    let peak = |f: fn(&augur_sense::Window) -> Option<f64>| -> f64 {
        history.iter().filter_map(f).fold(0.0, f64::max)
    };
    let cpu: Vec<f64> = history.iter().filter_map(|w| w.cpu_vcpus).collect();
    VmDemoSummary {
        name: vm.name.clone(),
        progress: vm.progress,
        mean_cpu: cpu.iter().sum::<f64>() / cpu.len().max(1) as f64,
        peak_working_set_mib: peak(|w| w.working_set_mib),
        peak_dirty_mib_per_s: peak(|w| w.dirty_mib_per_s),
        disk_read_mb: total(|w| w.disk_read_bytes_per_s) / 1e6,
        disk_write_mb: total(|w| w.disk_write_bytes_per_s) / 1e6,
        net_tx_kb: total(|w| w.net_tx_bytes_per_s) / 1e3,
    }
}

/// Runs the demo; returns the per-VM summary it printed.
pub fn run(options: DemoOptions) -> anyhow::Result<Vec<VmDemoSummary>> {
    if let Some(reason) = augur_microvm::kvm_unavailable_reason() {
        anyhow::bail!("the demo runs microVMs and needs KVM: {reason}");
    }
    let data = tempfile::Builder::new()
        .prefix("augur-demo-")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    let socket_path = options
        .socket
        .clone()
        .unwrap_or_else(|| data.path().join("augurd.sock"));
    let config = Config {
        data_dir: data.path().to_path_buf(),
        admin_socket: socket_path.clone(),
        sample_interval_ms: options.interval_ms,
        ..Config::default()
    };
    let runtime = daemon::runtime()?;
    let host = Host::new(config)?;
    host.start_threads()?;
    let socket = runtime.block_on(AdminSocket::bind(&socket_path))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = runtime.spawn(socket.serve(host.clone(), stop_rx));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        runtime.spawn(async move {
            if daemon::shutdown_signal().await.is_ok() {
                interrupted.store(true, Ordering::Release);
            }
        });
    }

    let mut out = std::io::stdout();
    writeln!(
        out,
        "Augur demo: one host, three microVMs under KVM, sensed from the host side."
    )?;
    for (file, text) in DEMO_SPECS {
        let spec = VmSpec::from_toml(text).with_context(|| format!("demo spec {file}"))?;
        let phases: Vec<&str> = spec.phases.iter().map(|p| p.name()).collect();
        host.start_vm(spec.clone())
            .map_err(|e| anyhow::anyhow!("cannot start demo VM {}: {e}", spec.name))?;
        writeln!(
            out,
            "  started {:<7} {} MiB, phases: {}",
            spec.name,
            spec.memory_mib,
            phases.join(" -> ")
        )?;
    }
    writeln!(
        out,
        "Admin socket: {}  (try: augurctl --socket {} vms)",
        socket_path.display(),
        socket_path.display()
    )?;
    let seconds_text = if options.seconds == 0 {
        "until Ctrl-C".to_string()
    } else {
        format!("for {} s", options.seconds)
    };
    writeln!(
        out,
        "Sampling every {} ms {seconds_text}.\n",
        options.interval_ms
    )?;

    let live = out.is_terminal();
    let started = Instant::now();
    let deadline = (options.seconds > 0).then(|| started + Duration::from_secs(options.seconds));
    let interval = Duration::from_millis(options.interval_ms);
    let mut next = started + interval + Duration::from_millis(options.interval_ms / 2);
    while !interrupted.load(Ordering::Acquire) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() < next {
            continue;
        }
        next += interval;
        let vms = host.each_vm(|vm| crate::summary::summarize(&host, vm));
        if live {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        writeln!(out, "t = {:>4.0} s", started.elapsed().as_secs_f64())?;
        write!(out, "{}", render::vm_table(&vms))?;
        writeln!(out)?;
        out.flush()?;
    }

    let vms = host.each_vm(|vm| crate::summary::summarize(&host, vm));
    let summaries: Vec<VmDemoSummary> = vms.iter().map(|vm| summarize(&host, vm)).collect();
    let cost = host.cost.per_vm_sample_ns();
    let _ = stop_tx.send(true);
    let _ = runtime.block_on(server);
    host.shutdown();

    writeln!(
        out,
        "Summary after {:.0} s:",
        started.elapsed().as_secs_f64()
    )?;
    writeln!(
        out,
        "  {:<8} {:>9} {:>9} {:>10} {:>12} {:>10} {:>10} {:>9}",
        "VM", "progress", "mean CPU", "peak WSS", "peak dirty", "disk read", "disk write", "net tx"
    )?;
    for s in &summaries {
        writeln!(
            out,
            "  {:<8} {:>9} {:>8.2}v {:>6.1} MiB {:>6.2} MiB/s {:>7.1} MB {:>7.1} MB {:>6.0} KB",
            s.name,
            s.progress,
            s.mean_cpu,
            s.peak_working_set_mib,
            s.peak_dirty_mib_per_s,
            s.disk_read_mb,
            s.disk_write_mb,
            s.net_tx_kb
        )?;
    }
    if let Some(ns) = cost {
        writeln!(
            out,
            "  sensing cost: {:.1} us of augurd CPU per VM per sample ({:.4}% of a core per VM at this interval)",
            ns / 1e3,
            ns / (options.interval_ms as f64 * 1e6) * 100.0
        )?;
    }
    Ok(summaries)
}
