//! Live pre-copy migration of a microVM to another host.
//!
//! The stream is any reliable byte stream both ways (augurd wraps a TCP connection in the
//! mesh's authenticated channel); this module neither opens connections nor checks keys.
//!
//! ```text
//!  source (VM running)                                  target
//!    |---- Header(spec, memory, vCPUs, SSE) ------------->|  admits it: builds the VM, no vCPU runs
//!    |---- Pages (all memory this host backed) --------->|  round 0, the guest running meanwhile
//!    |---- Pages (dirtied during the last round) ------->|  rounds 1..n, until the rest would go
//!    |          ...                                       |  within the downtime goal, or n = max
//!    |  pause vCPUs (kick, park at an instruction         |
//!    |  boundary, take registers and pacing state)        |
//!    |---- Pages (the rest, and what the host wrote) --->|
//!    |---- Vcpu(state) x vCPUs, Done(guest time) ------->|  sets registers
//!    |<--- Ready -----------------------------------------|
//!    |---- Go ------------------------------------------->|  starts the vCPUs
//!    |<--- Started ---------------------------------------|
//!  stops its VM: the move is done
//! ```
//! Until `Go` is sent, any failure (the stream breaks, the target aborts, a bad record) resumes
//! the VM on the source and the target discards what it built. After `Go` the source resumes
//! only on the target's authenticated word that it started nothing (it has stopped and joined
//! any vCPU it had begun before it says so); if neither that nor `Started` comes, the VM stays
//! paused on the source ([`MigrationError::OutcomeUnknown`]) rather than risk running on two
//! hosts.
//!
//! Guest memory moves; the disk is scratch space the guest program never reads back, so the
//! target starts with an empty one, and host-side counters start from zero there.

pub(crate) mod codec;
mod incoming;
mod outgoing;
mod vcpu_state;

pub use incoming::{accept, IncomingHeader};
pub use outgoing::{MigrationParams, MigrationReport, Round};
pub use vcpu_state::VcpuSnapshot;

use crate::dirty::DirtyError;
use crate::vm::VmError;

/// Version of the stream format; a target refuses any other.
pub const VERSION: u16 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("the migration stream failed: {0}")]
    Io(std::io::Error),
    #[error("malformed migration stream: {0}")]
    Malformed(String),
    #[error("the peer aborted the migration: {0}")]
    PeerAborted(String),
    #[error("the incoming VM was refused: {0}")]
    Refused(String),
    #[error("the VM cannot be migrated: {0}")]
    NotMigratable(String),
    #[error("failed to pause the vCPUs: {0}")]
    Pause(String),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Dirty(#[from] DirtyError),
    #[error(transparent)]
    Memory(#[from] augur_sys::GuestMemoryError),
    #[error("KVM refused the state of vCPU {cpu}")]
    SetState {
        cpu: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("the target did not confirm that the VM started ({0}); it stays paused here")]
    OutcomeUnknown(String),
}
