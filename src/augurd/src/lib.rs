//! The Augur host daemon, as a library so that tests and benchmarks drive the same code as the
//! `augurd` binary.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod demo;
pub mod domains;
pub mod forecast;
pub mod host;
pub mod metrics;
pub mod microvm_moves;
mod notify;
pub mod orchestrator;
pub mod recorder;
pub mod server;
mod summary;
mod switch;

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking over a lock whose holder panicked: every state augurd guards stays
/// consistent between statements, so a panic elsewhere must not stop the daemon.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
