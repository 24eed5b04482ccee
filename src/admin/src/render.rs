//! Plain-text renderings of replies, shared by `augurctl` and `augurd demo`.

use crate::messages::{PredictReply, ProfileReply, StatusReply, StoreStatsReply, VmSummary};
use augur_sense::Window;
use std::fmt::Write;

fn num(value: Option<f64>, scale: f64, precision: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.*}", precision, v / scale))
}

/// The exit reason with the largest share, as "io 97%".
pub fn top_exit(window: &Window) -> String {
    window
        .exit_mix
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or_else(
            || "-".into(),
            |(name, share)| format!("{} {:.0}%", name.trim_start_matches("exit_"), share * 100.0),
        )
}

/// One line per VM with its latest window.
pub fn vm_table(vms: &[VmSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3} {:<10} {:<9} {:<16} {:>5} {:>7} {:>7} {:>5} {:>11} {:>11} {:>8} {:<14}",
        "ID",
        "VM",
        "STATE",
        "PHASE",
        "CPU",
        "WSS",
        "DIRTY",
        "LOCAL",
        "DISK R/W",
        "NET TX/RX",
        "EXITS/s",
        "TOP EXIT"
    );
    let _ = writeln!(
        out,
        "{:>3} {:<10} {:<9} {:<16} {:>5} {:>7} {:>7} {:>5} {:>11} {:>11} {:>8}",
        "", "", "", "", "vCPU", "MiB", "MiB/s", "", "MB/s", "KB/s", ""
    );
    for vm in vms {
        let w = vm.current.clone().unwrap_or_default();
        let disk = format!(
            "{}/{}",
            num(w.disk_read_bytes_per_s, 1e6, 1),
            num(w.disk_write_bytes_per_s, 1e6, 1)
        );
        let net = format!(
            "{}/{}",
            num(w.net_tx_bytes_per_s, 1e3, 0),
            num(w.net_rx_bytes_per_s, 1e3, 0)
        );
        let state: String = vm.state.chars().take(9).collect();
        let phase: String = vm.phase.chars().take(16).collect();
        let _ = writeln!(
            out,
            "{:>3} {:<10} {:<9} {:<16} {:>5} {:>7} {:>7} {:>5} {:>11} {:>11} {:>8} {:<14}",
            vm.id,
            vm.name.chars().take(10).collect::<String>(),
            state,
            phase,
            num(w.cpu_vcpus, 1.0, 2),
            num(w.working_set_mib, 1.0, 1),
            num(w.dirty_mib_per_s, 1.0, 2),
            num(w.dirty_locality, 1.0, 2),
            disk,
            net,
            num(w.exits_per_s, 1.0, 0),
            top_exit(&w),
        );
    }
    out
}

pub fn status(s: &StatusReply) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let c = &s.capabilities;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "augurd {} (pid {}, protocol {})",
        s.daemon_version, s.pid, s.protocol_version
    );
    let _ = writeln!(out, "uptime          {:.0} s", s.uptime_s);
    let _ = writeln!(out, "driver          {}", s.driver);
    let _ = writeln!(out, "data dir        {}", s.data_dir);
    let _ = writeln!(out, "VMs             {}", s.vms);
    let _ = writeln!(out, "sample interval {} ms", s.sample_interval_ms);
    let _ = writeln!(
        out,
        "sampling cost   {}",
        s.sampling_cpu_ns_per_vm.map_or_else(
            || "-".into(),
            |ns| format!(
                "{:.1} us CPU per VM per sample ({:.4}% of a core per VM)",
                ns / 1e3,
                ns / (s.sample_interval_ms as f64 * 1e6) * 100.0
            )
        )
    );
    let _ = writeln!(out, "ring lost       {}", s.ring_lost);
    let _ = writeln!(out, "kvm             {}", yes(c.kvm));
    let _ = writeln!(out, "dirty ring      {}", yes(c.dirty_ring));
    let _ = writeln!(out, "guest fp (SSE)  {}", yes(c.guest_fp));
    let _ = writeln!(out, "hardware PMU    {}", yes(c.pmu));
    let _ = writeln!(out, "tracefs         {}", yes(c.tracefs));
    let _ = writeln!(
        out,
        "kvm:kvm_exit    {}",
        if c.kvm_exit_tracepoint {
            "fires"
        } else {
            "not seen"
        }
    );
    out
}

pub fn profile(p: &ProfileReply) -> String {
    let mut out = vm_table(std::slice::from_ref(&p.vm));
    if let Some(w) = &p.vm.current {
        let _ = writeln!(out, "\ncurrent window:");
        let _ = writeln!(out, "  cpu               {} vCPU", num(w.cpu_vcpus, 1.0, 3));
        let _ = writeln!(out, "  memory            {} MiB", num(w.memory_mib, 1.0, 0));
        let _ = writeln!(
            out,
            "  write working set {} MiB",
            num(w.working_set_mib, 1.0, 2)
        );
        let _ = writeln!(
            out,
            "  dirty rate        {} pages/s ({} MiB/s), locality {}",
            num(w.dirty_pages_per_s, 1.0, 0),
            num(w.dirty_mib_per_s, 1.0, 2),
            num(w.dirty_locality, 1.0, 2)
        );
        let _ = writeln!(
            out,
            "  disk              read {} B/s, write {} B/s, read share {}, {} ops/s",
            num(w.disk_read_bytes_per_s, 1.0, 0),
            num(w.disk_write_bytes_per_s, 1.0, 0),
            num(w.disk_read_ratio, 1.0, 2),
            num(w.disk_ops_per_s, 1.0, 1)
        );
        let _ = writeln!(
            out,
            "  network           tx {} B/s, rx {} B/s",
            num(w.net_tx_bytes_per_s, 1.0, 0),
            num(w.net_rx_bytes_per_s, 1.0, 0)
        );
        let _ = writeln!(out, "  exits             {} /s", num(w.exits_per_s, 1.0, 0));
        for (reason, share) in &w.exit_mix {
            let _ = writeln!(out, "    {:<22} {:>5.1}%", reason, share * 100.0);
        }
        let _ = writeln!(out, "  perf events (per s):");
        for (event, rate) in &w.perf {
            let _ = writeln!(
                out,
                "    {:<22} {}",
                event,
                rate.map_or_else(|| "unavailable".into(), |r| format!("{r:.0}"))
            );
        }
        if !w.kvm_stats.is_empty() {
            let _ = writeln!(out, "  KVM stats (per s):");
            for (stat, rate) in &w.kvm_stats {
                let _ = writeln!(out, "    {stat:<22} {rate:.0}");
            }
        }
        let _ = writeln!(out, "  sources           {}", w.sources.join(", "));
        if let Some(g) = &w.guest {
            guest_section(&mut out, g);
        }
    }
    if !p.guest_flows.is_empty() {
        let _ = writeln!(
            out,
            "
guest flows (from the shim; port 0 = ephemeral):"
        );
        for f in &p.guest_flows {
            let _ = writeln!(
                out,
                "  {:<4} {}:{:<6} {:<11} {} socket(s)",
                f.proto, f.address, f.port, f.port_class, f.sockets
            );
        }
    }
    if let Some(shim) = &p.shim {
        let _ = writeln!(
            out,
            "
shim channel {}: {}, {} connection(s), {} report(s), {} bad frame(s), throttled {} time(s){}",
            shim.socket,
            if shim.connected {
                "connected"
            } else {
                "not connected"
            },
            shim.connections,
            shim.reports,
            shim.bad_frames,
            shim.throttled,
            shim.last_error
                .as_ref()
                .map_or_else(String::new, |e| format!(", last error: {e}"))
        );
    }
    if !p.flows.is_empty() {
        let _ = writeln!(out, "\nflows (dest vm:port  bytes  packets):");
        for (dest, port, bytes, packets) in &p.flows {
            let _ = writeln!(out, "  {dest}:{port}  {bytes}  {packets}");
        }
    }
    if !p.history.is_empty() {
        let _ = writeln!(out, "\nrecent history (oldest first): cpu vCPU | wss MiB | dirty MiB/s | disk r+w MB/s | exits/s");
        for w in &p.history {
            let disk = match (w.disk_read_bytes_per_s, w.disk_write_bytes_per_s) {
                (Some(r), Some(wr)) => Some(r + wr),
                _ => None,
            };
            let _ = writeln!(
                out,
                "  {:>6} {:>8} {:>8} {:>8} {:>8}",
                num(w.cpu_vcpus, 1.0, 2),
                num(w.working_set_mib, 1.0, 1),
                num(w.dirty_mib_per_s, 1.0, 2),
                num(disk, 1e6, 2),
                num(w.exits_per_s, 1.0, 0)
            );
        }
    }
    for note in &p.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn guest_section(out: &mut String, g: &crate::GuestWindow) {
    let _ = writeln!(out, "\nguest (from the shim):");
    let _ = writeln!(
        out,
        "  cpu               busy {}, iowait {}, steal {} of {} CPU(s); instructions {}",
        num(g.cpu_busy, 1.0, 3),
        num(g.cpu_iowait, 1.0, 3),
        num(g.cpu_steal, 1.0, 3),
        g.cpus.map_or_else(|| "-".into(), |c| c.to_string()),
        g.instructions_per_s.map_or_else(
            || "unavailable (no PMU in the guest)".into(),
            |i| format!("{i:.0}/s")
        )
    );
    let _ = writeln!(
        out,
        "  syscalls          {} /s",
        num(g.syscalls_per_s, 1.0, 0)
    );
    let mut mix: Vec<_> = g.syscall_mix.iter().collect();
    mix.sort_by(|a, b| b.1.total_cmp(a.1));
    for (family, share) in mix {
        let _ = writeln!(out, "    {:<22} {:>5.1}%", family, share * 100.0);
    }
    let _ = writeln!(
        out,
        "  memory            available {} of {} MiB, active {} MiB, {} faults/s ({} major), pressure {}",
        num(g.mem_available_mib, 1.0, 0),
        num(g.mem_total_mib, 1.0, 0),
        num(g.active_mib, 1.0, 0),
        num(g.page_faults_per_s, 1.0, 0),
        num(g.major_faults_per_s, 1.0, 0),
        num(g.memory_pressure, 1.0, 3)
    );
    let _ = writeln!(
        out,
        "  disk              read {} B/s, write {} B/s, read share {}, {} KiB/request, latency r {} w {} ms",
        num(g.disk_read_bytes_per_s, 1.0, 0),
        num(g.disk_write_bytes_per_s, 1.0, 0),
        num(g.disk_read_ratio, 1.0, 2),
        num(g.disk_request_kib, 1.0, 1),
        num(g.disk_read_latency_ms, 1.0, 2),
        num(g.disk_write_latency_ms, 1.0, 2)
    );
    let _ = writeln!(
        out,
        "  network           rx {} B/s, tx {} B/s, {} flow(s) to {} destination(s)",
        num(g.net_rx_bytes_per_s, 1.0, 0),
        num(g.net_tx_bytes_per_s, 1.0, 0),
        g.flows.map_or_else(|| "-".into(), |f| f.to_string()),
        g.flow_destinations
            .map_or_else(|| "-".into(), |f| f.to_string())
    );
    let _ = writeln!(
        out,
        "  shim cost         {} of a vCPU, {} KiB resident, {} report(s) dropped",
        num(g.shim_cpu, 1.0, 4),
        num(g.shim_rss_kib, 1.0, 0),
        g.shim_dropped.map_or_else(|| "-".into(), |d| d.to_string())
    );
}

pub fn migration(m: &crate::MigrationReply) -> String {
    let mut out = String::new();
    let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
    let _ = writeln!(
        out,
        "{} {} to {} by {} ({})",
        if m.ok {
            "migrated"
        } else {
            "FAILED to migrate"
        },
        m.vm,
        m.to,
        m.method,
        m.reason
    );
    let _ = writeln!(
        out,
        "  measured:  total {}, downtime {}, {} bytes, {} pass(es)",
        ms(m.total_ms),
        ms(m.downtime_ms),
        m.bytes.map_or_else(|| "-".into(), |b| b.to_string()),
        m.iterations.map_or_else(|| "-".into(), |i| i.to_string())
    );
    let _ = writeln!(
        out,
        "  predicted: total {:.2} s, downtime {:.3} s",
        m.predicted_total_s, m.predicted_downtime_s
    );
    if let Some(error) = &m.error {
        let _ = writeln!(out, "  error: {error}");
    }
    if !m.ok {
        let _ = writeln!(
            out,
            "  the domain is {} on the source",
            if m.running_on_source {
                "still running"
            } else {
                "NOT running"
            }
        );
    }
    out
}

pub fn peers(p: &crate::PeersReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "host {} on {}: automatic moves {}{}{}; {} refused peer message(s)",
        p.host_id,
        p.listen,
        if p.paused { "paused" } else { "on" },
        if p.draining { ", draining" } else { "" },
        if p.dry_run { ", dry run" } else { "" },
        p.auth_failures
    );
    if p.peers.is_empty() {
        let _ = writeln!(out, "no peers ([mesh] peers in the config)");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<5} {:<7} {:>10} {:>12} {:>12}  NOTE",
        "PEER", "ADDRESS", "UP", "GOSSIP", "CPU cap", "CPU booked", "CPU free"
    );
    for peer in &p.peers {
        let note = match (&peer.error, peer.draining) {
            (Some(e), _) => e.clone(),
            (None, true) => "draining".into(),
            (None, false) => peer.libvirt_uri.clone().unwrap_or_default(),
        };
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<5} {:<7} {:>10.1} {:>12.2} {:>12.2}  {}",
            if peer.id.is_empty() { "?" } else { &peer.id },
            peer.addr,
            if peer.up { "yes" } else { "no" },
            if peer.gossip { "alive" } else { "-" },
            peer.capacity_cpu,
            peer.booked_cpu,
            peer.headroom_cpu,
            note
        );
    }
    out
}

pub fn migrations(list: &[crate::MigrationRecordReply]) -> String {
    if list.is_empty() {
        return "no migrations yet\n".into();
    }
    let mut out = String::new();
    let ms = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
    for m in list {
        let _ = writeln!(
            out,
            "{} {} {} → {} by {}: {}; negotiation {:.1} ms, total {}, downtime {}, predicted {:.2} s / {:.3} s",
            m.at_s,
            m.vm,
            m.from,
            m.to.as_deref().unwrap_or("-"),
            m.method,
            if m.ok { "ok".to_string() } else { format!("FAILED ({})", m.error.as_deref().unwrap_or("?")) },
            m.negotiation_ms,
            ms(m.total_ms),
            ms(m.downtime_ms),
            m.predicted_total_s,
            m.predicted_downtime_s
        );
        for bid in &m.bids {
            let _ = writeln!(out, "    {bid}");
        }
    }
    out
}

pub fn explain(vm: &str, decisions: &[crate::DecisionReply]) -> String {
    if decisions.is_empty() {
        return format!("no decision has looked at {vm} yet\n");
    }
    let mut out = String::new();
    for d in decisions {
        let _ = writeln!(
            out,
            "{}: host {} {} (peak {} at {:.0}%, chance of overload {:.0}%)",
            d.at_s,
            d.host,
            d.trigger,
            d.peak_resource,
            d.peak_share * 100.0,
            d.overload_risk * 100.0
        );
        match (&d.vm, &d.target) {
            (Some(v), Some(t)) => {
                let _ = writeln!(
                    out,
                    "  chose {v} → {t} by {} (predicted {:.2} s, downtime {:.3} s; source after {:.0}%, target after {:.0}%; overloaded hosts expected {:.2} fewer): {}",
                    d.method.as_deref().unwrap_or("-"),
                    d.predicted_total_s.unwrap_or(0.0),
                    d.predicted_downtime_s.unwrap_or(0.0),
                    d.source_after.unwrap_or(0.0) * 100.0,
                    d.target_after.unwrap_or(0.0) * 100.0,
                    d.risk_avoided.unwrap_or(0.0),
                    d.action
                );
            }
            _ => {
                let _ = writeln!(out, "  moved nothing: {}", d.note.as_deref().unwrap_or("-"));
            }
        }
        for input in &d.inputs {
            let _ = writeln!(out, "  input: {input}");
        }
        for r in &d.rejected {
            let _ = writeln!(out, "  rejected: {r}");
        }
    }
    out
}

fn time(ns: Option<i64>) -> String {
    ns.map_or_else(
        || "-".into(),
        |ns| format!("{:.3} (unix s)", ns as f64 / 1e9),
    )
}

pub fn store_stats(s: &StoreStatsReply) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "store           {}", s.dir);
    let _ = writeln!(
        out,
        "size            {:.2} MiB",
        s.bytes_on_disk as f64 / 1048576.0
    );
    let _ = writeln!(out, "VMs             {}", s.vms);
    let _ = writeln!(out, "series          {}", s.series);
    let _ = writeln!(out, "samples         {}", s.samples);
    let _ = writeln!(out, "oldest          {}", time(s.oldest_ns));
    let _ = writeln!(out, "newest          {}", time(s.newest_ns));
    let _ = writeln!(out, "bytes/sample    {}", num(s.bytes_per_sample, 1.0, 3));
    let _ = writeln!(out, "segments        {}", s.segments);
    let _ = writeln!(out, "events          {}", s.events);
    let _ = writeln!(out, "read errors     {}", s.read_errors);
    out
}

/// A number with a unit, shortened: 1.25 vCPUs, 512 MiB, 3.4 MB/s.
fn amount(value: f64, unit: &str) -> String {
    if unit == "B/s" {
        let (scaled, prefix) = match value.abs() {
            v if v >= 1e9 => (value / 1e9, "G"),
            v if v >= 1e6 => (value / 1e6, "M"),
            v if v >= 1e3 => (value / 1e3, "k"),
            _ => (value, ""),
        };
        format!("{scaled:.1} {prefix}B/s")
    } else {
        format!("{value:.2} {unit}")
    }
}

pub fn predict(p: &PredictReply) -> String {
    let mut out = format!(
        "VM {} ({}): {} steps of {} s up to {}\n",
        p.vm_id,
        p.name,
        p.history_steps,
        p.step_s,
        time(Some(p.last_step_s * 1_000_000_000))
    );
    if !p.resources.is_empty() {
        out += &format!(
            "{:<6} {:>14} {:>8} {:>14} {:>14}  {:<28}  model\n",
            "", "now", "ahead", "forecast", "upper", "forecast follows"
        );
    }
    for r in &p.resources {
        for (i, h) in r.horizons.iter().enumerate() {
            let (name, now) = if i == 0 {
                (r.resource.as_str(), amount(r.current, &r.unit))
            } else {
                ("", String::new())
            };
            let model = if i == 0 {
                format!("  gen {} ({:.0}%)", r.model_generation, r.level * 100.0)
            } else {
                String::new()
            };
            out += &format!(
                "{:<6} {:>14} {:>7}m {:>14} {:>14}  {:<28}{model}\n",
                name,
                now,
                h.horizon_s / 60,
                amount(h.mean, &r.unit),
                amount(h.upper, &r.unit),
                if h.centre.is_empty() { "-" } else { &h.centre },
            );
        }
    }
    if let Some(class) = &p.class {
        out += &format!("class: {}", class.class);
        if !class.explanation.is_empty() {
            out += &format!(" ({})", class.explanation.join(", "));
        }
        out.push('\n');
    }
    for note in &p.notes {
        out += &format!("note: {note}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{HorizonForecast, ResourceForecast, WorkloadClassReply};

    #[test]
    fn a_prediction_reads_as_a_table_with_units_class_and_notes() {
        let reply = PredictReply {
            vm_id: 7,
            name: "web".into(),
            step_s: 300,
            history_steps: 864,
            last_step_s: 1_700_000_000,
            resources: vec![ResourceForecast {
                resource: "net".into(),
                unit: "B/s".into(),
                current: 2_500_000.0,
                model_generation: 3,
                trained_at_s: 1_699_999_000,
                level: 0.95,
                horizons: vec![
                    HorizonForecast {
                        horizon_s: 300,
                        mean: 2_600_000.0,
                        upper: 4_000_000.0,
                        centre: "last value".into(),
                    },
                    HorizonForecast {
                        horizon_s: 3600,
                        mean: 900.0,
                        upper: 1500.0,
                        centre: "model".into(),
                    },
                ],
            }],
            class: Some(WorkloadClassReply {
                class: "io-bound".into(),
                explanation: vec!["cpu_mean 0.400 >= 0.0350".into()],
            }),
            notes: vec!["mem: no model (not trained yet)".into()],
        };
        let text = predict(&reply);
        assert!(text.starts_with("VM 7 (web): 864 steps of 300 s"), "{text}");
        assert!(text.contains("net") && text.contains("2.5 MB/s"), "{text}");
        assert!(text.contains("60m") && text.contains("1.5 kB/s"), "{text}");
        assert!(text.contains("gen 3 (95%)"), "{text}");
        assert!(
            text.contains("forecast follows") && text.contains("last value"),
            "{text}"
        );
        assert!(
            text.contains("class: io-bound (cpu_mean 0.400 >= 0.0350)"),
            "{text}"
        );
        assert!(text.contains("note: mem: no model"), "{text}");
    }
}
