//! /proc/stat: CPU time of the whole guest.

/// USER_HZ: the unit of /proc/stat, fixed at 100 by the kernel's ABI on every architecture Augur
/// runs on.
const NS_PER_TICK: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub iowait_ns: u64,
    pub steal_ns: u64,
    pub cpus: u64,
}

/// Parses the aggregate `cpu` line and counts the `cpuN` lines.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let mut times = None;
    let mut cpus = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => {
                let v: Vec<u64> = words.map_while(|w| w.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
                // is already inside user and nice.
                if v.len() < 8 {
                    return None;
                }
                times = Some(CpuTimes {
                    busy_ns: (v[0] + v[1] + v[2] + v[5] + v[6]) * NS_PER_TICK,
                    idle_ns: v[3] * NS_PER_TICK,
                    iowait_ns: v[4] * NS_PER_TICK,
                    steal_ns: v[7] * NS_PER_TICK,
                    cpus: 0,
                });
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    times.map(|t| CpuTimes { cpus, ..t })
}

/// The shim's own CPU time from /proc/self/stat (utime + stime), ns.
pub fn parse_self_cpu_ns(text: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the file, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * NS_PER_TICK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_aggregate_line_and_counts_cpus() {
        let text = "cpu  10 1 5 100 3 2 1 4 0 0\ncpu0 5 0 2 50 1 1 0 2 0 0\ncpu1 5 1 3 50 2 1 1 2 0 0\nintr 5\n";
        let t = parse_stat(text).unwrap();
        assert_eq!(t.busy_ns, 19 * NS_PER_TICK);
        assert_eq!(t.idle_ns, 100 * NS_PER_TICK);
        assert_eq!(t.iowait_ns, 3 * NS_PER_TICK);
        assert_eq!(t.steal_ns, 4 * NS_PER_TICK);
        assert_eq!(t.cpus, 2);
    }

    #[test]
    fn a_short_or_missing_cpu_line_is_unavailable() {
        assert_eq!(parse_stat("cpu 1 2 3\n"), None);
        assert_eq!(parse_stat("intr 5\n"), None);
    }

    #[test]
    fn self_cpu_survives_a_name_with_spaces() {
        let text = "42 (augur shim) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 50";
        assert_eq!(parse_self_cpu_ns(text), Some(10 * NS_PER_TICK));
    }
}
