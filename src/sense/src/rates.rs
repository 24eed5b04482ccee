//! Per-second rates from a pair of samples: the one place where counters become rates.

use augur_wire::{Metric, Sample};
use std::collections::BTreeMap;
use std::time::Duration;

/// Rates (for cumulative counters) and levels (for gauges) of one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rates {
    pub ts_ns: u64,
    /// Seconds between the two samples (0 for a first sample).
    pub dt: f64,
    values: BTreeMap<Metric, Option<f64>>,
}

impl Rates {
    /// Derives rates of `sample` against `prev`, taken `dt` earlier. Without `prev` only gauges
    /// have values. A counter that went backwards (a restart) has no rate for this interval.
    pub fn new(sample: &Sample, prev: Option<(&Sample, Duration)>) -> Self {
        let dt = prev.map_or(0.0, |(_, dt)| dt.as_secs_f64());
        let mut values = BTreeMap::new();
        for (metric, value) in sample.known() {
            let rate = if metric.is_gauge() {
                value.map(|v| v as f64)
            } else {
                match (value, prev) {
                    (Some(now), Some((before, _))) if dt > 0.0 => match before.get(metric) {
                        Some(Some(then)) if now >= then => Some((now - then) as f64 / dt),
                        _ => None,
                    },
                    _ => None,
                }
            };
            // Only a source that marks a metric unavailable, or a first sample, leaves it None.
            values.insert(metric, rate);
        }
        Self {
            ts_ns: sample.ts_ns,
            dt,
            values,
        }
    }

    /// The rate or level of `metric`; `None` if absent or unavailable.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.values.get(&metric).copied().flatten()
    }

    /// Whether the source reported `metric` at all (available or not).
    pub fn has(&self, metric: Metric) -> bool {
        self.values.contains_key(&metric)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Metric, Option<f64>)> + '_ {
        self.values.iter().map(|(m, v)| (*m, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use augur_wire::Source;

    fn sample(ts_s: u64, exits: u64, ws: u64) -> Sample {
        let mut s = Sample::new(1, Source::MicrovmRunLoop, ts_s * 1_000_000_000);
        s.push(Metric::ExitIo, exits)
            .push(Metric::WorkingSetPages, ws)
            .push_unavailable(Metric::Cycles);
        s
    }

    #[test]
    fn derives_rates_and_keeps_gauges() {
        let a = sample(10, 100, 5);
        let b = sample(12, 300, 7);
        let first = Rates::new(&a, None);
        assert_eq!(first.get(Metric::ExitIo), None);
        assert_eq!(first.get(Metric::WorkingSetPages), Some(5.0));
        let r = Rates::new(&b, Some((&a, Duration::from_secs(2))));
        assert_eq!(r.get(Metric::ExitIo), Some(100.0));
        assert_eq!(r.get(Metric::WorkingSetPages), Some(7.0));
        assert_eq!(r.get(Metric::Cycles), None);
        assert!(r.has(Metric::Cycles));
        let reset = sample(14, 50, 7);
        let r = Rates::new(&reset, Some((&b, Duration::from_secs(2))));
        assert_eq!(
            r.get(Metric::ExitIo),
            None,
            "a counter that went back has no rate"
        );
    }
}
