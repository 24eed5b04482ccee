//! Real QEMU guests under private libvirt daemons, for the tests that need them.

use augur_admin::{AdminClient, ProfileReply, Reply, Request};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The guest lab that tests/guests/setup.sh prepared.
#[derive(Debug)]
pub struct Lab {
    pub dir: PathBuf,
    pub scripts: PathBuf,
}

impl Lab {
    /// The lab, or why the calling test must be skipped.
    pub fn find() -> Result<Self, String> {
        if !augur_libvirt::AVAILABLE {
            return Err("augurd was built without the libvirt feature".into());
        }
        if !is_root() {
            return Err("needs root (private libvirt daemons)".into());
        }
        let dir = PathBuf::from(
            std::env::var("AUGUR_GUEST_LAB").unwrap_or_else(|_| "/var/tmp/augur-guest-lab".into()),
        );
        for file in ["vmlinux", "initramfs.cpio.gz"] {
            if !dir.join(file).exists() {
                return Err(format!(
                    "{} is missing (run tests/guests/setup.sh)",
                    dir.join(file).display()
                ));
            }
        }
        for tool in ["qemu-system-x86_64", "libvirtd", "virsh"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map_or(true, |o| !o.status.success())
            {
                return Err(format!(
                    "{tool} is not installed (run tests/guests/setup.sh)"
                ));
            }
        }
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests");
        Ok(Self { dir, scripts })
    }

    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// A domain from tests/guests/domain.xml.in.
    pub fn domain_xml(&self, name: &str, cmdline: &str) -> String {
        std::fs::read_to_string(self.scripts.join("domain.xml.in"))
            .unwrap()
            .replace("@NAME@", name)
            .replace("@KERNEL@", &self.dir.join("vmlinux").display().to_string())
            .replace(
                "@INITRD@",
                &self.dir.join("initramfs.cpio.gz").display().to_string(),
            )
            .replace("@CMDLINE@", cmdline)
            .replace("@RUN@", &self.run().display().to_string())
    }
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

/// A private libvirt daemon, stopped (with its domains) on drop.
#[derive(Debug)]
pub struct Daemon {
    n: u32,
    pub uri: String,
    script: PathBuf,
    domains: Vec<String>,
}

impl Daemon {
    /// Starts libvirtd #`n`; `domains` are destroyed when it is dropped.
    pub fn start(lab: &Lab, n: u32, domains: &[&str]) -> Self {
        let script = lab.scripts.join("libvirtd.sh");
        let _ = Command::new(&script)
            .args([&n.to_string(), "stop"])
            .status();
        // QEMU outlives a daemon killed with its test: end this test's leftover guests.
        for name in domains {
            let _ = Command::new("pkill")
                .args(["-f", &format!("qemu-system-x86_64 -name guest={name},")])
                .status();
        }
        let out = Command::new(&script)
            .arg(n.to_string())
            .env("AUGUR_GUEST_LAB", &lab.dir)
            .output()
            .expect("libvirtd.sh runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "libvirtd {n} did not start: {text}");
        Self {
            n,
            uri: text.lines().last().unwrap_or_default().trim().to_string(),
            script,
            domains: domains.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// Runs virsh against this daemon: success and output.
    pub fn virsh(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("virsh")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .expect("virsh runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for name in self.domains.clone() {
            let _ = self.virsh(&["destroy", &name]);
            let _ = self.virsh(&["undefine", &name]);
        }
        let _ = Command::new(&self.script)
            .args([&self.n.to_string(), "stop"])
            .status();
    }
}

/// A VM's profile, or `None` if augurd does not know it.
pub fn profile(client: &mut AdminClient, vm: &str, history: usize) -> Option<ProfileReply> {
    match client.call(Request::Profile {
        vm: vm.into(),
        history: Some(history),
    }) {
        Ok(Reply::Profile(p)) => Some(p),
        _ => None,
    }
}

/// Polls `f` every half second until it gives a value; panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Heartbeat lines ("HB n uptime") a guest's console log holds.
pub fn heartbeats(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("HB "))
        .count()
}
