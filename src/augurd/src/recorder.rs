//! Writes each closed profile window into the store: one series per figure of the window, so the
//! forecaster and `augurctl store export` read a VM's behaviour back over any range.

use augur_sense::Window;
use augur_store::{Sample, Store, Value, VmId, VmMeta};
use std::collections::BTreeMap;
use tracing::warn;

/// The names under which a window's scalar figures are stored (in the order
/// `scalar_values` reads them).
pub const SCALAR_FIGURES: [&str; 14] = [
    "cpu_vcpus",
    "memory_mib",
    "working_set_mib",
    "dirty_pages_per_s",
    "dirty_mib_per_s",
    "dirty_locality",
    "disk_read_bytes_per_s",
    "disk_write_bytes_per_s",
    "disk_read_ratio",
    "disk_ops_per_s",
    "net_tx_bytes_per_s",
    "net_rx_bytes_per_s",
    "exits_per_s",
    "guest_progress_per_s",
];

fn scalar_values(window: &Window) -> [Option<f64>; 14] {
    [
        window.cpu_vcpus,
        window.memory_mib,
        window.working_set_mib,
        window.dirty_pages_per_s,
        window.dirty_mib_per_s,
        window.dirty_locality,
        window.disk_read_bytes_per_s,
        window.disk_write_bytes_per_s,
        window.disk_read_ratio,
        window.disk_ops_per_s,
        window.net_tx_bytes_per_s,
        window.net_rx_bytes_per_s,
        window.exits_per_s,
        window.guest_progress_per_s,
    ]
}

/// The figures of a window, by series name.
pub fn window_figures(window: &Window) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = SCALAR_FIGURES
        .iter()
        .zip(scalar_values(window))
        .filter_map(|(name, value)| Some((name.to_string(), value?)))
        .collect();
    out.extend(
        window
            .exit_mix
            .iter()
            .map(|(reason, share)| (format!("exit_mix.{reason}"), *share)),
    );
    out.extend(
        window
            .perf
            .iter()
            .filter_map(|(event, rate)| Some((format!("perf.{event}"), (*rate)?))),
    );
    if let Some(guest) = &window.guest {
        out.extend(guest_figures(guest));
    }
    out
}

/// What the shim adds, under `guest.`: behavioural series the forecaster can take as features.
fn guest_figures(g: &augur_sense::GuestWindow) -> Vec<(String, f64)> {
    let scalars = [
        ("guest.syscalls_per_s", g.syscalls_per_s),
        ("guest.cpu_busy", g.cpu_busy),
        ("guest.cpu_iowait", g.cpu_iowait),
        ("guest.page_faults_per_s", g.page_faults_per_s),
        ("guest.mem_available_mib", g.mem_available_mib),
        ("guest.active_mib", g.active_mib),
        ("guest.memory_pressure", g.memory_pressure),
        ("guest.disk_read_ratio", g.disk_read_ratio),
        ("guest.disk_request_kib", g.disk_request_kib),
        ("guest.net_rx_bytes_per_s", g.net_rx_bytes_per_s),
        ("guest.net_tx_bytes_per_s", g.net_tx_bytes_per_s),
        ("guest.flows", g.flows.map(|f| f as f64)),
        (
            "guest.flow_destinations",
            g.flow_destinations.map(|f| f as f64),
        ),
    ];
    scalars
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), value?)))
        .chain(
            g.syscall_mix
                .iter()
                .map(|(family, share)| (format!("guest.syscall_mix.{family}"), *share)),
        )
        .collect()
}

/// Registers `vm` with the store (idempotent).
pub fn register(store: &mut Store, id: VmId, name: &str, attrs: BTreeMap<String, String>) {
    let meta = VmMeta {
        id,
        name: name.to_string(),
        attrs,
    };
    if let Err(error) = store.register_vm(meta) {
        warn!(vm = id, %error, "cannot register the VM in the store");
    }
}

/// One VM's figures at one tick: (vm, timestamp, figures).
type TickFigures = (VmId, i64, Vec<(String, f64)>);

/// Appends the windows of one tick and makes them durable.
pub fn record(store: &mut Store, windows: &[(VmId, Window)]) {
    let figures: Vec<TickFigures> = windows
        .iter()
        .map(|(vm, w)| (*vm, w.ts_ns as i64, window_figures(w)))
        .collect();
    let batch: Vec<Sample<'_>> = figures
        .iter()
        .flat_map(|(vm, ts, figures)| {
            figures.iter().map(move |(metric, value)| Sample {
                vm: *vm,
                metric,
                ts_ns: *ts,
                value: Value::F64(*value),
            })
        })
        .collect();
    match store.append(&batch) {
        Ok(report) if !report.rejected.is_empty() => {
            warn!(rejected = report.rejected.len(), first = %report.rejected[0].reason, "profile figures rejected by the store");
        }
        Ok(_) => {}
        Err(error) => warn!(%error, "profile windows not stored"),
    }
    if let Err(error) = store.sync() {
        warn!(%error, "store sync failed");
    }
}
