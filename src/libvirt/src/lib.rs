//! Augur's libvirt driver: the QEMU/KVM domains of a production host.
//!
//! - [`domain_xml`]: a domain's identity, size, devices and the shim's virtio-serial channel;
//! - [`stats`]: libvirt's bulk domain stats (`virConnectGetAllDomainStats`) as samples;
//! - [`qemu_process`]: the QEMU process and vCPU threads of a domain, for host-side sources;
//! - [`migration`]: the migration method (from the cost model) as libvirt flags, and the report;
//! - [`Connection`] (working with the `libvirt` feature): discovery, bulk stats, dirty rate
//!   (`virDomainStartDirtyRateCalc`) and live migration (`virDomainMigrateToURI3`, peer to peer).
//!
//! Without the `libvirt` feature the pure parts build with no system library, and
//! [`open`] says the build lacks libvirt.
#![deny(unsafe_code)]

#[cfg(feature = "libvirt")]
mod connection;
#[cfg(not(feature = "libvirt"))]
#[path = "no_libvirt.rs"]
mod connection;
pub mod domain_xml;
pub mod migration;
pub mod qemu_process;
pub mod stats;

pub use connection::Connection;
pub use domain_xml::{DomainXml, SHIM_CHANNEL};
pub use migration::{MigrationReport, MigrationRequest};
pub use stats::{DomainStats, ParamValue};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("augur was built without libvirt support (enable the `libvirt` feature)")]
    NotBuilt,
    #[error("cannot connect to libvirt at {uri}: {reason}")]
    Connect { uri: String, reason: String },
    #[error("no domain named {name:?}: {reason}")]
    NoDomain { name: String, reason: String },
    #[error("bad domain XML: {0}")]
    Xml(String),
    #[error("libvirt: {0}")]
    Libvirt(String),
}

/// Whether this build can talk to libvirt.
pub const AVAILABLE: bool = cfg!(feature = "libvirt");

/// Opens a connection to `uri` (an error naming the missing feature in a build without it).
pub fn open(uri: &str) -> Result<Connection, Error> {
    Connection::open(uri)
}
