//! The messages of the admin protocol.

pub use augur_sense::GuestWindow;
use augur_sense::Window;
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;
/// The longest request line the daemon accepts.
pub const MAX_LINE: usize = 256 * 1024;
/// The longest reply line a client accepts (exports are large; the daemon caps them below this).
pub const MAX_REPLY: usize = 64 << 20;

/// A request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    pub id: u64,
    pub request: Request,
}

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The daemon's health and what this host supports.
    Status,
    /// Every VM with its latest figures.
    Vms,
    /// One VM's current profile window and recent history.
    Profile {
        vm: String,
        #[serde(default)]
        history: Option<usize>,
    },
    /// Start a microVM from the text of a spec file.
    VmStart {
        spec: String,
        /// Where the spec came from, for messages.
        #[serde(default)]
        origin: Option<String>,
    },
    /// Stop a VM (by id or name).
    VmStop {
        vm: String,
    },
    /// Size and contents of the embedded store.
    StoreStats,
    /// One VM's stored series over `from_ns <= t < to_ns`, as CSV or JSON text.
    StoreExport {
        vm: String,
        from_ns: i64,
        to_ns: i64,
        format: ExportFormat,
    },
    /// Forecasts of one stored VM's resources, with its workload class.
    Predict {
        vm: String,
    },
    /// Live-migrate a libvirt domain to another libvirt daemon.
    Migrate(MigrateRequest),
    /// The mesh: this host and every peer it knows.
    Peers,
    /// The moves this host's orchestrator tried, newest last.
    Migrations,
    /// The orchestrator's decisions about one VM, with their inputs and the alternatives.
    Explain {
        vm: String,
    },
    /// Maintenance: take no VMs and move every VM away (`host` must name this host).
    Drain {
        #[serde(default)]
        host: Option<String>,
    },
    /// Stop or restart automatic moves (decisions are still made and explained).
    Pause,
    Resume,
}

/// A live migration asked for by an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub vm: String,
    /// The destination libvirt URI.
    pub to: String,
    /// Where QEMU's migration stream goes (`tcp://host:port`); libvirt picks when absent.
    #[serde(default)]
    pub migrate_uri: Option<String>,
    /// `pre-copy`, `auto-converge` or `post-copy`; chosen from the cost model when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// The domain XML to define on the destination, when its paths differ from the source's.
    #[serde(default)]
    pub dest_xml: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Csv,
    Json,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    pub version: u32,
    /// The request's id, or 0 when the request could not be read far enough to know it.
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AdminError>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line was not JSON, or not a request of this version.
    Malformed,
    UnsupportedVersion,
    UnknownRequest,
    TooLarge,
    UnknownVm,
    InvalidSpec,
    /// The host cannot do this (no KVM, a resource limit).
    Unavailable,
    PermissionDenied,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AdminError {
    pub code: ErrorCode,
    pub message: String,
}

impl AdminError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Status(StatusReply),
    Vms {
        vms: Vec<VmSummary>,
    },
    Profile(ProfileReply),
    VmStarted {
        vm: VmSummary,
    },
    VmStopped {
        id: u64,
        name: String,
    },
    StoreStats(StoreStatsReply),
    Export {
        format: ExportFormat,
        points: usize,
        content: String,
    },
    Predict(PredictReply),
    Migrated(MigrationReply),
    Peers(PeersReply),
    Migrations {
        migrations: Vec<MigrationRecordReply>,
    },
    Explain {
        vm: String,
        decisions: Vec<DecisionReply>,
    },
    /// Drain, pause and resume: what the orchestrator is doing now.
    Orchestrator {
        host_id: String,
        paused: bool,
        draining: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerReply {
    pub id: String,
    pub addr: String,
    pub up: bool,
    /// Seconds since the peer last answered.
    pub last_seen_s: Option<f64>,
    pub draining: bool,
    pub capacity_cpu: f64,
    pub capacity_memory_mib: f64,
    /// Its forecast plus reservations, upper bound at the first horizon.
    pub booked_cpu: f64,
    pub booked_memory_mib: f64,
    pub headroom_cpu: f64,
    pub headroom_memory_mib: f64,
    pub libvirt_uri: Option<String>,
    pub error: Option<String>,
    /// Alive according to gossip (SWIM membership).
    #[serde(default)]
    pub gossip: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersReply {
    pub host_id: String,
    pub listen: String,
    pub paused: bool,
    pub draining: bool,
    pub dry_run: bool,
    /// Peer messages refused because they failed authentication.
    pub auth_failures: u64,
    /// Reservations this host holds for sources now.
    #[serde(default)]
    pub reservations: usize,
    pub peers: Vec<PeerReply>,
}

/// One move the orchestrator tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecordReply {
    pub at_s: i64,
    pub vm: String,
    pub from: String,
    pub to: Option<String>,
    pub method: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Offer to granted reservation.
    pub negotiation_ms: f64,
    pub total_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub bytes: Option<u64>,
    pub predicted_total_s: f64,
    pub predicted_downtime_s: f64,
    /// Every peer's answer to the offer.
    pub bids: Vec<String>,
}

/// One planning decision about this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionReply {
    pub at_s: i64,
    pub host: String,
    /// hot or maintenance.
    pub trigger: String,
    pub peak_share: f64,
    pub peak_resource: String,
    /// The chance, by the forecasts, that the host's demand exceeds its capacity at the horizon.
    #[serde(default)]
    pub overload_risk: f64,
    /// The VM chosen to move, and where.
    pub vm: Option<String>,
    pub target: Option<String>,
    pub method: Option<String>,
    pub predicted_total_s: Option<f64>,
    pub predicted_downtime_s: Option<f64>,
    pub source_after: Option<f64>,
    pub target_after: Option<f64>,
    /// How much the chosen move lowers the expected number of overloaded hosts.
    #[serde(default)]
    pub risk_avoided: Option<f64>,
    /// Every VM the decision looked at.
    pub considered: Vec<String>,
    /// Alternatives not taken, with why.
    pub rejected: Vec<String>,
    pub note: Option<String>,
    /// The figures the planner was given.
    pub inputs: Vec<String>,
    /// What was done about it: negotiating, dry run, paused, none.
    pub action: String,
}

/// How a migration went, with the cost model's prediction beside what libvirt measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReply {
    pub vm: String,
    pub to: String,
    pub method: String,
    /// Why this method (the cost model's verdict, or "asked for").
    pub reason: String,
    pub predicted_total_s: f64,
    pub predicted_downtime_s: f64,
    pub ok: bool,
    pub error: Option<String>,
    pub total_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub bytes: Option<u64>,
    pub iterations: Option<u64>,
    pub running_on_source: bool,
}

/// One of the guest's flows as its shim reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFlowReply {
    pub proto: String,
    pub address: String,
    /// The remote port; 0 for ephemeral ports.
    pub port: u16,
    /// well_known, registered or ephemeral.
    pub port_class: String,
    pub sockets: u32,
}

/// What a VM's shim channel carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimChannelReply {
    pub socket: String,
    pub connected: bool,
    pub connections: u64,
    pub reports: u64,
    pub bad_frames: u64,
    pub throttled: u64,
    pub last_error: Option<String>,
}

/// One forecast at one horizon, in the resource's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HorizonForecast {
    pub horizon_s: i64,
    pub mean: f64,
    /// Calibrated upper bound at the model's level.
    pub upper: f64,
    /// What the mean follows: the model, or a simple reference (the last value, a recent
    /// median) that has lately erred clearly less on this VM, or a blend of the two.
    #[serde(default)]
    pub centre: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceForecast {
    /// cpu, mem, disk or net.
    pub resource: String,
    pub unit: String,
    /// The last step's value.
    pub current: f64,
    pub model_generation: u64,
    pub trained_at_s: i64,
    /// Coverage target of `upper`.
    pub level: f64,
    pub horizons: Vec<HorizonForecast>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadClassReply {
    /// idle, cpu-bound, memory-bound, io-bound, bursty or periodic.
    pub class: String,
    /// The classifier's splits from its root to the class.
    pub explanation: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictReply {
    pub vm_id: u64,
    pub name: String,
    /// Seconds per step of the history the forecasts start from.
    pub step_s: i64,
    pub history_steps: usize,
    /// Unix seconds of the last step: forecasts are ahead of it.
    pub last_step_s: i64,
    pub resources: Vec<ResourceForecast>,
    pub class: Option<WorkloadClassReply>,
    /// What is missing and why (no model yet, too little history, ...).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStatsReply {
    pub dir: String,
    pub bytes_on_disk: u64,
    pub series: usize,
    pub vms: usize,
    pub samples: u64,
    pub oldest_ns: Option<i64>,
    pub newest_ns: Option<i64>,
    pub bytes_per_sample: Option<f64>,
    pub segments: usize,
    pub events: usize,
    pub read_errors: u64,
}

/// What the host can sense, found at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `/dev/kvm` opened.
    pub kvm: bool,
    /// `KVM_CAP_DIRTY_LOG_RING` is offered.
    pub dirty_ring: bool,
    /// Guests can execute SSE floating point (false under kvm_pvm).
    pub guest_fp: bool,
    /// Hardware perf events open on vCPU threads.
    pub pmu: bool,
    /// tracefs was found or mounted.
    pub tracefs: bool,
    /// `kvm:kvm_exit` has fired on some vCPU thread (never under kvm_pvm).
    pub kvm_exit_tracepoint: bool,
    /// Connected to a libvirt daemon (driver = "libvirt").
    #[serde(default)]
    pub libvirt: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub daemon_version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub uptime_s: f64,
    pub driver: String,
    pub data_dir: String,
    pub sample_interval_ms: u64,
    pub vms: usize,
    pub capabilities: Capabilities,
    /// Sampling-thread CPU time per VM per sample, averaged since start (ns).
    pub sampling_cpu_ns_per_vm: Option<f64>,
    /// Samples overwritten in the ring before the profiler read them.
    pub ring_lost: u64,
}

/// One VM in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    pub id: u64,
    pub name: String,
    pub state: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub phase: String,
    pub progress: u64,
    pub uptime_s: f64,
    pub dirty_source: String,
    /// fp_compute phases run integer work because the hypervisor cannot run guest SSE.
    pub fp_degraded: bool,
    pub current: Option<Window>,
    /// microvm or libvirt.
    #[serde(default)]
    pub driver: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileReply {
    pub vm: VmSummary,
    /// Oldest first.
    pub history: Vec<Window>,
    /// Network flows: destination VM id, port, bytes, packets.
    pub flows: Vec<(u32, u16, u64, u64)>,
    /// What this profile lacks and why (no PMU, no tracepoint, ...).
    pub notes: Vec<String>,
    /// The guest's flows, from its shim.
    #[serde(default)]
    pub guest_flows: Vec<GuestFlowReply>,
    /// The shim channel, where the VM has one.
    #[serde(default)]
    pub shim: Option<ShimChannelReply>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_types_fail() {
        let env = RequestEnvelope {
            version: 1,
            id: 9,
            request: Request::Profile {
                vm: "batch".into(),
                history: Some(5),
            },
        };
        let line = serde_json::to_string(&env).unwrap();
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&line).unwrap(), env);
        let unknown = r#"{"version":1,"id":2,"request":{"type":"reboot"}}"#;
        assert!(serde_json::from_str::<RequestEnvelope>(unknown).is_err());
    }
}
