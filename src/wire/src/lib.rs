//! Augur's data on the move: sample records of raw cumulative counters ([`Sample`]), the framed
//! codec that carries them across sockets ([`frame`]), and the shared-memory ring that carries
//! them from sampling threads (or processes) to the profiler ([`ring`]).
//!
//! Records are rkyv archives. Counters are stored raw and cumulative; rates are derived later
//! from a pair of samples. A reading whose source could not measure it is `None` ("unavailable"),
//! never a made-up zero.
#![forbid(unsafe_code)]

pub mod flows;
pub mod frame;
mod metric;
pub mod ring;
mod sample;

pub use flows::{FlowReport, GuestFlow, PortClass};
pub use frame::Record;
pub use metric::{Metric, Source};
pub use sample::{
    ArchivedReading, ArchivedSample, Reading, Sample, VmId, SAMPLE_SCHEMA, STATUS_OK,
    STATUS_UNAVAILABLE,
};
