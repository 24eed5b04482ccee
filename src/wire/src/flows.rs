//! The guest's network flows as the shim reports them: who the guest talks to, by remote address,
//! protocol and port class, counted in sockets. Bytes per flow are not in /proc, so a flow carries
//! only how many sockets it has; the guest's byte counters travel in a [`crate::Sample`].

/// The schema version of [`FlowReport`]; readers reject reports of another schema.
pub const FLOW_SCHEMA: u16 = 1;
/// The most flows one report may carry; the shim keeps the busiest and counts the rest.
pub const MAX_FLOWS: usize = 64;

/// TCP, as in an IP header's protocol field.
pub const PROTO_TCP: u8 = 6;
/// UDP, as in an IP header's protocol field.
pub const PROTO_UDP: u8 = 17;

/// Where a remote port falls in the IANA ranges. Ephemeral ports say nothing about the service,
/// so flows to them are grouped under port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortClass {
    /// 1-1023.
    WellKnown,
    /// 1024-49151.
    Registered,
    /// 49152-65535 (and 0), reported as port 0.
    Ephemeral,
}

impl PortClass {
    pub fn of(port: u16) -> Self {
        match port {
            1..=1023 => PortClass::WellKnown,
            1024..=49151 => PortClass::Registered,
            _ => PortClass::Ephemeral,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PortClass::WellKnown => "well_known",
            PortClass::Registered => "registered",
            PortClass::Ephemeral => "ephemeral",
        }
    }

    /// The port a flow to `port` is reported under.
    pub fn report_port(port: u16) -> u16 {
        match PortClass::of(port) {
            PortClass::Ephemeral => 0,
            _ => port,
        }
    }
}

/// Sockets from the guest to one remote address, protocol and port (or port class).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct GuestFlow {
    /// IPv6 address; IPv4 travels as an IPv4-mapped address (::ffff:a.b.c.d).
    pub addr: [u8; 16],
    /// The remote port, or 0 for ephemeral ports.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    pub reserved: u8,
    /// Sockets in this flow.
    pub sockets: u32,
}

impl GuestFlow {
    pub fn ip(&self) -> std::net::IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        }
    }

    pub fn port_class(&self) -> PortClass {
        if self.port == 0 {
            PortClass::Ephemeral
        } else {
            PortClass::of(self.port)
        }
    }

    pub fn proto_label(&self) -> &'static str {
        match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => "other",
        }
    }
}

/// One interval's flow table from the guest.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FlowReport {
    pub schema: u16,
    /// The guest's clock when it read the table, ns since the epoch (informational only).
    pub ts_ns: u64,
    /// Busiest first, at most [`MAX_FLOWS`].
    pub flows: Vec<GuestFlow>,
    /// Flows left out to keep within [`MAX_FLOWS`].
    pub omitted: u32,
}

impl FlowReport {
    pub fn new(ts_ns: u64) -> Self {
        Self {
            schema: FLOW_SCHEMA,
            ts_ns,
            flows: Vec::new(),
            omitted: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_classes_follow_the_iana_ranges() {
        assert_eq!(PortClass::of(22), PortClass::WellKnown);
        assert_eq!(PortClass::of(1023), PortClass::WellKnown);
        assert_eq!(PortClass::of(1024), PortClass::Registered);
        assert_eq!(PortClass::of(49151), PortClass::Registered);
        assert_eq!(PortClass::of(49152), PortClass::Ephemeral);
        assert_eq!(PortClass::of(0), PortClass::Ephemeral);
        assert_eq!(PortClass::report_port(50000), 0);
        assert_eq!(PortClass::report_port(8080), 8080);
    }

    #[test]
    fn ipv4_travels_mapped_and_comes_back() {
        let v4 = std::net::Ipv4Addr::new(10, 0, 2, 2);
        let flow = GuestFlow {
            addr: v4.to_ipv6_mapped().octets(),
            port: 9000,
            proto: PROTO_TCP,
            reserved: 0,
            sockets: 1,
        };
        assert_eq!(flow.ip(), std::net::IpAddr::V4(v4));
        assert_eq!(flow.port_class(), PortClass::Registered);
    }
}
