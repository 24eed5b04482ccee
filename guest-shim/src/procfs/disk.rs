//! /proc/diskstats, summed over whole disks.

const SECTOR_BYTES: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskStats {
    pub read_ops: u64,
    pub write_ops: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ms: u64,
    pub write_ms: u64,
    pub in_flight: u64,
}

/// Sums the devices `is_disk` accepts (whole disks: partitions would count twice).
pub fn parse_diskstats(text: &str, is_disk: impl Fn(&str) -> bool) -> DiskStats {
    let mut total = DiskStats::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 12 || !is_disk(words[2]) {
            continue;
        }
        let v: Vec<u64> = words[3..12].iter().map_while(|w| w.parse().ok()).collect();
        if v.len() < 9 {
            continue;
        }
        // reads merged sectors ms, writes merged sectors ms, in-flight
        total.read_ops += v[0];
        total.read_bytes += v[2] * SECTOR_BYTES;
        total.read_ms += v[3];
        total.write_ops += v[4];
        total.write_bytes += v[6] * SECTOR_BYTES;
        total.write_ms += v[7];
        total.in_flight += v[8];
    }
    total
}

/// A whole disk: listed in /sys/block, not a loop or RAM device, and not stacked on other disks
/// (an LVM or md device's I/O is already counted on the disks beneath it).
pub fn is_whole_disk(name: &str) -> bool {
    is_whole_disk_in(std::path::Path::new("/sys/block"), name)
}

fn is_whole_disk_in(block: &std::path::Path, name: &str) -> bool {
    let dir = block.join(name);
    !name.starts_with("loop")
        && !name.starts_with("ram")
        && !name.starts_with("zram")
        && dir.exists()
        && !has_entries(&dir.join("slaves"))
}

fn has_entries(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_stacked_on_disks_is_not_counted_again() {
        let block = tempfile::tempdir().unwrap();
        for (disk, under) in [("vda", None), ("dm-0", Some("vda")), ("md0", Some("vdb"))] {
            let slaves = block.path().join(disk).join("slaves");
            std::fs::create_dir_all(&slaves).unwrap();
            if let Some(under) = under {
                std::fs::write(slaves.join(under), "").unwrap();
            }
        }
        assert!(is_whole_disk_in(block.path(), "vda"));
        assert!(!is_whole_disk_in(block.path(), "dm-0"));
        assert!(!is_whole_disk_in(block.path(), "md0"));
        assert!(!is_whole_disk_in(block.path(), "vdz"), "not listed");
    }

    #[test]
    fn sums_whole_disks_only() {
        let text = "\
 253       0 vda 10 0 80 5 20 0 160 7 1 0 0 0 0 0 0
 253       1 vda1 9 0 72 4 19 0 152 6 0 0 0 0 0 0 0
   7       0 loop0 3 0 6 1 0 0 0 0 0 0 0
";
        let d = parse_diskstats(text, |n| n == "vda");
        assert_eq!(d.read_ops, 10);
        assert_eq!(d.read_bytes, 80 * 512);
        assert_eq!(d.write_ops, 20);
        assert_eq!(d.write_bytes, 160 * 512);
        assert_eq!((d.read_ms, d.write_ms, d.in_flight), (5, 7, 1));
    }

    #[test]
    fn short_lines_are_skipped() {
        assert_eq!(
            parse_diskstats("1 2 vda 3\n", |_| true),
            DiskStats::default()
        );
    }
}
