//! The store's data types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type VmId = u64;

/// A series' values: floating-point gauges and rates, or raw unsigned counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    F64,
    U64,
}

/// One value. A series holds one kind, fixed by its first write.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    F64(f64),
    U64(u64),
}

impl Value {
    pub fn kind(self) -> ValueKind {
        match self {
            Value::F64(_) => ValueKind::F64,
            Value::U64(_) => ValueKind::U64,
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Value::F64(v) => v,
            Value::U64(v) => v as f64,
        }
    }

    pub(crate) fn bits(self) -> u64 {
        match self {
            Value::F64(v) => v.to_bits(),
            Value::U64(v) => v,
        }
    }

    pub(crate) fn from_bits(kind: ValueKind, bits: u64) -> Self {
        match kind {
            ValueKind::F64 => Value::F64(f64::from_bits(bits)),
            ValueKind::U64 => Value::U64(bits),
        }
    }
}

/// A value at a time (nanoseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub ts_ns: i64,
    pub value: Value,
}

/// One value to append to the series (`vm`, `metric`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub vm: VmId,
    pub metric: &'a str,
    pub ts_ns: i64,
    pub value: Value,
}

/// A VM the store knows; series can only be written for registered VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmMeta {
    pub id: VmId,
    pub name: String,
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

/// A time-keyed record: a migration, a decision, a forecast with its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts_ns: i64,
    pub kind: String,
    #[serde(default)]
    pub vm: Option<VmId>,
    pub body: serde_json::Value,
}

/// One bucket of a downsampled read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ns: i64,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub last: f64,
    pub count: u64,
}

/// Why a point of an append was not stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RejectReason {
    /// NaN or an infinity.
    NonFinite,
    /// Not after the series' latest timestamp (series are append-only in time).
    OutOfOrder { last_ns: i64 },
    /// The VM was never registered.
    UnknownVm,
    /// The series holds the other kind of value.
    WrongKind { expected: ValueKind },
    /// The metric name is empty or too long.
    BadMetric,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::NonFinite => f.write_str("value is NaN or infinite"),
            RejectReason::OutOfOrder { last_ns } => {
                write!(f, "timestamp is not after the series' latest ({last_ns})")
            }
            RejectReason::UnknownVm => f.write_str("VM is not registered"),
            RejectReason::WrongKind { expected } => write!(f, "series holds {expected:?} values"),
            RejectReason::BadMetric => f.write_str("metric name must be 1-128 bytes"),
        }
    }
}

/// A rejected point: which one (its index in the batch) and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub vm: VmId,
    pub metric: String,
    pub ts_ns: i64,
    pub reason: RejectReason,
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppendReport {
    pub written: usize,
    pub rejected: Vec<Rejection>,
}
