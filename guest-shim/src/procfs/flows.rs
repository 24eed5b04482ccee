//! /proc/net/{tcp,tcp6,udp,udp6}: the guest's flows by remote address, protocol and port class.
//! Listening and unconnected sockets are not flows; neither is loopback traffic.

use augur_wire::flows::{FlowReport, GuestFlow, PortClass, MAX_FLOWS, PROTO_TCP, PROTO_UDP};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// TCP states that carry (or are about to carry) traffic: ESTABLISHED, SYN_SENT, SYN_RECV,
/// FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING. TIME_WAIT, CLOSE and LISTEN are left out.
const TCP_LIVE: [u8; 8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0B];
/// A connected UDP socket shows as ESTABLISHED.
const UDP_CONNECTED: u8 = 0x01;

/// An address as /proc/net prints it: each 32-bit word of the network-order address printed
/// as a native (little-endian here) integer in hex; one word for IPv4, four for IPv6.
fn parse_addr(hex: &str) -> Option<Ipv6Addr> {
    if !matches!(hex.len(), 8 | 32) {
        return None;
    }
    let mut octets = [0u8; 16];
    let words = hex.len() / 8;
    for i in 0..words {
        let word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    Some(if words == 1 {
        Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]).to_ipv6_mapped()
    } else {
        Ipv6Addr::from(octets)
    })
}

fn is_loopback(addr: &Ipv6Addr) -> bool {
    addr.is_loopback() || addr.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
}

/// Counts the flows in one /proc/net table into `flows`.
pub fn count_table(text: &str, proto: u8, flows: &mut HashMap<(Ipv6Addr, u8, u16), u32>) {
    for line in text.lines().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 {
            continue;
        }
        let Some((addr_hex, port_hex)) = words[2].split_once(':') else {
            continue;
        };
        let (Some(addr), Ok(port), Ok(state)) = (
            parse_addr(addr_hex),
            u16::from_str_radix(port_hex, 16),
            u8::from_str_radix(words[3], 16),
        ) else {
            continue;
        };
        let live = match proto {
            PROTO_TCP => TCP_LIVE.contains(&state),
            _ => state == UDP_CONNECTED,
        };
        if !live || addr.is_unspecified() || port == 0 || is_loopback(&addr) {
            continue;
        }
        *flows
            .entry((addr, proto, PortClass::report_port(port)))
            .or_default() += 1;
    }
}

/// The busiest [`MAX_FLOWS`] flows, and how many were left out.
pub fn report(flows: HashMap<(Ipv6Addr, u8, u16), u32>, ts_ns: u64) -> FlowReport {
    let mut all: Vec<GuestFlow> = flows
        .into_iter()
        .map(|((addr, proto, port), sockets)| GuestFlow {
            addr: addr.octets(),
            port,
            proto,
            reserved: 0,
            sockets,
        })
        .collect();
    all.sort_by(|a, b| {
        b.sockets
            .cmp(&a.sockets)
            .then(a.addr.cmp(&b.addr))
            .then(a.port.cmp(&b.port))
    });
    let mut report = FlowReport::new(ts_ns);
    report.omitted = all.len().saturating_sub(MAX_FLOWS) as u32;
    all.truncate(MAX_FLOWS);
    report.flows = all;
    report
}

/// Reads all four tables.
pub fn read(ts_ns: u64) -> FlowReport {
    let mut flows = HashMap::new();
    for (file, proto) in [
        ("tcp", PROTO_TCP),
        ("tcp6", PROTO_TCP),
        ("udp", PROTO_UDP),
        ("udp6", PROTO_UDP),
    ] {
        if let Some(text) = super::read(format!("/proc/net/{file}")) {
            count_table(&text, proto, &mut flows);
        }
    }
    report(flows, ts_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0F02000A:C350 0202000A:2328 01 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0F02000A:C351 0202000A:2328 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:C352 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1
   4: 0F02000A:0016 0302000A:D431 01 00000000:00000000 00:00000000 00000000     0        0 5 1
   5: 0F02000A:C353 0202000A:2328 06 00000000:00000000 00:00000000 00000000     0        0 6 1
";

    #[test]
    fn groups_live_connections_by_remote_and_port_class() {
        let mut flows = HashMap::new();
        count_table(TCP, PROTO_TCP, &mut flows);
        let report = report(flows, 1);
        // Two sockets to 10.0.2.2:9000, one inbound from 10.0.2.3 on an ephemeral port; the
        // listener, the loopback pair and the TIME_WAIT socket are not flows.
        assert_eq!(report.flows.len(), 2);
        let top = report.flows[0];
        assert_eq!(top.ip(), "10.0.2.2".parse::<std::net::IpAddr>().unwrap());
        assert_eq!((top.port, top.sockets, top.proto), (9000, 2, PROTO_TCP));
        let inbound = report.flows[1];
        assert_eq!(
            inbound.ip(),
            "10.0.2.3".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(inbound.port, 0);
    }

    #[test]
    fn reads_ipv6_addresses() {
        // ::1 is loopback and skipped; 2001:db8::1 is kept.
        let text = "sl local rem st\n 0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 x\n 1: 00000000000000000000000001000000:1F90 B80D0120000000000000000001000000:0050 01 x\n";
        let mut flows = HashMap::new();
        count_table(text, PROTO_TCP, &mut flows);
        let report = report(flows, 1);
        assert_eq!(report.flows.len(), 1);
        assert_eq!(
            report.flows[0].ip(),
            "2001:db8::1".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(report.flows[0].port, 80);
    }

    #[test]
    fn garbage_lines_are_skipped_and_the_cap_holds() {
        let mut flows = HashMap::new();
        count_table(
            "header\nnonsense\n 0: zz:zz yy:yy 01\n",
            PROTO_UDP,
            &mut flows,
        );
        assert!(flows.is_empty());
        for i in 0..100u16 {
            flows.insert(
                (
                    Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped(),
                    PROTO_UDP,
                    1000 + i,
                ),
                1,
            );
        }
        let report = report(flows, 1);
        assert_eq!(report.flows.len(), MAX_FLOWS);
        assert_eq!(report.omitted, 100 - MAX_FLOWS as u32);
    }
}
