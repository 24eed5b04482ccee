//! libvirt's bulk domain stats (typed parameters named like `block.0.rd.bytes`) as a
//! [`Sample`] of raw cumulative counters.

use augur_wire::{Metric, Sample, Source, VmId};

/// One typed parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    UInt(u64),
    Double(f64),
    Bool(bool),
    Text(String),
}

impl ParamValue {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::Int(v) => u64::try_from(v).ok(),
            ParamValue::UInt(v) => Some(v),
            ParamValue::Double(v) if v.is_finite() && v >= 0.0 => Some(v as u64),
            ParamValue::Bool(v) => Some(u64::from(v)),
            _ => None,
        }
    }
}

/// The stats libvirt reported for one domain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DomainStats {
    pub name: String,
    pub params: Vec<(String, ParamValue)>,
}

impl DomainStats {
    pub fn get(&self, field: &str) -> Option<u64> {
        self.params
            .iter()
            .find(|(f, _)| f == field)
            .and_then(|(_, v)| v.as_u64())
    }

    /// Sums `prefix.N.suffix` over every N.
    fn sum_indexed(&self, prefix: &str, suffix: &str) -> Option<u64> {
        let mut total = None;
        for (field, value) in &self.params {
            let Some(rest) = field.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((index, tail)) = rest.split_once('.') else {
                continue;
            };
            if tail == suffix && index.bytes().all(|b| b.is_ascii_digit()) {
                if let Some(v) = value.as_u64() {
                    total = Some(total.unwrap_or(0u64).saturating_add(v));
                }
            }
        }
        total
    }

    /// The libvirt `state.state` value (1 = running, 3 = paused, 5 = shut off, ...).
    pub fn state(&self) -> Option<u64> {
        self.get("state.state")
    }

    /// The stats as a sample of `vm`. What libvirt did not report is left out, not zeroed.
    pub fn to_sample(&self, vm: VmId, ts_ns: u64) -> Sample {
        let mut s = Sample::new(vm, Source::Libvirt, ts_ns);
        let mut put = |metric: Metric, value: Option<u64>| {
            if let Some(v) = value {
                s.push(metric, v);
            }
        };
        put(Metric::DomainCpuNs, self.get("cpu.time"));
        put(Metric::DomainVcpuNs, self.sum_indexed("vcpu", "time"));
        let kib = |v: Option<u64>| v.map(|k| k.saturating_mul(1024));
        put(Metric::DomainBalloonBytes, kib(self.get("balloon.current")));
        put(Metric::MemoryBytes, kib(self.get("balloon.maximum")));
        put(Metric::DomainRssBytes, kib(self.get("balloon.rss")));
        put(Metric::DiskReadBytes, self.sum_indexed("block", "rd.bytes"));
        put(
            Metric::DiskWriteBytes,
            self.sum_indexed("block", "wr.bytes"),
        );
        put(Metric::DiskReadOps, self.sum_indexed("block", "rd.reqs"));
        put(Metric::DiskWriteOps, self.sum_indexed("block", "wr.reqs"));
        put(Metric::NetRxBytes, self.sum_indexed("net", "rx.bytes"));
        put(Metric::NetTxBytes, self.sum_indexed("net", "tx.bytes"));
        put(Metric::NetRxPackets, self.sum_indexed("net", "rx.pkts"));
        put(Metric::NetTxPackets, self.sum_indexed("net", "tx.pkts"));
        // calc_status 2 = measured; a rate from a measurement still running means nothing.
        if self.get("dirtyrate.calc_status") == Some(2) {
            put(
                Metric::DomainDirtyRateMibS,
                self.get("dirtyrate.megabytes_per_second"),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(params: &[(&str, ParamValue)]) -> DomainStats {
        DomainStats {
            name: "d".into(),
            params: params
                .iter()
                .map(|(f, v)| (f.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn maps_and_sums_the_fields() {
        use ParamValue::*;
        let s = stats(&[
            ("state.state", Int(1)),
            ("cpu.time", UInt(5_000)),
            ("vcpu.current", UInt(2)),
            ("vcpu.0.time", UInt(1_000)),
            ("vcpu.1.time", UInt(2_000)),
            ("balloon.maximum", UInt(262_144)),
            ("block.count", UInt(2)),
            ("block.0.rd.bytes", UInt(10)),
            ("block.1.rd.bytes", UInt(5)),
            ("block.0.name", Text("vda".into())),
            ("net.0.tx.bytes", UInt(77)),
            ("dirtyrate.calc_status", Int(2)),
            ("dirtyrate.megabytes_per_second", Int(64)),
        ])
        .to_sample(4, 9);
        assert_eq!(s.get(Metric::DomainCpuNs), Some(Some(5_000)));
        assert_eq!(s.get(Metric::DomainVcpuNs), Some(Some(3_000)));
        assert_eq!(s.get(Metric::MemoryBytes), Some(Some(256 << 20)));
        assert_eq!(s.get(Metric::DiskReadBytes), Some(Some(15)));
        assert_eq!(s.get(Metric::NetTxBytes), Some(Some(77)));
        assert_eq!(s.get(Metric::DomainDirtyRateMibS), Some(Some(64)));
        assert_eq!(
            s.get(Metric::DiskWriteBytes),
            None,
            "not reported, not zero"
        );
    }

    #[test]
    fn an_unfinished_dirty_rate_and_negative_values_are_left_out() {
        use ParamValue::*;
        let s = stats(&[
            ("dirtyrate.calc_status", Int(1)),
            ("dirtyrate.megabytes_per_second", Int(64)),
            ("cpu.time", Int(-5)),
        ])
        .to_sample(1, 1);
        assert_eq!(s.get(Metric::DomainDirtyRateMibS), None);
        assert_eq!(s.get(Metric::DomainCpuNs), None);
    }
}
