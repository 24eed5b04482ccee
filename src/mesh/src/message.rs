//! What hosts say to each other. Every message travels in an [`Envelope`] inside an
//! authenticated frame ([`crate::frame`]).

use serde::{Deserialize, Serialize};

/// A host's name in the mesh.
pub type HostId = String;
/// A target's handle on a reservation.
pub type LeaseId = u64;

/// Resource demand (or capacity): vCPUs, MiB of memory, disk and network bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Demand {
    pub cpu: f64,
    pub memory_mib: f64,
    pub disk_bps: f64,
    pub net_bps: f64,
}

impl Demand {
    pub fn plus(&self, other: &Demand) -> Demand {
        Demand {
            cpu: self.cpu + other.cpu,
            memory_mib: self.memory_mib + other.memory_mib,
            disk_bps: self.disk_bps + other.disk_bps,
            net_bps: self.net_bps + other.net_bps,
        }
    }

    pub(crate) fn fields(&self) -> [(&'static str, f64); 4] {
        [
            ("cpu", self.cpu),
            ("memory", self.memory_mib),
            ("disk", self.disk_bps),
            ("net", self.net_bps),
        ]
    }

    /// Every figure finite and not negative: what a peer may send.
    pub fn is_sane(&self) -> bool {
        self.fields()
            .iter()
            .all(|(_, v)| v.is_finite() && *v >= 0.0)
    }
}

/// A forecast at one horizon: the mean and the calibrated upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HorizonDemand {
    pub horizon_s: u32,
    pub mean: Demand,
    pub upper: Demand,
}

/// How to reach a host's VMs and whether it takes any: advertised in every `Pong`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The libvirt URI sources migrate domains to.
    pub libvirt_uri: Option<String>,
    /// The address QEMU's migration stream should use on this host.
    pub migrate_host: Option<String>,
    /// In maintenance: takes no VMs.
    pub draining: bool,
    /// The TCP port (at the host's mesh address) taking Augur microVMs, if it runs them.
    #[serde(default)]
    pub microvm_port: Option<u16>,
}

/// A source's proposal to move one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Unique per source.
    pub offer_id: u64,
    pub vm: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The VM's forecast, one entry per horizon.
    pub forecast: Vec<HorizonDemand>,
    /// The cost model's migration time, seconds.
    pub migration_s: f64,
}

/// The most horizons an offer may carry.
pub const MAX_HORIZONS: usize = 16;

impl Offer {
    /// Whether the offer asks for anything at all (an empty one would fit anywhere, forever).
    pub fn is_empty(&self) -> bool {
        self.forecast
            .iter()
            .all(|h| h.upper.fields().iter().all(|(_, v)| *v == 0.0))
            && self.memory_mib == 0
    }

    /// Whether a peer's offer is well formed (it is checked before anything is reserved).
    pub fn validate(&self) -> Result<(), String> {
        if self.vm.is_empty() || self.vm.len() > 256 {
            return Err("the VM name is empty or longer than 256 bytes".into());
        }
        if self.forecast.is_empty() || self.forecast.len() > MAX_HORIZONS {
            return Err(format!(
                "the forecast has {} horizons (1..={MAX_HORIZONS} allowed)",
                self.forecast.len()
            ));
        }
        if !self
            .forecast
            .iter()
            .all(|h| h.mean.is_sane() && h.upper.is_sane())
        {
            return Err("the forecast holds a negative or non-finite figure".into());
        }
        if !self.migration_s.is_finite() || self.migration_s < 0.0 {
            return Err("the migration time is negative or non-finite".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Liveness and what the host could still take at each horizon.
    Ping,
    Pong {
        /// What the host could still take at each horizon.
        headroom: Vec<HorizonDemand>,
        capacity: Demand,
        /// Its own forecast plus what it reserved and received, at each horizon.
        booked: Vec<HorizonDemand>,
        #[serde(default)]
        info: PeerInfo,
    },
    /// Source → target: would you take this VM?
    Offer(Offer),
    /// Target → source: yes; `headroom` is the smallest share of capacity left free after the
    /// VM, over resources and horizons (higher is better).
    Bid {
        offer_id: u64,
        headroom: f64,
    },
    Decline {
        offer_id: u64,
        reason: String,
    },
    /// Source → chosen target: hold the capacity for `lease_ms`.
    Reserve {
        offer: Offer,
        lease_ms: u64,
    },
    Granted {
        offer_id: u64,
        lease: LeaseId,
        lease_ms: u64,
    },
    Refused {
        offer_id: u64,
        reason: String,
    },
    /// Source → target: the VM runs on you now.
    Commit {
        lease: LeaseId,
    },
    Committed {
        lease: LeaseId,
    },
    /// Source → target: the move is still under way (a libvirt migration the target does not
    /// see); hold the room `lease_ms` from now.
    Renew {
        lease: LeaseId,
        lease_ms: u64,
    },
    Renewed {
        lease: LeaseId,
        lease_ms: u64,
    },
    /// Source → target: the move did not happen; free the capacity.
    Release {
        lease: LeaseId,
    },
    Released {
        lease: LeaseId,
    },
    /// Source → target: whatever you granted for this offer, I never heard of it (the answer
    /// to Reserve was lost or late); free it.
    Withdraw {
        offer_id: u64,
    },
    Withdrawn {
        offer_id: u64,
        /// Whether a reservation was held for it.
        freed: bool,
    },
    /// A request the receiver could not act on.
    Error {
        reason: String,
    },
}

/// A message with who sent it and when; the frame authenticates all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: HostId,
    /// Who it is for; empty only on a `Ping` to an address whose host is not known yet. A frame
    /// for another host is refused, so a frame copied off the wire cannot be replayed elsewhere.
    #[serde(default)]
    pub to: HostId,
    /// Increases with every message a host sends (a replayed message is refused).
    pub seq: u64,
    /// The sender's clock, milliseconds since the epoch.
    pub sent_ms: u64,
    /// The `seq` of the request this answers.
    #[serde(default)]
    pub reply_to: Option<u64>,
    pub msg: Message,
}
