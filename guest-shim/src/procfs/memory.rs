//! /proc/meminfo, /proc/vmstat and /proc/pressure/memory.

use super::field;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// Active(anon) + Active(file): what the guest kernel considers its working set.
    pub active_bytes: u64,
}

pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let kib = |key| field(text, key).map(|v| v * 1024);
    Some(MemInfo {
        total_bytes: kib("MemTotal")?,
        available_bytes: kib("MemAvailable")?,
        active_bytes: kib("Active(anon)")? + kib("Active(file)")?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmStat {
    pub page_faults: Option<u64>,
    pub major_faults: Option<u64>,
    pub swap_out_pages: Option<u64>,
}

pub fn parse_vmstat(text: &str) -> VmStat {
    VmStat {
        page_faults: field(text, "pgfault"),
        major_faults: field(text, "pgmajfault"),
        swap_out_pages: field(text, "pswpout"),
    }
}

/// The `total=` microseconds of the `some` and `full` lines of a PSI file.
pub fn parse_psi(text: &str) -> (Option<u64>, Option<u64>) {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("total="))?
            .parse()
            .ok()
    };
    (total("some"), total("full"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes() {
        let text = "MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  600 kB\nActive(anon):  100 kB\nActive(file): 50 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 1_024_000);
        assert_eq!(m.available_bytes, 614_400);
        assert_eq!(m.active_bytes, 153_600);
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn vmstat_and_psi() {
        let v = parse_vmstat("pgfault 123\npgmajfault 4\n");
        assert_eq!(v.page_faults, Some(123));
        assert_eq!(v.major_faults, Some(4));
        assert_eq!(v.swap_out_pages, None);
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=700\n";
        assert_eq!(parse_psi(psi), (Some(1500), Some(700)));
        assert_eq!(parse_psi(""), (None, None));
    }
}
