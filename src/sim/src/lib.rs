//! A trace-driven cluster simulator: traced VMs are placed on hosts, time is replayed step by
//! step, and a policy migrates VMs with migration times and bytes from the cost model. It
//! measures what each policy costs and saves: host overload, SLA violation, migrations.
//!
//! One step is one trace step (5 minutes). At each step every VM's demand is its traced value;
//! a host's demand is the sum over the VMs on it, plus, for a VM migrating in or out, the
//! migration's overhead (10% of the VM's CPU on both hosts, as Beloglazov & Buyya model it). A
//! host is overloaded in a step when its CPU demand exceeds its capacity.
#![forbid(unsafe_code)]

mod metrics;
mod placement;
mod policy;
pub mod svg;
mod world;

pub use augur_plan::Rules;
pub use metrics::SimReport;
pub use placement::place_first_fit;
pub use policy::Policy;
pub use world::{simulate, SimConfig, SimVm};
