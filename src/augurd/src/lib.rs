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
