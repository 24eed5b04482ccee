//! Live migration of microVMs between two KVM VMs of this process, over loopback TCP.

use augur_microvm::migration::{self, IncomingHeader};
use augur_microvm::{
    CountingSwitch, MicroVm, MigrationError, MigrationParams, VmOptions, VmSpec, VmState,
};
use augur_tests::{kvm_or_skip, start_vm};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BUSY_SPEC: &str = r#"
    name = "busy"
    memory_mib = 64
    vcpus = 2
    [[phase]]
    kind = "memory"
    seconds = 600
    working_set_mib = 24
    touch_mib_per_s = 16
    write_fraction = 1.0
"#;

type Incoming = JoinHandle<Result<MicroVm, MigrationError>>;

/// A target listening on loopback; `admit` decides on the header.
fn target(
    dir: &std::path::Path,
    admit: fn(&IncomingHeader) -> Result<(), String>,
) -> (std::net::SocketAddr, Incoming) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let options = VmOptions::new(dir, Arc::new(CountingSwitch));
    let handle = std::thread::spawn(move || {
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        migration::accept(&kvm, 2, &mut stream, &options, admit)
    });
    (addr, handle)
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn wait_progress(vm: &MicroVm, beyond: u64, within: Duration) -> u64 {
    let until = Instant::now() + within;
    loop {
        let now = vm.progress();
        if now > beyond || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn busy_guest_moves_and_its_progress_carries_on() {
    let Some(kvm) = kvm_or_skip("busy_guest_moves_and_its_progress_carries_on") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(&kvm, 1, dir.path(), BUSY_SPEC);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(vm.progress() > 0, "the guest runs before the move");

    let (addr, incoming) = target(dir.path(), |h| {
        (h.spec.name == "busy")
            .then_some(())
            .ok_or("unexpected VM".into())
    });
    let report = vm
        .migrate_to(&mut connect(addr), &MigrationParams::default())
        .expect("migration succeeds");
    let moved = incoming.join().unwrap().expect("the target starts the VM");

    println!(
        "moved 64 MiB busy guest: {} rounds {:?}, final {} pages, {} bytes, total {:.1} ms, downtime {:.2} ms (pause {:.2} ms), {:.0} MiB/s, converged {}",
        report.rounds.len(),
        report.rounds.iter().map(|r| r.pages).collect::<Vec<_>>(),
        report.final_pages,
        report.bytes,
        report.total.as_secs_f64() * 1e3,
        report.downtime.as_secs_f64() * 1e3,
        report.pause.as_secs_f64() * 1e3,
        report.bandwidth / (1 << 20) as f64,
        report.converged
    );
    assert_eq!(vm.state(), VmState::Stopped, "the source copy is stopped");
    assert_eq!(moved.state(), VmState::Running);
    assert_eq!(
        report.rounds[0].pages + report.unbacked_pages,
        64 * 256,
        "round 0 sends all memory the source ever backed"
    );
    assert!(report.rounds.len() >= 2, "a busy guest needs re-sends");
    let at_arrival = moved.progress();
    assert!(
        at_arrival >= report.progress_at_pause,
        "the target starts from the source's progress ({at_arrival} < {})",
        report.progress_at_pause
    );
    let later = wait_progress(&moved, at_arrival, Duration::from_secs(10));
    assert!(later > at_arrival, "the guest runs on at the target");
    assert_eq!(moved.status().phase_name, "memory");
}

/// Writes a working set, then idles: after the move, the target's memory must equal the
/// source's, page for page, including pages the source never backed (zero on both).
const WRITE_THEN_IDLE_SPEC: &str = r#"
    name = "written"
    memory_mib = 64
    [[phase]]
    kind = "memory"
    seconds = 1
    working_set_mib = 8
    touch_mib_per_s = 32
    write_fraction = 1.0
    [[phase]]
    kind = "idle"
    seconds = 600
"#;

#[test]
fn the_target_gets_the_source_memory_page_for_page() {
    let Some(kvm) = kvm_or_skip("the_target_gets_the_source_memory_page_for_page") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(&kvm, 1, dir.path(), WRITE_THEN_IDLE_SPEC);
    let until = Instant::now() + Duration::from_secs(30);
    while vm.status().phase_name != "idle" && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(vm.status().phase_name, "idle", "the working set is written");
    vm.sample(0); // a sensing harvest, which counts what the guest wrote
    let written = vm.written_bytes();
    assert!(
        (8 << 20..32 << 20).contains(&written),
        "the cost model's memory is what the guest wrote: {written} bytes"
    );
    let (addr, incoming) = target(dir.path(), |_| Ok(()));
    let report = vm
        .migrate_to(&mut connect(addr), &MigrationParams::default())
        .expect("migration succeeds");
    let moved = incoming.join().unwrap().expect("the target starts the VM");
    assert!(
        report.unbacked_pages > 0,
        "most of the 64 MiB was never touched: {report:?}"
    );
    assert!(
        moved.written_bytes() >= written,
        "what arrived counts as written on the target"
    );
    // The idle guest and the host still write the mailbox, the stacks and the I/O areas.
    let live = |page: u64| (0x8..0x9).contains(&page) || (0x20..0x200).contains(&page);
    let (source, target) = (vm.memory(), moved.memory());
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut differ = Vec::new();
    for page in (0..64 * 256u64).filter(|p| !live(*p)) {
        source.read(page * 4096, &mut a).unwrap();
        target.read(page * 4096, &mut b).unwrap();
        if a != b {
            differ.push(page);
        }
    }
    assert!(differ.is_empty(), "pages differ after the move: {differ:?}");
    let mut nonzero = 0;
    for page in 0x200..0x200 + 8 * 256u64 {
        source.read(page * 4096, &mut a).unwrap();
        nonzero += usize::from(a.iter().any(|&x| x != 0));
    }
    assert!(
        nonzero > 1000,
        "the working set was written ({nonzero} pages)"
    );
}

#[test]
fn refused_or_broken_moves_leave_the_guest_running_here() {
    let Some(kvm) = kvm_or_skip("refused_or_broken_moves_leave_the_guest_running_here") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(&kvm, 1, dir.path(), BUSY_SPEC);
    std::thread::sleep(Duration::from_millis(500));

    // The target refuses on seeing the header.
    let (addr, incoming) = target(dir.path(), |_| Err("no room".into()));
    let err = vm
        .migrate_to(&mut connect(addr), &MigrationParams::default())
        .unwrap_err();
    assert!(incoming.join().unwrap().is_err());
    println!("refused: {err}");
    assert!(
        err.to_string().contains("no room"),
        "the target's reason reaches the source: {err}"
    );
    assert_eq!(vm.state(), VmState::Running);

    // The target goes away in the middle of the memory transfer.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cutter = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 4 << 20];
        stream.read_exact(&mut buf).unwrap();
        // Dropped here: the source's next writes fail.
    });
    let err = vm
        .migrate_to(&mut connect(addr), &MigrationParams::default())
        .unwrap_err();
    cutter.join().unwrap();
    println!("cut: {err}");
    assert!(matches!(err, MigrationError::Io(_)), "{err}");
    assert_eq!(vm.state(), VmState::Running);
    let before = vm.progress();
    assert!(
        wait_progress(&vm, before, Duration::from_secs(10)) > before,
        "the guest runs on at the source"
    );
}

/// An in-memory stream: reads from `input`, collects writes.
struct Scripted {
    input: std::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn header(spec: &str, memory: u64, vcpus: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&migration::VERSION.to_le_bytes());
    p.push(0);
    p.extend_from_slice(&memory.to_le_bytes());
    p.extend_from_slice(&vcpus.to_le_bytes());
    p.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    p.extend_from_slice(spec.as_bytes());
    record(1, &p)
}

#[test]
fn hostile_sources_are_refused_with_a_reason() {
    let Some(kvm) = kvm_or_skip("hostile_sources_are_refused_with_a_reason") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let options = VmOptions::new(dir.path(), Arc::new(CountingSwitch));
    let spec = VmSpec::from_toml(BUSY_SPEC).unwrap().to_toml().unwrap();
    let good = header(&spec, 64 << 20, 2);
    let mut pages_outside = good.clone();
    let mut p = Vec::new();
    p.extend_from_slice(&(64u64 * 256).to_le_bytes());
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&[0u8; 4096]);
    pages_outside.extend(record(2, &p));
    let mut short_page = good.clone();
    let mut p = Vec::new();
    p.extend_from_slice(&0u64.to_le_bytes());
    p.extend_from_slice(&2u32.to_le_bytes());
    p.extend_from_slice(&[0u8; 4096]);
    short_page.extend(record(2, &p));
    let mut done_without_vcpus = good.clone();
    done_without_vcpus.extend(record(4, &0u64.to_le_bytes()));

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("no header first", record(6, &[])),
        ("memory and spec disagree", header(&spec, 32 << 20, 2)),
        ("spec is not a spec", header("name = 3", 64 << 20, 2)),
        ("pages outside memory", pages_outside),
        ("page data short", short_page),
        ("done without vCPU state", done_without_vcpus),
        ("stream ends early", good),
    ];
    for (what, bytes) in cases {
        let mut stream = Scripted {
            input: std::io::Cursor::new(bytes),
            output: Vec::new(),
        };
        let err = migration::accept(&kvm, 9, &mut stream, &options, |_| Ok(()))
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        println!("{what}: {err}");
    }
}
