//! A VM's stored history averaged onto a regular grid: the forecasters' input.

use augur_store::{Store, VmId};
use std::collections::BTreeMap;

/// A resource the forecasters predict, and the stored series it is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    Mem,
    Disk,
    Net,
}

pub const RESOURCES: [Resource; 4] = [Resource::Cpu, Resource::Mem, Resource::Disk, Resource::Net];

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Mem => "mem",
            Resource::Disk => "disk",
            Resource::Net => "net",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Resource::Cpu => "vCPUs",
            Resource::Mem => "MiB",
            Resource::Disk | Resource::Net => "B/s",
        }
    }

    /// The stored series whose sum is this resource's demand.
    pub fn series(self) -> &'static [&'static str] {
        match self {
            Resource::Cpu => &["cpu_vcpus"],
            Resource::Mem => &["working_set_mib"],
            Resource::Disk => &["disk_read_bytes_per_s", "disk_write_bytes_per_s"],
            Resource::Net => &["net_tx_bytes_per_s", "net_rx_bytes_per_s"],
        }
    }
}

/// One VM's columns on a grid of `step_s` seconds starting at `start_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmHistory {
    pub id: VmId,
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub start_s: i64,
    pub step_s: i64,
    /// Resource names and behavioural series names to values; every column has `len` steps.
    pub columns: BTreeMap<String, Vec<f64>>,
    pub len: usize,
}

impl VmHistory {
    /// A column, or zeros when the VM never reported it.
    pub fn column(&self, name: &str) -> Vec<f64> {
        self.columns
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![0.0; self.len])
    }
}

/// One stored series averaged per step over `[from_s, to_s)`: `None` for empty steps.
fn gridded(
    store: &Store,
    vm: VmId,
    metric: &str,
    from_s: i64,
    steps: usize,
    step_s: i64,
) -> Option<Vec<Option<f64>>> {
    const NS: i64 = 1_000_000_000;
    let to_s = from_s + steps as i64 * step_s;
    let buckets = store
        .read_downsampled(vm, metric, from_s * NS, to_s * NS, step_s * NS)
        .ok()?;
    if buckets.is_empty() {
        return None;
    }
    let mut out = vec![None; steps];
    for b in buckets {
        let i = (b.start_ns / NS - from_s).div_euclid(step_s);
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(b.mean).filter(|v| v.is_finite());
        }
    }
    Some(out)
}

/// Fills holes with the last value before them, and a leading hole with the first value.
fn filled(values: Vec<Option<f64>>) -> Vec<f64> {
    let first = values.iter().flatten().next().copied().unwrap_or(0.0);
    let mut last = first;
    values
        .into_iter()
        .map(|v| {
            last = v.unwrap_or(last);
            last
        })
        .collect()
}

/// Reads VM `vm`'s history over the `lookback_s` seconds before `now_s`, on a grid of `step_s`:
/// the four resources and the behavioural series `features`. The grid starts at the first step
/// with a CPU figure; `None` if the VM has none.
pub fn read(
    store: &Store,
    vm: VmId,
    now_s: i64,
    lookback_s: i64,
    step_s: i64,
    features: &[String],
) -> Option<VmHistory> {
    let meta = store.vms().find(|m| m.id == vm)?.clone();
    let from_s = (now_s - lookback_s).div_euclid(step_s) * step_s;
    let steps = usize::try_from((now_s - from_s) / step_s + 1).ok()?;
    let cpu = gridded(store, vm, Resource::Cpu.series()[0], from_s, steps, step_s)?;
    let first = cpu.iter().position(Option::is_some)?;
    let last = cpu.iter().rposition(Option::is_some)?;
    let keep = |column: Vec<Option<f64>>| filled(column[first..=last].to_vec());
    let mut columns = BTreeMap::new();
    for resource in RESOURCES {
        let mut sum: Option<Vec<f64>> = None;
        for name in resource.series() {
            if let Some(column) = gridded(store, vm, name, from_s, steps, step_s) {
                let column = keep(column);
                sum = Some(match sum {
                    Some(acc) => acc.iter().zip(&column).map(|(a, b)| a + b).collect(),
                    None => column,
                });
            }
        }
        if let Some(sum) = sum {
            columns.insert(resource.name().to_string(), sum);
        }
    }
    for name in features {
        if let Some(column) = gridded(store, vm, name, from_s, steps, step_s) {
            columns.insert(name.clone(), keep(column));
        }
    }
    Some(VmHistory {
        id: vm,
        name: meta.name,
        attrs: meta.attrs,
        start_s: from_s + first as i64 * step_s,
        step_s,
        columns,
        len: last - first + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_store::{Sample, StoreOptions, Value, VmMeta};

    #[test]
    fn history_is_averaged_per_step_and_holes_are_filled() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .register_vm(VmMeta {
                id: 3,
                name: "web".into(),
                attrs: BTreeMap::new(),
            })
            .unwrap();
        const NS: i64 = 1_000_000_000;
        let base = 1_000_000_000i64; // seconds, a multiple of 10
        let mut samples = Vec::new();
        // Steps of 10 s: CPU 1.0 and 3.0 in step 0, nothing in step 1, 5.0 in step 2.
        for (s, v) in [(0, 1.0), (5, 3.0), (21, 5.0)] {
            samples.push(Sample {
                vm: 3,
                metric: "cpu_vcpus",
                ts_ns: (base + s) * NS,
                value: Value::F64(v),
            });
        }
        samples.push(Sample {
            vm: 3,
            metric: "disk_read_bytes_per_s",
            ts_ns: (base + 1) * NS,
            value: Value::F64(100.0),
        });
        samples.push(Sample {
            vm: 3,
            metric: "disk_write_bytes_per_s",
            ts_ns: (base + 22) * NS,
            value: Value::F64(50.0),
        });
        store.append(&samples).unwrap();
        let h = read(&store, 3, base + 25, 86_400, 10, &["exits_per_s".into()]).unwrap();
        assert_eq!(h.start_s, base);
        assert_eq!(h.len, 3);
        assert_eq!(h.columns["cpu"], vec![2.0, 2.0, 5.0]);
        // Reads fill forward from their first value, then the two disk series add up.
        assert_eq!(h.columns["disk"], vec![150.0, 150.0, 150.0]);
        assert!(!h.columns.contains_key("net"));
        assert_eq!(h.column("net"), vec![0.0; 3]);
        assert!(!h.columns.contains_key("exits_per_s"));
        assert!(read(&store, 4, base + 25, 86_400, 10, &[]).is_none());
    }
}
