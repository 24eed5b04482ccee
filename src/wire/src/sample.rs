//! The sample record: what one source read about one VM at one instant.

use crate::metric::{Metric, Source};

/// The schema version of [`Sample`]; readers reject records of another schema.
pub const SAMPLE_SCHEMA: u16 = 1;

/// A VM's identity on its host.
pub type VmId = u64;

/// One reading: a metric code and its raw value, or `None` when the source could not measure it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reading {
    pub metric: u16,
    pub value: Option<u64>,
}

impl Reading {
    pub fn new(metric: Metric, value: u64) -> Self {
        Self {
            metric: metric.code(),
            value: Some(value),
        }
    }

    pub fn unavailable(metric: Metric) -> Self {
        Self {
            metric: metric.code(),
            value: None,
        }
    }
}

/// Raw cumulative counters (and a few gauges) read by one source for one VM.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Sample {
    pub schema: u16,
    pub source: u8,
    pub vm: VmId,
    /// Nanoseconds since the Unix epoch when the source read the counters.
    pub ts_ns: u64,
    pub readings: Vec<Reading>,
}

impl Sample {
    pub fn new(vm: VmId, source: Source, ts_ns: u64) -> Self {
        Self {
            schema: SAMPLE_SCHEMA,
            source: source.code(),
            vm,
            ts_ns,
            readings: Vec::new(),
        }
    }

    pub fn push(&mut self, metric: Metric, value: u64) -> &mut Self {
        self.readings.push(Reading::new(metric, value));
        self
    }

    pub fn push_unavailable(&mut self, metric: Metric) -> &mut Self {
        self.readings.push(Reading::unavailable(metric));
        self
    }

    pub fn source(&self) -> Option<Source> {
        Source::from_code(self.source)
    }

    /// The value of `metric`: `None` if absent, `Some(None)` if marked unavailable.
    pub fn get(&self, metric: Metric) -> Option<Option<u64>> {
        self.readings
            .iter()
            .find(|r| r.metric == metric.code())
            .map(|r| r.value)
    }

    /// Known readings, skipping codes this build does not know.
    pub fn known(&self) -> impl Iterator<Item = (Metric, Option<u64>)> + '_ {
        self.readings
            .iter()
            .filter_map(|r| Metric::from_code(r.metric).map(|m| (m, r.value)))
    }
}

impl ArchivedSample {
    /// The value of `metric` read straight from the archive.
    pub fn get(&self, metric: Metric) -> Option<Option<u64>> {
        self.readings
            .iter()
            .find(|r| r.metric.to_native() == metric.code())
            .map(|r| r.value.as_ref().map(|v| v.to_native()))
    }
}

impl ArchivedSample {
    /// Copies the archived record into an owned [`Sample`].
    pub fn to_sample(&self) -> Sample {
        Sample {
            schema: self.schema.to_native(),
            source: self.source,
            vm: self.vm.to_native(),
            ts_ns: self.ts_ns.to_native(),
            readings: self
                .readings
                .iter()
                .map(|r| Reading {
                    metric: r.metric.to_native(),
                    value: r.value.as_ref().map(|v| v.to_native()),
                })
                .collect(),
        }
    }
}
