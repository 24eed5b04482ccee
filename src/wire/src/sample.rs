//! The sample record: what one source read about one VM at one instant.

use crate::metric::{Metric, Source};

/// The schema version of [`Sample`]; readers reject records of another schema.
pub const SAMPLE_SCHEMA: u16 = 1;

/// A VM's identity on its host.
pub type VmId = u64;

/// [`Reading::status`]: the source measured the value.
pub const STATUS_OK: u16 = 0;
/// [`Reading::status`]: the source could not measure this metric; `value` means nothing.
pub const STATUS_UNAVAILABLE: u16 = 1;

/// One reading: a metric code, its raw value, and whether the source could measure it.
///
/// A plain 16-byte record with no padding, so a whole array of readings archives and validates
/// as one block (rkyv's copy optimisation) rather than field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Reading {
    pub value: u64,
    pub metric: u16,
    pub status: u16,
    pub reserved: u32,
}

impl Reading {
    pub fn new(metric: Metric, value: u64) -> Self {
        Self::from_parts(metric.code(), Some(value))
    }

    pub fn unavailable(metric: Metric) -> Self {
        Self::from_parts(metric.code(), None)
    }

    pub fn from_parts(metric: u16, value: Option<u64>) -> Self {
        Self {
            value: value.unwrap_or(0),
            metric,
            status: if value.is_some() {
                STATUS_OK
            } else {
                STATUS_UNAVAILABLE
            },
            reserved: 0,
        }
    }

    /// The value, or `None` if the source marked it unavailable (or sent a status this build
    /// does not know).
    pub fn value(&self) -> Option<u64> {
        (self.status == STATUS_OK).then_some(self.value)
    }
}

impl ArchivedReading {
    pub fn value(&self) -> Option<u64> {
        (self.status.to_native() == STATUS_OK).then(|| self.value.to_native())
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
            .map(|r| r.value())
    }

    /// Known readings, skipping codes this build does not know.
    pub fn known(&self) -> impl Iterator<Item = (Metric, Option<u64>)> + '_ {
        self.readings
            .iter()
            .filter_map(|r| Metric::from_code(r.metric).map(|m| (m, r.value())))
    }
}

impl ArchivedSample {
    /// The value of `metric` read straight from the archive.
    pub fn get(&self, metric: Metric) -> Option<Option<u64>> {
        self.readings
            .iter()
            .find(|r| r.metric.to_native() == metric.code())
            .map(|r| r.value())
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
                    value: r.value.to_native(),
                    metric: r.metric.to_native(),
                    status: r.status.to_native(),
                    reserved: r.reserved.to_native(),
                })
                .collect(),
        }
    }
}
