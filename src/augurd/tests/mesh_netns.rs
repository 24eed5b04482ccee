//! Three augurd hosts, each in its own network namespace joined by veth links to a bridge (the
//! test makes them and removes them). host-a runs a microVM and is drained: the mesh finds
//! host-b through gossip, host-b bids and grants a lease, and host-a live-migrates the microVM
//! to host-b over the authenticated stream; the guest's progress carries on there, the lease is
//! committed, and the VM runs on one host only. host-x has another key: nobody hears it, and
//! its attempt to push a VM at host-b's microVM port is dropped. Faults, on two hosts draining a
//! large guest: the source killed once its reservation is granted leaves nothing on the target,
//! whose room frees when the lease lapses; the target killed mid-migration leaves the guest
//! running on its source and the move recorded as failed; a partition right after the grant
//! fails the move at the source, which keeps the guest, and frees the target's room. Needs root, `ip` and /dev/kvm; prints
//! `SKIPPED` otherwise.

use augur_admin::{AdminClient, Reply, Request};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TEST: &str = "hosts_in_namespaces_negotiate_and_move_a_microvm";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces and links, removed on drop.
struct Net {
    tag: String,
    bridge: String,
    hosts: Vec<String>,
}

impl Net {
    fn create(tag: &str, n: usize) -> Result<Self, String> {
        let net = Self {
            tag: tag.to_string(),
            bridge: format!("{tag}br"),
            hosts: (0..n).map(|i| format!("{tag}h{i}")).collect(),
        };
        ip(&["netns", "add", &net.bridge])?;
        ip(&["-n", &net.bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.bridge, "link", "set", "br0", "up"])?;
        for (i, ns) in net.hosts.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            let (inner, outer) = (format!("{tag}v{i}"), format!("{tag}p{i}"));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])?;
            ip(&["link", "set", &inner, "netns", ns])?;
            ip(&["link", "set", &outer, "netns", &net.bridge])?;
            ip(&[
                "-n",
                &net.bridge,
                "link",
                "set",
                &outer,
                "master",
                "br0",
                "up",
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.77.0.{}/24", i + 1),
                "dev",
                &inner,
            ])?;
            ip(&["-n", ns, "link", "set", &inner, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }
}

impl Net {
    /// Cuts host `i` off the others (its bridge port down), or joins it again.
    fn set_linked(&self, i: usize, linked: bool) {
        let port = format!("{}p{i}", self.tag);
        let state = if linked { "up" } else { "down" };
        ip(&["-n", &self.bridge, "link", "set", &port, state]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.bridge]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// An augurd process in a namespace, killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    ns: &str,
    dir: &Path,
    name: &str,
    driver: &str,
    addr: &str,
    peers: &[&str],
    key: &Path,
    lease_s: u64,
) -> Daemon {
    let socket = dir.join(format!("{name}.sock"));
    let config = dir.join(format!("{name}.toml"));
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}:7470\"")).collect();
    std::fs::write(
        &config,
        format!(
            "driver = \"{driver}\"\ndata_dir = \"{}\"\nadmin_socket = \"{}\"\nadmin_group = \"\"\nsample_interval_ms = 500\n\
             [store]\nenabled = false\n[forecast]\nenabled = false\n\
             [mesh]\nenabled = true\nhost_id = \"{name}\"\nlisten = \"{addr}:7470\"\npeers = [{}]\nkey_file = \"{}\"\n\
             libvirt_uri = \"qemu+tcp://{addr}/system\"\ncapacity_cpu = 8\ncapacity_memory_mib = 8192\nplan_every_s = 1\nlease_s = {lease_s}\n",
            dir.join(format!("{name}-data")).display(),
            socket.display(),
            peers.join(", "),
            key.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_augurd"),
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("augurd starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "augurd {name} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Daemon { child, socket }
}

fn call(d: &Daemon, request: Request) -> Result<Reply, String> {
    AdminClient::connect(&d.socket)
        .map_err(|e| e.to_string())?
        .call(request)
        .map_err(|e| e.to_string())
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_vm(d: &Daemon, spec: &str) {
    match call(
        d,
        Request::VmStart {
            spec: spec.into(),
            origin: None,
        },
    ) {
        Ok(Reply::VmStarted { .. }) => {}
        other => panic!("the microVM did not start: {other:?}"),
    }
}

fn peers(d: &Daemon) -> augur_admin::PeersReply {
    match call(d, Request::Peers) {
        Ok(Reply::Peers(p)) => p,
        other => panic!("peers: {other:?}"),
    }
}

/// `hosts` namespaces for `test`, tagged by `prefix` and this process; `None` after printing
/// why the test is skipped (it needs root, KVM and `ip`).
fn namespaces(test: &str, prefix: &str, hosts: usize) -> Option<Net> {
    if !can_run(test) {
        return None;
    }
    let tag = format!("{prefix}{}", std::process::id() % 10_000);
    Net::create(&tag, hosts)
        .map_err(|e| println!("SKIPPED {test}: cannot make network namespaces: {e}"))
        .ok()
}

/// Root for namespaces, KVM for microVMs; prints why not.
fn can_run(test: &str) -> bool {
    let is_root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    if !is_root {
        println!("SKIPPED {test}: needs root (network namespaces)");
        return false;
    }
    if let Some(reason) = augur_microvm::kvm_unavailable_reason() {
        println!("SKIPPED {test}: {reason}");
        return false;
    }
    true
}

#[test]
fn hosts_in_namespaces_negotiate_and_move_a_microvm() {
    let Some(net) = namespaces(TEST, "au", 3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mesh.key");
    std::fs::write(&key, "6b".repeat(32)).unwrap();
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, "17".repeat(32)).unwrap();

    // host-a knows only host-x; host-b knows host-a; gossip does the rest.
    let a = start(
        &net.hosts[0],
        dir.path(),
        "host-a",
        "microvm",
        "10.77.0.1",
        &["10.77.0.3"],
        &key,
        60,
    );
    let b = start(
        &net.hosts[1],
        dir.path(),
        "host-b",
        "microvm",
        "10.77.0.2",
        &["10.77.0.1"],
        &key,
        60,
    );
    let x = start(
        &net.hosts[2],
        dir.path(),
        "host-x",
        "none",
        "10.77.0.3",
        &["10.77.0.1", "10.77.0.2"],
        &wrong,
        60,
    );

    let started = Instant::now();
    wait_for(
        "host-a to find host-b through gossip",
        Duration::from_secs(30),
        || {
            peers(&a)
                .peers
                .iter()
                .any(|p| p.id == "host-b" && p.up && p.gossip)
                .then_some(())
        },
    );
    println!("host-a found host-b by gossip in {:?}", started.elapsed());
    let pa = peers(&a);
    assert!(
        pa.peers
            .iter()
            .all(|p| p.id != "host-x" && !(p.addr.starts_with("10.77.0.3") && p.up)),
        "host-x is not heard: {pa:?}"
    );
    wait_for(
        "host-x's messages to be refused",
        Duration::from_secs(30),
        || (peers(&a).auth_failures > 0 && peers(&b).auth_failures > 0).then_some(()),
    );

    let spec = "name = \"web\"\nmemory_mib = 32\nvcpus = 1\n[[phase]]\nkind = \"compute\"\nseconds = 600\nload = 0.3\n";
    start_vm(&a, spec);
    let progress = |d: &Daemon| match call(d, Request::Vms) {
        Ok(Reply::Vms { vms }) => vms.iter().find(|v| v.name == "web").map(|v| v.progress),
        _ => None,
    };
    wait_for("the microVM to run", Duration::from_secs(30), || {
        progress(&a).filter(|p| *p > 0)
    });

    // Meanwhile host-x, without the key, keeps about eight connections open to host-b's
    // microVM port that never authenticate: they must not keep the real move out.
    let mut squatter = Command::new("ip")
        .args(["netns", "exec", &net.hosts[2], "bash", "-c"])
        .arg("for i in $(seq 60); do (exec 3<>/dev/tcp/10.77.0.2/7471; sleep 4) 2>/dev/null & sleep 0.5; done; wait")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));

    assert!(matches!(
        call(&a, Request::Drain { host: None }),
        Ok(Reply::Orchestrator { draining: true, .. })
    ));
    let moved = wait_for(
        "the move to be carried out",
        Duration::from_secs(60),
        || match call(&a, Request::Migrations) {
            Ok(Reply::Migrations { migrations }) => migrations.into_iter().next(),
            _ => None,
        },
    );
    println!(
        "move: {} {} → {:?}: ok={} error={:?}; negotiation {:.1} ms, total {:?} ms, downtime {:?} ms, {:?} bytes (predicted {:.2} s); bids {:?}",
        moved.vm,
        moved.from,
        moved.to,
        moved.ok,
        moved.error,
        moved.negotiation_ms,
        moved.total_ms,
        moved.downtime_ms,
        moved.bytes,
        moved.predicted_total_s,
        moved.bids
    );
    assert_eq!(
        moved.to.as_deref(),
        Some("host-b"),
        "host-b granted the lease"
    );
    assert!(
        moved.ok,
        "the microVM moved, past host-x's idle connections: {:?}",
        moved.error
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(moved.downtime_ms.is_some() && moved.total_ms.is_some());
    // The guest runs on host-b, from where it paused, and no longer on host-a.
    let arrived = wait_for("the microVM on host-b", Duration::from_secs(10), || {
        progress(&b)
    });
    wait_for(
        "the microVM to keep running on host-b",
        Duration::from_secs(10),
        || progress(&b).filter(|p| *p > arrived),
    );
    assert_eq!(progress(&a), None, "the VM left host-a");
    // The lease was committed: host-b holds no reservation, the VM counts as its own.
    assert_eq!(peers(&b).reservations, 0);

    // host-x, without the key, cannot push a VM at host-b's microVM port.
    let refused_before = peers(&b).auth_failures;
    let pushed = Command::new("ip")
        .args(["netns", "exec", &net.hosts[2], "bash", "-c"])
        .arg("exec 3<>/dev/tcp/10.77.0.2/7471 && printf 'AUGS\\001garbage-with-no-key-at-all-000000000000' >&3 && sleep 1")
        .status()
        .unwrap();
    assert!(pushed.success(), "host-x reached host-b's microVM port");
    wait_for(
        "host-b to refuse host-x's stream",
        Duration::from_secs(10),
        || (peers(&b).auth_failures > refused_before).then_some(()),
    );
    assert_eq!(
        progress(&b).map(|_| ()),
        Some(()),
        "host-b still runs exactly the one VM"
    );
    let Ok(Reply::Explain { decisions, .. }) = call(&a, Request::Explain { vm: "web".into() })
    else {
        panic!("explain answers");
    };
    assert!(decisions
        .iter()
        .any(|d| d.trigger == "maintenance" && d.target.as_deref() == Some("host-b")));
    drop((x, b, a));
}

const TEST_DIES: &str = "a_source_that_dies_after_its_reservation_leaves_nothing_behind";

/// host-a is killed once host-b has granted it a reservation and the VM's memory is on its
/// way: host-b starts nothing, and the room it held is free again when the lease runs out.
/// Two hosts in namespaces tagged `prefix`; host-a runs a 256 MiB guest that writes most of its
/// memory and is draining to host-b, whose reservation for it is granted when this returns.
/// `None` if the test cannot run here.
fn draining_a_big_guest(
    test: &str,
    prefix: &str,
    lease_s: u64,
) -> Option<(Net, tempfile::TempDir, Daemon, Daemon)> {
    let net = namespaces(test, prefix, 2)?;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mesh.key");
    std::fs::write(&key, "5c".repeat(32)).unwrap();
    let a = start(
        &net.hosts[0],
        dir.path(),
        "host-a",
        "microvm",
        "10.77.0.1",
        &["10.77.0.2"],
        &key,
        lease_s,
    );
    let b = start(
        &net.hosts[1],
        dir.path(),
        "host-b",
        "microvm",
        "10.77.0.2",
        &["10.77.0.1"],
        &key,
        lease_s,
    );
    wait_for("host-a to see host-b", Duration::from_secs(30), || {
        peers(&a)
            .peers
            .iter()
            .any(|p| p.id == "host-b" && p.up)
            .then_some(())
    });
    // A guest whose memory is mostly written, so the transfer takes long enough to die in.
    let spec = "name = \"big\"\nmemory_mib = 256\n[[phase]]\nkind = \"memory\"\nseconds = 600\nworking_set_mib = 240\ntouch_mib_per_s = 400\n";
    start_vm(&a, spec);
    std::thread::sleep(Duration::from_secs(2));
    assert!(matches!(
        call(&a, Request::Drain { host: None }),
        Ok(Reply::Orchestrator { draining: true, .. })
    ));
    wait_for(
        "host-b to grant host-a a reservation",
        Duration::from_secs(60),
        || (peers(&b).reservations == 1).then_some(()),
    );
    Some((net, dir, a, b))
}

#[test]
fn a_source_that_dies_after_its_reservation_leaves_nothing_behind() {
    let Some((_net, dir, mut a, b)) = draining_a_big_guest(TEST_DIES, "ad", 5) else {
        return;
    };
    let killed = Instant::now();
    let _ = a.child.kill();
    let _ = a.child.wait();
    println!("host-a killed with host-b's reservation held");
    // host-b notices the stream end and starts nothing; the room frees when the lease lapses.
    room_freed(&b, Duration::from_secs(60));
    println!(
        "host-b released the room {:.1} s after host-a died",
        killed.elapsed().as_secs_f64()
    );
    assert_runs_nothing(&b);
    let log = std::fs::read_to_string(dir.path().join("host-b.log")).unwrap_or_default();
    println!(
        "host-a died {}",
        if log.contains("incoming microVM failed") {
            "while the VM's memory was arriving at host-b"
        } else {
            "before its stream reached host-b"
        }
    );
    drop((b, a));
}

const TEST_TARGET_DIES: &str =
    "a_target_that_dies_mid_migration_leaves_the_guest_running_on_its_source";

/// The guest `name`'s state and progress counter on `d`.
fn guest(d: &Daemon, name: &str) -> Option<(String, u64)> {
    match call(d, Request::Vms) {
        Ok(Reply::Vms { vms }) => vms
            .into_iter()
            .find(|v| v.name == name)
            .map(|v| (v.state, v.progress)),
        other => panic!("vms: {other:?}"),
    }
}

/// Waits until `d` holds no reservation.
fn room_freed(d: &Daemon, timeout: Duration) {
    wait_for("the reservation to lapse", timeout, || {
        (peers(d).reservations == 0).then_some(())
    });
}

fn assert_runs_nothing(d: &Daemon) {
    match call(d, Request::Vms) {
        Ok(Reply::Vms { vms }) => assert!(vms.is_empty(), "the target runs nothing: {vms:?}"),
        other => panic!("the target answers: {other:?}"),
    }
}

/// The failed move of `vm` that `d` records, once it does.
fn failed_move(d: &Daemon, vm: &str, timeout: Duration) -> augur_admin::MigrationRecordReply {
    wait_for(
        "the source to record the failed move",
        timeout,
        || match call(d, Request::Migrations) {
            Ok(Reply::Migrations { migrations }) => {
                migrations.into_iter().find(|m| m.vm == vm && !m.ok)
            }
            other => panic!("migrations: {other:?}"),
        },
    )
}

/// Asserts guest `name` runs on `d` and its progress goes on; returns progress before and after.
fn still_running(d: &Daemon, name: &str) -> (u64, u64) {
    let (state, before) = guest(d, name).expect("the guest is still on its source");
    assert_eq!(state, "running");
    let (_, after) = wait_for("the guest's progress", Duration::from_secs(30), || {
        guest(d, name).filter(|(_, p)| *p > before)
    });
    (before, after)
}

#[test]
fn a_target_that_dies_mid_migration_leaves_the_guest_running_on_its_source() {
    let Some((_net, _dir, a, mut b)) = draining_a_big_guest(TEST_TARGET_DIES, "at", 30) else {
        return;
    };
    let _ = b.child.kill();
    let _ = b.child.wait();
    let killed = Instant::now();
    println!("host-b killed with its reservation for host-a granted");
    let failed = failed_move(&a, "big", Duration::from_secs(60));
    println!(
        "host-a recorded the move as failed {:.1} s after host-b died: {}",
        killed.elapsed().as_secs_f64(),
        failed.error.as_deref().unwrap_or("-")
    );
    assert!(failed.error.is_some(), "a failed move says why");
    // The guest runs on where it was, and only there: host-b is gone.
    let (before, after) = still_running(&a, "big");
    println!("the guest's progress on host-a went on: {before} → {after}");
}

const TEST_PARTITION: &str = "a_partition_after_the_grant_fails_the_move_and_frees_the_room";

#[test]
fn a_partition_after_the_grant_fails_the_move_and_frees_the_room() {
    let Some((net, _dir, a, b)) = draining_a_big_guest(TEST_PARTITION, "ap", 5) else {
        return;
    };
    net.set_linked(1, false);
    let cut = Instant::now();
    println!("host-b cut off with its reservation for host-a granted");
    // Neither side hears the other: each gives up on the stalled stream by itself.
    let failed = failed_move(&a, "big", Duration::from_secs(90));
    println!(
        "host-a gave the move up {:.1} s into the partition: {}",
        cut.elapsed().as_secs_f64(),
        failed.error.as_deref().unwrap_or("-")
    );
    still_running(&a, "big");
    room_freed(&b, Duration::from_secs(90));
    println!(
        "host-b's room was free {:.1} s into the partition",
        cut.elapsed().as_secs_f64()
    );
    // Healed, with host-a's moves paused so it does not try again: host-b ran nothing.
    assert!(matches!(
        call(&a, Request::Pause),
        Ok(Reply::Orchestrator { .. })
    ));
    net.set_linked(1, true);
    assert_runs_nothing(&b);
    assert!(guest(&a, "big").is_some(), "the guest is on host-a, once");
}
