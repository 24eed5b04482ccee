//! Augur's embedded time-series store: one data directory holding per-VM series (profiles,
//! usage, forecasts), time-keyed events (migrations, decisions) and VM metadata.
//!
//! ## Layout and write path
//! ```text
//! dir/catalog.log      series and VMs (synced before any point refers to them)
//! dir/wal-<gen>.log    every appended batch, until a checkpoint seals it into blocks
//! dir/seg-<id>.log     sealed blocks: one series, up to `block_points` points, pco-compressed
//! dir/events.log       events, JSON
//! ```
//! Every file is a log of checksummed records ([`log_file`]). An append validates each point
//! (finite value, increasing time per series, a registered VM), writes the batch as one WAL
//! record, and adds the points to the series' in-memory head. A full head becomes a block in the
//! current segment. A checkpoint (when the WAL passes `wal_checkpoint_bytes`, and at close)
//! seals every head, syncs the segment, starts a new WAL and deletes the old one.
//!
//! ## Durability rule
//! A point is durable once the call that acknowledges it returns: [`Store::append`] with
//! [`Durability::EveryAppend`], or [`Store::sync`] after appends with [`Durability::Manual`].
//! augurd uses `Manual` and syncs once per sampling tick, after that tick's batch: on power loss at
//! most the tick being written is lost. A crash never loses an acknowledged point and never leaves
//! the store unopenable: a torn WAL tail is cut at open, a corrupt record anywhere is skipped and
//! reported ([`OpenReport`]), points sealed into blocks and still in the WAL are replayed once,
//! and a block of the unsynced current segment a crash lost while a later one survived is sealed
//! again from the WAL.
//!
//! ## Read path
//! Range scans per series and per VM, the latest point, and downsampled reads (min/mean/max/last
//! per bucket). Blocks of regular series keep no timestamps, so a read decompresses values only.
#![forbid(unsafe_code)]

mod block;
mod block_cache;
mod catalog;
pub mod downsample;
pub mod log_file;
mod store;
mod types;
mod wal;

pub use block::Values;
pub use catalog::SeriesInfo;
pub use store::{Durability, OpenReport, SeriesData, Store, StoreOptions, StoreStats};
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Log(#[from] log_file::LogError),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Block(#[from] block::BlockError),
}
