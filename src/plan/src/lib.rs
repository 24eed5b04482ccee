//! The migration planner: pure functions, no I/O, shared by augurd and the simulator.
//!
//! Given each host's capacity and its VMs' forecasts, [`plan`] finds hosts whose predicted demand
//! (the upper bound at the planning horizon) crosses the trigger share of capacity, and proposes
//! moves: which VM, to which host, by which migration method, with the predicted cost
//! ([`cost`]) and the benefit over the horizon. A move never overloads its target by the
//! target's own forecast, never breaks a rule (pinning, affinity, anti-affinity, maintenance,
//! concurrency and hourly budgets), and respects hysteresis and per-VM cool-downs. Every
//! decision carries its explanation: the inputs, the forecast, and each rejected alternative
//! with the reason.
#![forbid(unsafe_code)]

pub mod cost;
pub mod limits;
mod model;
mod planner;
pub mod risk;

pub use cost::{
    bandwidth_for, migration_cost, recalibrated, Link, Method, MigrationCost, MIN_CALIBRATION_BYTES,
};
pub use model::{Cluster, Host, HostId, MoveRecord, Resources, Rules, Vm, VmId};
pub use planner::{plan, Decision, Move, Plan, Rejected};
