//! Real Linux guests under QEMU, run by two private libvirt daemons on this machine, profiled by
//! augurd through libvirt and through augur-shim inside the guests, and live-migrated by augurd
//! from one daemon to the other.
//!
//! Needs root, QEMU, libvirt and the guest kernel and initramfs that `tests/guests/setup.sh`
//! prepares (test.sh runs it), and augurd built with the `libvirt` feature. Where any is missing
//! the test prints `SKIPPED` with the reason. Guests run under TCG (`<domain type='qemu'>`):
//! stock kernels do not boot under every KVM (software hypervisors among them).

use augur_admin::{MigrateRequest, ProfileReply, Reply, Request};
use augur_tests::guests::{heartbeats, profile, wait_for, Daemon, Lab};
use augur_tests::TestDaemon;
use augurd::config::Driver;
use std::io::Read;
use std::time::{Duration, Instant};

const TEST: &str = "libvirt_guests_are_profiled_and_migrated";

/// The median dirty rate of the last 20 windows (the guests' boot is older than that).
fn recent_dirty(p: &ProfileReply) -> f64 {
    let skip = p.history.len().saturating_sub(20);
    let mut rates: Vec<f64> = p
        .history
        .iter()
        .skip(skip)
        .filter_map(|w| w.dirty_mib_per_s)
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// Mean of a guest figure over the windows that have it.
fn mean_guest(
    p: &ProfileReply,
    f: impl Fn(&augur_admin::GuestWindow) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = p
        .history
        .iter()
        .filter_map(|w| w.guest.as_ref().and_then(&f))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[test]
fn libvirt_guests_are_profiled_and_migrated() {
    let lab = match Lab::find() {
        Ok(lab) => lab,
        Err(reason) => {
            println!("SKIPPED {TEST}: {reason}");
            return;
        }
    };
    std::fs::create_dir_all(lab.run()).unwrap();
    for f in [
        "busy.serial",
        "quiet.serial",
        "busy-dst.serial",
        "quiet-dst.serial",
    ] {
        let _ = std::fs::remove_file(lab.run().join(f));
    }
    let source = Daemon::start(&lab, 1, &["busy", "quiet"]);
    let target = Daemon::start(&lab, 2, &["busy", "quiet"]);

    // The busy guest streams to this listener over user-mode networking (10.0.2.2 is the host).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });

    let guests = [
        (
            "busy",
            format!("augur.workload=dirty,net augur.netport={port}"),
        ),
        // An idle guest whose init also writes random bytes into the shim's port.
        ("quiet", "augur.hostile=1".to_string()),
    ];
    for (name, cmdline) in &guests {
        let xml = lab.run().join(format!("{name}.xml"));
        std::fs::write(&xml, lab.domain_xml(name, cmdline)).unwrap();
        let (ok, out) = source.virsh(&["create", &xml.display().to_string()]);
        assert!(ok, "domain {name} did not start: {out}");
    }

    let uri = source.uri.clone();
    let daemon = TestDaemon::start_with(Driver::Libvirt, |c| {
        c.libvirt.uri = uri;
        c.libvirt.refresh_s = 1;
        c.libvirt.dirty_rate_every_s = 2;
        c.sample_interval_ms = 500;
        c.forecast.enabled = false;
    });
    let mut client = daemon.client();

    // Profiled: enough shim reports and dirty-rate measurements on both guests.
    let (busy, quiet) = wait_for("both guests' profiles", Duration::from_secs(180), || {
        let busy = profile(&mut client, "busy", 120)?;
        let quiet = profile(&mut client, "quiet", 120)?;
        let reports = |p: &ProfileReply| p.shim.as_ref().map_or(0, |s| s.reports);
        let measured = |p: &ProfileReply| {
            p.history
                .iter()
                .filter(|w| w.dirty_mib_per_s.is_some())
                .count()
        };
        let flows = !busy.guest_flows.is_empty();
        (reports(&busy) >= 20 && measured(&busy) >= 30 && measured(&quiet) >= 30 && flows)
            .then_some((busy, quiet))
    });

    let (busy_dirty, quiet_dirty) = (recent_dirty(&busy), recent_dirty(&quiet));
    println!("dirty rate (libvirt, QEMU page sampling): busy {busy_dirty:.1} MiB/s, idle {quiet_dirty:.1} MiB/s");
    assert!(
        busy_dirty >= 8.0,
        "a dd loop dirties memory: {busy_dirty} MiB/s"
    );
    assert!(
        busy_dirty >= 4.0 * quiet_dirty.max(0.5),
        "busy {busy_dirty} MiB/s is not well above idle {quiet_dirty} MiB/s"
    );

    let mix = busy
        .vm
        .current
        .as_ref()
        .and_then(|w| w.guest.as_ref())
        .map(|g| g.syscall_mix.clone())
        .expect("the busy guest's shim reports a syscall mix");
    println!("busy guest syscall mix: {mix:?}");
    let share = |family: &str| mix.get(family).copied().unwrap_or(0.0);
    let io = share("read") + share("write");
    for (family, s) in &mix {
        if family != "read" && family != "write" {
            assert!(
                io > *s,
                "read+write {io:.2} should dominate, but {family} is {s:.2}"
            );
        }
    }

    let flow = busy
        .guest_flows
        .iter()
        .find(|f| f.address == "10.0.2.2" && f.port == port)
        .unwrap_or_else(|| panic!("no flow to the host in {:?}", busy.guest_flows));
    assert_eq!(flow.proto, "tcp");
    println!("busy guest flow to the host: {flow:?}");

    for (name, p) in [("busy", &busy), ("idle", &quiet)] {
        let cpu = mean_guest(p, |g| g.shim_cpu).unwrap_or(f64::NAN);
        let rss = mean_guest(p, |g| g.shim_rss_kib).unwrap_or(f64::NAN);
        println!(
            "augur-shim cost in the {name} guest (TCG, 1 s interval): {:.2}% of a vCPU, {rss:.0} KiB resident",
            cpu * 100.0
        );
        assert!(
            rss < 4096.0,
            "the shim stays under 4 MiB resident: {rss} KiB"
        );
    }

    // The hostile guest's garbage is counted and survived; the other guest is unaffected.
    let hostile = quiet
        .shim
        .clone()
        .expect("the quiet guest has a shim channel");
    let clean = busy
        .shim
        .clone()
        .expect("the busy guest has a shim channel");
    println!("hostile guest's channel: {hostile:?}");
    assert!(
        hostile.bad_frames > 0,
        "random bytes are bad frames: {hostile:?}"
    );
    assert_eq!(
        clean.bad_frames, 0,
        "the other guest is unaffected: {clean:?}"
    );
    assert!(matches!(client.call(Request::Status), Ok(Reply::Status(_))));

    // A migration that cannot happen leaves the guest running on the source.
    let failed = match client.call(Request::Migrate(MigrateRequest {
        vm: "quiet".into(),
        to: "qemu+unix:///system?socket=/nonexistent/libvirt-sock".into(),
        migrate_uri: None,
        method: None,
        dest_xml: None,
    })) {
        Ok(Reply::Migrated(m)) => m,
        other => panic!("unexpected reply {other:?}"),
    };
    println!("failed migration: {:?}", failed.error);
    assert!(!failed.ok);
    assert!(
        failed.running_on_source,
        "the guest keeps running on the source"
    );

    // Live migration of the busy guest to the other daemon, through augurd.
    let (ok, xml) = source.virsh(&["dumpxml", "--migratable", "busy"]);
    assert!(ok, "{xml}");
    let dest_xml = xml
        .replace("busy.serial", "busy-dst.serial")
        .replace("busy.shim", "busy-dst.shim");
    let before = heartbeats(&lab.run().join("busy.serial"));
    let started = Instant::now();
    let moved = match client.call(Request::Migrate(MigrateRequest {
        vm: "busy".into(),
        to: target.uri.clone(),
        migrate_uri: Some("tcp://127.0.0.1:49400".into()),
        method: None,
        dest_xml: Some(dest_xml),
    })) {
        Ok(Reply::Migrated(m)) => m,
        other => panic!("unexpected reply {other:?}"),
    };
    println!(
        "migration: ok={} method={} ({}) total {:?} ms downtime {:?} ms bytes {:?} passes {:?}; predicted total {:.2} s downtime {:.3} s; wall {:.2} s",
        moved.ok,
        moved.method,
        moved.reason,
        moved.total_ms,
        moved.downtime_ms,
        moved.bytes,
        moved.iterations,
        moved.predicted_total_s,
        moved.predicted_downtime_s,
        started.elapsed().as_secs_f64()
    );
    assert!(moved.ok, "migration failed: {:?}", moved.error);
    assert!(!moved.running_on_source);
    let (ok, list) = target.virsh(&["list", "--name"]);
    assert!(
        ok && list.lines().any(|l| l.trim() == "busy"),
        "busy runs on the target: {list}"
    );
    // The guest keeps running: its heartbeat goes on in the destination's console log.
    let dst_log = lab.run().join("busy-dst.serial");
    let after = wait_for(
        "heartbeats on the destination",
        Duration::from_secs(30),
        || {
            let n = heartbeats(&dst_log);
            (n >= 3).then_some(n)
        },
    );
    println!(
        "heartbeats: {before} on the source before the move, {after} on the destination after it"
    );
    // A second move: the cost model now uses the bandwidth the first one achieved.
    let (ok, xml) = source.virsh(&["dumpxml", "--migratable", "quiet"]);
    assert!(ok, "{xml}");
    let second = match client.call(Request::Migrate(MigrateRequest {
        vm: "quiet".into(),
        to: target.uri.clone(),
        migrate_uri: Some("tcp://127.0.0.1:49401".into()),
        method: None,
        dest_xml: Some(
            xml.replace("quiet.serial", "quiet-dst.serial")
                .replace("quiet.shim", "quiet-dst.shim"),
        ),
    })) {
        Ok(Reply::Migrated(m)) => m,
        other => panic!("unexpected reply {other:?}"),
    };
    println!(
        "second migration (idle guest): ok={} total {:?} ms, downtime {:?} ms; predicted {:.2} s, downtime {:.3} s ({})",
        second.ok,
        second.total_ms,
        second.downtime_ms,
        second.predicted_total_s,
        second.predicted_downtime_s,
        second.reason
    );
    assert!(second.ok, "{:?}", second.error);
    assert!(
        second.reason.contains("fitted to past moves"),
        "{}",
        second.reason
    );
    // augurd notices the domain left this host.
    wait_for(
        "the domain to leave augurd's list",
        Duration::from_secs(15),
        || profile(&mut client, "busy", 1).is_none().then_some(()),
    );
    drop(client);
    drop(daemon);
}
