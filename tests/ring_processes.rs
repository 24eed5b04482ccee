//! The sample ring shared by two processes: this test re-runs itself as the producer.

use augur_wire::ring::{RingReader, RingWriter};
use augur_wire::{Metric, Sample, Source};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "AUGUR_RING_CHILD_PATH";
const RECORDS: u64 = 20_000;

/// In the child: write RECORDS samples and exit. In the parent: a no-op.
#[test]
fn ring_child_producer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut writer = RingWriter::create(std::path::Path::new(&path), 256, 512).unwrap();
    // Tell the parent the ring exists, then produce.
    std::fs::write(format!("{path}.ready"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..RECORDS {
        let mut s = Sample::new(7, Source::Proc, i);
        s.push(Metric::ProcRchar, i * 3)
            .push(Metric::ProcWchar, i * 5);
        writer.push(&s).unwrap();
        if i % 1000 == 0 {
            std::thread::yield_now();
        }
    }
}

#[test]
fn a_reader_in_another_process_sees_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "ring_child_producer", "--nocapture"])
        .env(CHILD_ENV, &path)
        .spawn()
        .unwrap();
    let ready = dir.path().join("ring.ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "child never created the ring");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reader = RingReader::open(&path).unwrap();
    let mut seen = 0u64;
    let mut last = None;
    while last != Some(RECORDS - 1) {
        assert!(Instant::now() < deadline, "reader stalled at {last:?}");
        match reader
            .read(|s| {
                (
                    s.ts_ns.to_native(),
                    s.get(Metric::ProcRchar),
                    s.get(Metric::ProcWchar),
                )
            })
            .unwrap()
        {
            Some((ts, rchar, wchar)) => {
                // Fields written together must be read together: a torn record would mix them.
                assert_eq!(rchar, Some(Some(ts * 3)));
                assert_eq!(wchar, Some(Some(ts * 5)));
                assert!(last.is_none_or(|l| ts > l));
                last = Some(ts);
                seen += 1;
            }
            None => std::thread::yield_now(),
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        seen + reader.lost(),
        RECORDS,
        "every record was either read or counted as lost"
    );
    eprintln!(
        "read {seen}, lost {} (lapped), torn reads retried {}",
        reader.lost(),
        reader.torn()
    );
}
