//! A domain's QEMU process and vCPU threads, found in /proc: libvirt starts QEMU with
//! `-name guest=NAME,debug-threads=on`, which names each vCPU thread `CPU N/KVM` (or `CPU N/TCG`).

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuProcess {
    pub pid: u32,
    /// vCPU thread ids, in vCPU order.
    pub vcpu_tids: Vec<u32>,
}

/// Whether a NUL-separated command line is QEMU's for the domain `name`.
pub fn cmdline_names_domain(cmdline: &[u8], name: &str) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|w| {
        w[0] == b"-name"
            && std::str::from_utf8(w[1]).is_ok_and(|v| {
                // libvirt escapes a ',' in the name as ',,'.
                let escaped = name.replace(',', ",,");
                v.strip_prefix("guest=")
                    .is_some_and(|rest| rest == escaped || rest.starts_with(&format!("{escaped},")))
                    || v == name
            })
    })
}

/// The vCPU index of a thread named `CPU N/KVM` or `CPU N/TCG`.
pub fn vcpu_index(comm: &str) -> Option<u32> {
    let rest = comm.trim().strip_prefix("CPU ")?;
    let (n, accel) = rest.split_once('/')?;
    matches!(accel, "KVM" | "TCG" | "HVF" | "WHPX").then(|| n.parse().ok())?
}

/// Finds the QEMU process of domain `name` under `proc_root` (normally /proc).
pub fn find(proc_root: &Path, name: &str) -> Option<QemuProcess> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !cmdline_names_domain(&cmdline, name) {
            continue;
        }
        let mut vcpus: Vec<(u32, u32)> = std::fs::read_dir(entry.path().join("task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| {
                let tid = t.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                Some((vcpu_index(&comm)?, tid))
            })
            .collect();
        vcpus.sort_unstable();
        return Some(QemuProcess {
            pid,
            vcpu_tids: vcpus.into_iter().map(|(_, tid)| tid).collect(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn recognises_the_domains_command_line() {
        let line = cmd(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=web1,debug-threads=on",
            "-m",
            "256",
        ]);
        assert!(cmdline_names_domain(&line, "web1"));
        assert!(!cmdline_names_domain(&line, "web"));
        assert!(!cmdline_names_domain(
            &cmd(&["bash", "-c", "-name"]),
            "web1"
        ));
        let comma = cmd(&["qemu", "-name", "guest=a,,b,debug-threads=on"]);
        assert!(cmdline_names_domain(&comma, "a,b"));
    }

    #[test]
    fn names_vcpu_threads() {
        assert_eq!(vcpu_index("CPU 0/KVM\n"), Some(0));
        assert_eq!(vcpu_index("CPU 12/TCG"), Some(12));
        assert_eq!(vcpu_index("qemu-system-x86"), None);
        assert_eq!(vcpu_index("CPU x/KVM"), None);
    }

    #[test]
    fn finds_the_process_and_its_vcpus_in_a_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        let make = |pid: u32, cmd: &[u8], threads: &[(u32, &str)]| {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("task")).unwrap();
            std::fs::write(dir.join("cmdline"), cmd).unwrap();
            for (tid, comm) in threads {
                let t = dir.join("task").join(tid.to_string());
                std::fs::create_dir_all(&t).unwrap();
                std::fs::write(t.join("comm"), comm).unwrap();
            }
        };
        make(10, b"sshd\0", &[(10, "sshd")]);
        make(
            20,
            &cmd(&["qemu", "-name", "guest=db,debug-threads=on"]),
            &[
                (20, "qemu-system-x86"),
                (23, "CPU 1/KVM"),
                (22, "CPU 0/KVM"),
                (24, "worker"),
            ],
        );
        let q = find(root.path(), "db").unwrap();
        assert_eq!(q.pid, 20);
        assert_eq!(q.vcpu_tids, [22, 23]);
        assert!(find(root.path(), "web").is_none());
    }
}
