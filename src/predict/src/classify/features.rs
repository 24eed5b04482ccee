//! What the classifier sees of a VM: its recent usage ([`UsageHistory`]) reduced to a few
//! features anyone can read ([`ClassFeatures`]).

use serde::{Deserialize, Serialize};

/// A VM's recent usage, one value per step of a regular grid. The CPU series is required; a
/// resource that was not measured is left empty and its feature is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageHistory {
    /// Seconds per step.
    pub step_s: i64,
    /// CPU used, as a share of the VM's CPU capacity (0..=1).
    pub cpu: Vec<f64>,
    /// Memory dirtied or changed during the step, as a share of the VM's memory (0..=1).
    pub mem_change: Vec<f64>,
    /// Disk read plus written, bytes per second.
    pub disk_bps: Vec<f64>,
    /// Network received plus sent, bytes per second.
    pub net_bps: Vec<f64>,
}

pub(super) const MIB: f64 = 1_048_576.0;
pub(super) const DAY_S: f64 = 86_400.0;
/// The CPU share `io_mibps_per_cpu` divides by at least, so a nearly idle VM with a trickle of
/// I/O does not look I/O-bound.
const IO_CPU_FLOOR: f64 = 0.05;

/// Number of features in [`ClassFeatures`].
pub const N_FEATURES: usize = 7;

/// What the classifier sees of a VM. Percentiles are nearest-rank: the `p` percentile of `n`
/// sorted values is the one at rank `ceil(p n / 100)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassFeatures {
    /// Mean CPU use, as a share of the VM's capacity (0..=1).
    pub cpu_mean: f64,
    /// 95th percentile of CPU use (0..=1).
    pub cpu_p95: f64,
    /// Coefficient of variation of CPU use: population standard deviation over mean; 0 when the
    /// mean is 0.
    pub cpu_cv: f64,
    /// 99th percentile of CPU use over its mean; 1 when the mean is 0 (no peak above a flat line).
    pub peak_to_mean: f64,
    /// Pearson correlation between the CPU series and itself one day later (`cpu[t]` against
    /// `cpu[t + L]`, `L` = one day in steps, rounded); 0 when the history is shorter than two days
    /// or either part is flat.
    pub daily_autocorr: f64,
    /// Mean memory changed per step, as a share of the VM's memory (0..=1); 0 when not measured.
    pub mem_dirty_share: f64,
    /// Mean disk plus network throughput in MiB/s, divided by `max(cpu_mean, 0.05)`: I/O per
    /// unit of CPU share. 0 when neither disk nor network was measured; either alone counts when
    /// only one was.
    pub io_mibps_per_cpu: f64,
}

impl ClassFeatures {
    /// Feature names, in the order of [`ClassFeatures::as_row`].
    pub const NAMES: [&'static str; N_FEATURES] = [
        "cpu_mean",
        "cpu_p95",
        "cpu_cv",
        "peak_to_mean",
        "daily_autocorr",
        "mem_dirty_share",
        "io_mibps_per_cpu",
    ];

    pub fn as_row(&self) -> [f64; N_FEATURES] {
        [
            self.cpu_mean,
            self.cpu_p95,
            self.cpu_cv,
            self.peak_to_mean,
            self.daily_autocorr,
            self.mem_dirty_share,
            self.io_mibps_per_cpu,
        ]
    }

    /// Computes the features of one history. Fails on a non-positive step, an empty CPU series,
    /// a value that is not finite or is negative, a share above 1, or a measured series whose
    /// length differs from the CPU series'.
    pub fn from_history(h: &UsageHistory) -> Result<ClassFeatures, String> {
        if h.step_s <= 0 {
            return Err(format!("step length must be positive, got {} s", h.step_s));
        }
        if h.cpu.is_empty() {
            return Err("cpu history is empty: at least one step is needed".into());
        }
        let n = h.cpu.len();
        check_series("cpu", &h.cpu, n, true)?;
        check_series("mem_change", &h.mem_change, n, true)?;
        check_series("disk_bps", &h.disk_bps, n, false)?;
        check_series("net_bps", &h.net_bps, n, false)?;

        let cpu_mean = mean(&h.cpu);
        let sd = (h.cpu.iter().map(|v| (v - cpu_mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let mut sorted = h.cpu.clone();
        sorted.sort_by(f64::total_cmp);
        let p99 = percentile(&sorted, 99.0);
        let (cpu_cv, peak_to_mean) = if cpu_mean > 0.0 {
            (sd / cpu_mean, p99 / cpu_mean)
        } else {
            (0.0, 1.0)
        };
        let lag = (DAY_S / h.step_s as f64).round() as usize;
        let daily_autocorr = if lag >= 1 && n >= 2 * lag {
            pearson(&h.cpu[..n - lag], &h.cpu[lag..])
        } else {
            0.0
        };
        let io_bps = if h.disk_bps.is_empty() && h.net_bps.is_empty() {
            0.0
        } else {
            mean(&h.disk_bps) + mean(&h.net_bps)
        };
        Ok(ClassFeatures {
            cpu_mean,
            cpu_p95: percentile(&sorted, 95.0),
            cpu_cv,
            peak_to_mean,
            daily_autocorr,
            mem_dirty_share: mean(&h.mem_change),
            io_mibps_per_cpu: io_bps / MIB / cpu_mean.max(IO_CPU_FLOOR),
        })
    }
}

fn check_series(name: &str, values: &[f64], n: usize, share: bool) -> Result<(), String> {
    if !values.is_empty() && values.len() != n {
        return Err(format!(
            "{name} has {} steps but cpu has {n}: a measured series must cover the same steps \
             (or be empty when not measured)",
            values.len()
        ));
    }
    let bad = |v: f64| !v.is_finite() || v < 0.0 || (share && v > 1.0);
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| bad(**v)) {
        let range = if share {
            "a share between 0 and 1"
        } else {
            "finite and not negative"
        };
        return Err(format!("{name}[{i}] is {v}: values must be {range}"));
    }
    Ok(())
}

/// Mean, 0 for an empty series (a resource not measured).
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma) * (x - ma);
        bb += (y - mb) * (y - mb);
    }
    // A flat part carries no evidence of a daily cycle, and would divide by zero.
    if aa <= 1e-12 || bb <= 1e-12 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}
