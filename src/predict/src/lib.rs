//! Forecasting for Augur: loaders for real VM traces, the baseline forecasters every model is
//! measured against, and the evaluation protocol (time split, MAE, MASE as GIFT-Eval computes it).
//!
//! Every series is a regular 5-minute grid of one resource (CPU, memory, disk or network). A
//! forecast made at step `t` may use values up to and including `y[t]`, never later ones.
#![forbid(unsafe_code)]

pub mod baselines;
pub mod classify;
pub mod eval;
pub mod gbt;
pub mod split;
pub mod trace;

/// Steps per day at 5-minute resolution: the season of the seasonal baselines and of MASE.
pub const SEASON: usize = 288;
/// Seconds per step of every loaded series.
pub const STEP_S: i64 = 300;
