//! Two augurd hosts, each with its own libvirt daemon, joined by the mesh on loopback. Draining
//! one moves its domain to the other: the planner proposes the move, the peer bids and grants a
//! lease, the domain is live-migrated peer to peer, the lease is committed, and the guest keeps
//! running. A third host with another key is refused by both. Then the other way round, with
//! the destination QEMU killed mid-migration: the move fails, the target releases the lease, and
//! the guest keeps running on its source, once.
//!
//! Needs what `libvirt_guests` needs (root, QEMU, libvirt, the guest lab, the libvirt feature);
//! prints `SKIPPED` with the reason otherwise.

use augur_admin::{Reply, Request};
use augur_tests::guests::{heartbeats, wait_for, Daemon, Lab};
use augur_tests::TestDaemon;
use augurd::config::Driver;
use std::path::Path;
use std::time::Duration;

const TEST: &str = "draining_a_host_moves_its_domain_through_the_mesh";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn key_file(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{byte:02x}").repeat(32)).unwrap();
    path
}

#[allow(clippy::too_many_arguments)]
fn mesh_host(
    id: &str,
    uri: &str,
    key: &Path,
    port: u16,
    peers: Vec<String>,
    advertise_uri: &str,
) -> TestDaemon {
    let (id, uri, key, advertise) = (
        id.to_string(),
        uri.to_string(),
        key.to_path_buf(),
        advertise_uri.to_string(),
    );
    TestDaemon::start_with(Driver::Libvirt, move |c| {
        c.sample_interval_ms = 500;
        c.forecast.enabled = false;
        c.libvirt.uri = uri;
        c.libvirt.refresh_s = 1;
        c.libvirt.dirty_rate_every_s = 0;
        c.libvirt.shim = false;
        c.mesh.enabled = true;
        c.mesh.host_id = id;
        c.mesh.listen = format!("127.0.0.1:{port}");
        c.mesh.peers = peers;
        c.mesh.key_file = key;
        c.mesh.libvirt_uri = advertise;
        c.mesh.migrate_host = "127.0.0.1".into();
        c.mesh.capacity_cpu = 8.0;
        c.mesh.capacity_memory_mib = 8192;
        c.mesh.plan_every_s = 1;
    })
}

fn call(daemon: &TestDaemon, request: Request) -> Reply {
    daemon.client().call(request).expect("augurd answers")
}

#[test]
fn draining_a_host_moves_its_domain_through_the_mesh() {
    let lab = match Lab::find() {
        Ok(lab) => lab,
        Err(reason) => {
            println!("SKIPPED {TEST}: {reason}");
            return;
        }
    };
    std::fs::create_dir_all(lab.run()).unwrap();
    let serial = lab.run().join("roamer.serial");
    let _ = std::fs::remove_file(&serial);
    let lv_a = Daemon::start(&lab, 3, &["roamer"]);
    let lv_b = Daemon::start(&lab, 4, &["roamer"]);

    // A guest without a shim channel, so the same XML is valid on both "hosts" of this one
    // machine; both QEMUs append to the same console log.
    let xml = lab.domain_xml("roamer", "augur.shim=0");
    let start = xml.find("<channel").unwrap();
    let end = xml.find("</channel>").unwrap() + "</channel>".len();
    let xml = format!("{}{}", &xml[..start], &xml[end..]);
    let path = lab.run().join("roamer.xml");
    std::fs::write(&path, xml).unwrap();
    let (ok, out) = lv_a.virsh(&["create", &path.display().to_string()]);
    assert!(ok, "{out}");

    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path(), "mesh.key", 0x5a);
    let wrong = key_file(keys.path(), "other.key", 0xa5);
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let a = mesh_host(
        "host-a",
        &lv_a.uri,
        &key,
        port_a,
        vec![format!("127.0.0.1:{port_b}"), format!("127.0.0.1:{port_c}")],
        &lv_a.uri,
    );
    let b = mesh_host(
        "host-b",
        &lv_b.uri,
        &key,
        port_b,
        vec![format!("127.0.0.1:{port_a}")],
        &lv_b.uri,
    );
    // A host with another key, which also tries to talk to host-b.
    let c = mesh_host(
        "host-c",
        &lv_b.uri,
        &wrong,
        port_c,
        vec![format!("127.0.0.1:{port_b}")],
        &lv_b.uri,
    );

    wait_for("host-a to see host-b", Duration::from_secs(60), || {
        let Reply::Peers(p) = call(&a, Request::Peers) else {
            return None;
        };
        let b_up = p.peers.iter().any(|x| x.id == "host-b" && x.up && x.gossip);
        let c_refused = p
            .peers
            .iter()
            .any(|x| x.addr.ends_with(&port_c.to_string()) && !x.up);
        (b_up && c_refused).then_some(())
    });
    wait_for(
        "host-a to profile the domain",
        Duration::from_secs(120),
        || {
            matches!(call(&a, Request::Vms), Reply::Vms { vms } if vms.iter().any(|v| v.name == "roamer" && v.current.is_some()))
            .then_some(())
        },
    );
    let before = wait_for("the guest's heartbeat", Duration::from_secs(60), || {
        let n = heartbeats(&serial);
        (n >= 2).then_some(n)
    });

    let refused = a.client().call(Request::Drain {
        host: Some("host-b".into()),
    });
    assert!(
        refused.is_err(),
        "draining another host by name is refused: {refused:?}"
    );
    assert!(matches!(
        call(
            &a,
            Request::Drain {
                host: Some("host-a".into())
            }
        ),
        Reply::Orchestrator { draining: true, .. }
    ));

    let moved = wait_for("the move", Duration::from_secs(120), || {
        let Reply::Migrations { migrations } = call(&a, Request::Migrations) else {
            return None;
        };
        migrations.into_iter().find(|m| m.ok)
    });
    println!(
        "drained through the mesh: {} {} → {} by {}; negotiation {:.1} ms, migration {:?} ms, downtime {:?} ms, {:?} bytes; predicted {:.2} s / {:.3} s",
        moved.vm,
        moved.from,
        moved.to.as_deref().unwrap_or("-"),
        moved.method,
        moved.negotiation_ms,
        moved.total_ms,
        moved.downtime_ms,
        moved.bytes,
        moved.predicted_total_s,
        moved.predicted_downtime_s
    );
    for bid in &moved.bids {
        println!("  {bid}");
    }
    assert_eq!(moved.to.as_deref(), Some("host-b"));
    let (ok, list) = lv_b.virsh(&["list", "--name"]);
    assert!(ok && list.lines().any(|l| l.trim() == "roamer"), "{list}");
    let (_, left) = lv_a.virsh(&["list", "--name"]);
    assert!(
        !left.lines().any(|l| l.trim() == "roamer"),
        "the VM runs once: {left}"
    );
    wait_for(
        "the heartbeat to go on after the move",
        Duration::from_secs(30),
        || (heartbeats(&serial) >= before + 3).then_some(()),
    );

    let Reply::Explain { decisions, .. } = call(
        &a,
        Request::Explain {
            vm: "roamer".into(),
        },
    ) else {
        panic!("explain answers");
    };
    let decision = decisions
        .iter()
        .find(|d| d.vm.as_deref() == Some("roamer"))
        .expect("a decision chose the domain");
    assert_eq!(decision.trigger, "maintenance");
    assert_eq!(decision.target.as_deref(), Some("host-b"));
    assert!(!decision.inputs.is_empty());

    // host-b counts the VM; host-c's messages were refused by both.
    let Reply::Peers(pb) = call(&b, Request::Peers) else {
        panic!("peers answers");
    };
    assert!(pb.auth_failures >= 1, "host-b refused host-c: {pb:?}");
    wait_for(
        "host-b to profile the arrived domain",
        Duration::from_secs(60),
        || {
            matches!(call(&b, Request::Vms), Reply::Vms { vms } if vms.iter().any(|v| v.name == "roamer"))
            .then_some(())
        },
    );

    // The target dies mid-migration: host-a is back in service, host-b is drained, and every
    // destination QEMU started for the domain on host-a's daemon is killed as soon as it shows.
    assert!(matches!(
        call(&a, Request::Resume),
        Reply::Orchestrator {
            draining: false,
            ..
        }
    ));
    let stop_killing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The running guest's QEMU also has -incoming on its command line (it arrived that way):
    // only QEMUs started from now on are destinations.
    let running = incoming_qemu("roamer");
    let killer = {
        let stop = stop_killing.clone();
        std::thread::spawn(move || {
            let mut killed = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                for pid in incoming_qemu("roamer")
                    .into_iter()
                    .filter(|p| !running.contains(p))
                {
                    std::thread::sleep(Duration::from_millis(150));
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    killed += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            killed
        })
    };
    assert!(matches!(
        call(&b, Request::Drain { host: None }),
        Reply::Orchestrator { draining: true, .. }
    ));
    let failed = wait_for(
        "a move from host-b to fail",
        Duration::from_secs(120),
        || {
            let Reply::Migrations { migrations } = call(&b, Request::Migrations) else {
                return None;
            };
            migrations
                .into_iter()
                .find(|m| !m.ok && m.to.as_deref() == Some("host-a"))
        },
    );
    assert!(matches!(
        call(&b, Request::Pause),
        Reply::Orchestrator { paused: true, .. }
    ));
    // A move already under way when the pause came finishes or fails on its own.
    std::thread::sleep(Duration::from_secs(3));
    stop_killing.store(true, std::sync::atomic::Ordering::Release);
    let killed = killer.join().unwrap();
    println!(
        "target killed mid-migration ({killed} destination QEMU(s)): {:?}; lease released, VM stays",
        failed.error
    );
    let (_, on_b) = lv_b.virsh(&["list", "--name"]);
    let (_, on_a) = lv_a.virsh(&["list", "--name"]);

    let runs = |list: &str| list.lines().any(|l| l.trim() == "roamer");
    assert!(
        runs(&on_b) != runs(&on_a),
        "the VM runs exactly once: host-b {on_b:?}, host-a {on_a:?}"
    );
    if runs(&on_b) {
        // host-a holds nothing for a move that failed.
        let Reply::Peers(pa) = call(&a, Request::Peers) else {
            panic!("peers answers");
        };
        assert_eq!(pa.reservations, 0, "the failed move's lease was released");
    }
    let beats = heartbeats(&serial);
    wait_for(
        "the heartbeat to go on after the failed move",
        Duration::from_secs(30),
        || (heartbeats(&serial) >= beats + 3).then_some(()),
    );
    drop(c);
    drop(b);
    drop(a);
}

/// Pids of QEMU processes started to receive the domain `name` (`-incoming`), including one that
/// received it earlier and runs it now.
fn incoming_qemu(name: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
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
        let named = augur_libvirt::qemu_process::cmdline_names_domain(&cmdline, name);
        let incoming = cmdline.split(|b| *b == 0).any(|a| a == b"-incoming");
        if named && incoming {
            pids.push(pid);
        }
    }
    pids
}
