//! What the planner reasons about: hosts with capacity, VMs with forecasts, rules, and the
//! record of past moves.

use crate::cost::Link;
use serde::Serialize;

pub type HostId = String;
pub type VmId = String;

/// An amount of each resource: CPU in cores, memory in bytes, disk and network in bytes/s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resources {
    pub cpu: f64,
    pub mem: f64,
    pub disk: f64,
    pub net: f64,
}

impl Resources {
    pub const NAMES: [&'static str; 4] = ["cpu", "mem", "disk", "net"];

    pub fn get(&self, i: usize) -> f64 {
        [self.cpu, self.mem, self.disk, self.net][i]
    }

    pub fn scaled(&self, k: f64) -> Resources {
        Resources {
            cpu: self.cpu * k,
            mem: self.mem * k,
            disk: self.disk * k,
            net: self.net * k,
        }
    }

    pub fn add(&self, o: &Resources) -> Resources {
        Resources {
            cpu: self.cpu + o.cpu,
            mem: self.mem + o.mem,
            disk: self.disk + o.disk,
            net: self.net + o.net,
        }
    }

    /// The largest share of `capacity` used by any resource with a capacity, and which.
    pub fn peak_share(&self, capacity: &Resources) -> (f64, &'static str) {
        (0..4)
            .filter(|&i| capacity.get(i) > 0.0)
            .map(|i| (self.get(i) / capacity.get(i), Self::NAMES[i]))
            .fold((0.0, "cpu"), |best, x| if x.0 > best.0 { x } else { best })
    }
}

/// One VM as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vm {
    pub id: VmId,
    /// Demand now.
    pub current: Resources,
    /// Forecast mean and calibrated upper bound of demand at the planning horizon.
    pub forecast_mean: Resources,
    pub forecast_upper: Resources,
    /// Memory to copy (bytes), writable working set (bytes), dirty rate (bytes/s).
    pub memory: f64,
    pub working_set: f64,
    pub dirty_rate: f64,
    /// Never moved automatically.
    pub pinned: bool,
    /// VMs of one affinity group stay on one host: a member is moved only if the whole group
    /// can follow, which this planner does not propose, so members stay put.
    pub affinity_group: Option<String>,
    /// No two VMs of one anti-affinity group share a host.
    pub anti_affinity_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Host {
    pub id: HostId,
    pub capacity: Resources,
    pub vms: Vec<Vm>,
    /// Takes no VMs in; its VMs may be drained.
    pub maintenance: bool,
    /// Migrations in flight from or to this host now.
    pub migrating: u32,
    /// Capacity promised to incoming migrations not yet placed.
    pub reserved: Resources,
}

impl Host {
    /// The upper bound of the host's demand: the sum of the VMs' means plus the root of the sum
    /// of their squared margins (upper minus mean). Bounds of separate VMs do not add up: all of
    /// a host's VMs rarely peak at once, and summing their upper bounds would call every host
    /// hot. Treating the margins as independent is the assumption; VMs that do peak together
    /// show it in their forecasts.
    pub fn demand_upper(&self) -> Resources {
        self.upper_with(None)
    }

    /// [`Self::demand_upper`] with `extra` added to the host's VMs.
    pub fn upper_with(&self, extra: Option<&Vm>) -> Resources {
        self.upper_of(self.vms.iter().chain(extra))
    }

    /// [`Self::demand_upper`] without the VM `id`.
    pub fn upper_without(&self, id: &str) -> Resources {
        self.upper_of(self.vms.iter().filter(|v| v.id != id))
    }

    fn upper_of<'a>(&self, vms: impl Iterator<Item = &'a Vm>) -> Resources {
        self.moments_of(vms).upper()
    }

    /// The chance that any resource's demand exceeds its capacity at the horizon, reading the
    /// host's bound as the `z` quantile (see [`crate::risk`]); with `extra` added and the VM
    /// `without` taken away.
    pub fn overload_risk(&self, extra: Option<&Vm>, without: Option<&str>, z: f64) -> f64 {
        let vms = self
            .vms
            .iter()
            .filter(|v| Some(v.id.as_str()) != without)
            .chain(extra);
        self.moments_of(vms).risk(&self.capacity, z)
    }

    /// The moments of the host's VMs (and its reservations).
    pub(crate) fn moments(&self) -> Moments {
        self.moments_of(self.vms.iter())
    }

    fn moments_of<'a>(&self, vms: impl Iterator<Item = &'a Vm>) -> Moments {
        let empty = Moments {
            mean: self.reserved,
            margin2: [0.0; 4],
        };
        vms.fold(empty, |m, vm| m.with(vm))
    }
}

/// A set of VMs' demand at the horizon, per resource: the sum of their means and the sum of
/// their squared margins (upper minus mean). Both are sums, so a VM is added or taken away
/// without going over the others again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moments {
    mean: Resources,
    margin2: [f64; 4],
}

impl Moments {
    fn margin2_of(vm: &Vm) -> [f64; 4] {
        std::array::from_fn(|i| {
            let margin = (vm.forecast_upper.get(i) - vm.forecast_mean.get(i)).max(0.0);
            margin * margin
        })
    }

    pub(crate) fn with(mut self, vm: &Vm) -> Moments {
        self.mean = self.mean.add(&vm.forecast_mean);
        for (m, v) in self.margin2.iter_mut().zip(Self::margin2_of(vm)) {
            *m += v;
        }
        self
    }

    /// These moments less those of `vm`, which must be among them.
    pub(crate) fn without(mut self, vm: &Vm) -> Moments {
        self.mean = self.mean.add(&vm.forecast_mean.scaled(-1.0));
        for (m, v) in self.margin2.iter_mut().zip(Self::margin2_of(vm)) {
            // Rounding must not leave a negative square.
            *m = (*m - v).max(0.0);
        }
        self
    }

    /// The means plus the root of the summed squared margins.
    pub(crate) fn upper(&self) -> Resources {
        let m = self.margin2.map(f64::sqrt);
        Resources {
            cpu: self.mean.cpu + m[0],
            mem: self.mean.mem + m[1],
            disk: self.mean.disk + m[2],
            net: self.mean.net + m[3],
        }
    }

    /// See [`Host::overload_risk`].
    pub(crate) fn risk(&self, capacity: &Resources, z: f64) -> f64 {
        (0..4)
            .filter(|&i| capacity.get(i) > 0.0)
            .map(|i| {
                let margin = self.margin2[i].sqrt();
                crate::risk::overload_risk(self.mean.get(i), margin, capacity.get(i), z)
            })
            .fold(0.0, f64::max)
    }
}

/// A move that happened (for cool-downs and the hourly budget).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoveRecord {
    pub vm: VmId,
    pub at_s: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub now_s: i64,
    /// Past moves, any order.
    pub history: Vec<MoveRecord>,
    /// Migrations in flight in the whole mesh.
    pub migrating: u32,
}

/// The operator's rules and the planner's settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rules {
    /// A host is hot when its predicted demand (upper bound) exceeds this share of capacity.
    pub trigger_share: f64,
    /// A move may fill its target only up to this share (below the trigger: hysteresis, so
    /// the target does not become the next hot host).
    pub target_share: f64,
    /// A move must lower the source's peak share by at least this much.
    pub min_gain: f64,
    /// Off a host at risk of overload (a chance of at least [`Rules::min_risk_drop`]), a move
    /// must lower the expected number of overloaded hosts (source and target together) by at
    /// least this much: a move that leaves the source as overloaded as before, or passes the
    /// risk on to its target, spends the budget for nothing.
    pub min_risk_drop: f64,
    /// The coverage level of the forecasts' upper bounds (the forecaster's `level`).
    pub bound_level: f64,
    /// A moved VM stays put for `cooldown_s · 2^(moves in the last day - 1)`.
    pub cooldown_s: i64,
    pub max_concurrent_per_host: u32,
    pub max_concurrent_mesh: u32,
    pub max_moves_per_hour: u32,
    /// Moves proposed per call, at most.
    pub max_moves_per_plan: usize,
    pub link: Link,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            trigger_share: 0.9,
            target_share: 0.8,
            min_gain: 0.05,
            min_risk_drop: 0.01,
            bound_level: 0.95,
            cooldown_s: 1800,
            max_concurrent_per_host: 1,
            max_concurrent_mesh: 4,
            max_moves_per_hour: 12,
            max_moves_per_plan: 4,
            link: Link::default(),
        }
    }
}
