//! /proc/net/dev, summed over every interface but loopback.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetDev {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

pub fn parse_net_dev(text: &str) -> NetDev {
    let mut total = NetDev::default();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = counters
            .split_whitespace()
            .map_while(|w| w.parse().ok())
            .collect();
        if v.len() < 10 {
            continue;
        }
        total.rx_bytes += v[0];
        total.rx_packets += v[1];
        total.tx_bytes += v[8];
        total.tx_packets += v[9];
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_interfaces_but_loopback() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets ...\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  eth0: 2000 20 0 0 0 0 0 0 3000 30 0 0 0 0 0 0\n  eth1: 5 1 0 0 0 0 0 0 7 1 0 0 0 0 0 0\n";
        let n = parse_net_dev(text);
        assert_eq!(n.rx_bytes, 2005);
        assert_eq!(n.rx_packets, 21);
        assert_eq!(n.tx_bytes, 3007);
        assert_eq!(n.tx_packets, 31);
    }
}
