//! How a domain is moved: the migration method chosen from the cost model, turned into libvirt's
//! flags, and what the move cost when it is done.

use augur_plan::cost::Method;
use serde::{Deserialize, Serialize};

// libvirt's virDomainMigrateFlags (stable ABI, libvirt-domain.h).
pub const MIGRATE_LIVE: u32 = 1;
pub const MIGRATE_PEER2PEER: u32 = 2;
pub const MIGRATE_PERSIST_DEST: u32 = 8;
pub const MIGRATE_UNDEFINE_SOURCE: u32 = 16;
pub const MIGRATE_AUTO_CONVERGE: u32 = 8192;
pub const MIGRATE_POSTCOPY: u32 = 32768;

/// A live migration to ask libvirt for.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationRequest {
    /// The destination libvirt URI (`qemu+tcp://host/system`, `qemu+unix:///system?socket=...`).
    pub dest_uri: String,
    /// Where QEMU's migration stream goes (`tcp://host:port`); libvirt picks when `None`.
    pub migrate_uri: Option<String>,
    pub method: Method,
    /// The domain XML for the destination (paths that differ there), when not the source's.
    pub dest_xml: Option<String>,
    /// Abort the job if it has not finished after this long (the domain keeps running here).
    pub give_up_after: Option<std::time::Duration>,
}

impl MigrationRequest {
    /// Live and peer-to-peer (the source daemon drives the move and the client may go away);
    /// the definition moves with the domain.
    pub fn flags(&self) -> u32 {
        let base =
            MIGRATE_LIVE | MIGRATE_PEER2PEER | MIGRATE_PERSIST_DEST | MIGRATE_UNDEFINE_SOURCE;
        match self.method {
            Method::PreCopy => base,
            Method::AutoConverge => base | MIGRATE_AUTO_CONVERGE,
            // Starts as pre-copy; the driver switches to post-copy after the first pass.
            Method::PostCopy => base | MIGRATE_POSTCOPY,
        }
    }
}

/// What a finished (or failed) migration cost, from libvirt's completed-job stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub domain: String,
    pub method: String,
    pub ok: bool,
    pub error: Option<String>,
    pub total_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub bytes: Option<u64>,
    /// Pre-copy passes over memory.
    pub iterations: Option<u64>,
    /// Whether the domain is still running on the source (it must be, after a failure).
    pub running_on_source: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method) -> MigrationRequest {
        MigrationRequest {
            dest_uri: "qemu+tcp://b/system".into(),
            migrate_uri: None,
            method,
            dest_xml: None,
            give_up_after: None,
        }
    }

    #[test]
    fn flags_follow_the_method() {
        let pre = request(Method::PreCopy).flags();
        assert_eq!(pre & MIGRATE_LIVE, MIGRATE_LIVE);
        assert_eq!(pre & MIGRATE_PEER2PEER, MIGRATE_PEER2PEER);
        assert_eq!(pre & (MIGRATE_AUTO_CONVERGE | MIGRATE_POSTCOPY), 0);
        assert_ne!(
            request(Method::AutoConverge).flags() & MIGRATE_AUTO_CONVERGE,
            0
        );
        assert_ne!(request(Method::PostCopy).flags() & MIGRATE_POSTCOPY, 0);
    }
}
