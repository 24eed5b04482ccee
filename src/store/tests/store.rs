//! The store end to end: round trips across reopen, damage on disk, bad input, retention.

use augur_store::*;
use std::path::Path;

const S: i64 = 1_000_000_000;

fn vm(store: &mut Store, id: VmId) {
    store
        .register_vm(VmMeta {
            id,
            name: format!("vm{id}"),
            attrs: Default::default(),
        })
        .unwrap();
}

fn options(block_points: usize) -> StoreOptions {
    StoreOptions {
        block_points,
        ..StoreOptions::default()
    }
}

fn fill(store: &mut Store, vm: VmId, metric: &str, from: i64, n: i64) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Sample<'_>> = chunk
            .iter()
            .map(|i| Sample {
                vm,
                metric,
                ts_ns: i * S,
                value: Value::F64(*i as f64 * 0.25),
            })
            .collect();
        let report = store.append(&batch).unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    }
}

#[test]
fn points_survive_close_and_reopen_with_heads_and_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(64)).unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 1000);
    store
        .append(&[Sample {
            vm: 1,
            metric: "exits",
            ts_ns: 5,
            value: Value::U64(u64::MAX - 3),
        }])
        .unwrap();
    store.sync().unwrap();
    assert_eq!(store.read_range(1, "cpu", 10 * S, 20 * S).len(), 10);
    drop(store); // no close: the heads come back from the WAL
    let store = Store::open(dir.path(), options(64)).unwrap();
    assert!(store.open_report().is_clean());
    let points = store.read_range(1, "cpu", 0, i64::MAX);
    assert_eq!(points.len(), 1000);
    assert_eq!(
        points[999],
        Point {
            ts_ns: 999 * S,
            value: Value::F64(999.0 * 0.25)
        }
    );
    assert_eq!(
        store.latest(1, "exits").unwrap().value,
        Value::U64(u64::MAX - 3)
    );
    let stats = store.stats();
    assert_eq!((stats.series, stats.vms, stats.samples), (2, 1, 1001));
    let mut latest: Vec<(String, Point)> = store
        .latest_points(0)
        .map(|(s, p)| (s.metric.clone(), p))
        .collect();
    // Nothing as recent as 1000 s: cpu ended at 999 s, exits at 5 ns.
    assert_eq!(store.latest_points(1000 * S).count(), 0);
    assert_eq!(store.latest_points(999 * S).count(), 1);
    latest.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        latest[0],
        (
            "cpu".to_string(),
            Point {
                ts_ns: 999 * S,
                value: Value::F64(249.75)
            }
        )
    );
    assert_eq!(latest[1].0, "exits");
    store.close().unwrap();
    let store = Store::open(dir.path(), options(64)).unwrap();
    assert_eq!(
        store.open_report().wal_points_replayed,
        0,
        "close sealed everything"
    );
    assert_eq!(store.read_vm(1, 0, i64::MAX)["cpu"].len(), 1000);
}

#[test]
fn bad_points_are_rejected_with_reasons_and_the_rest_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    vm(&mut store, 1);
    let batch = [
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 10,
            value: Value::F64(1.0),
        },
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 11,
            value: Value::F64(f64::NAN),
        },
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 12,
            value: Value::F64(f64::INFINITY),
        },
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 9,
            value: Value::F64(2.0),
        },
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 10,
            value: Value::F64(2.0),
        },
        Sample {
            vm: 7,
            metric: "cpu",
            ts_ns: 13,
            value: Value::F64(2.0),
        },
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 14,
            value: Value::U64(3),
        },
        Sample {
            vm: 1,
            metric: "",
            ts_ns: 15,
            value: Value::F64(2.0),
        },
        Sample {
            vm: 1,
            metric: "cpu",
            ts_ns: 16,
            value: Value::F64(3.0),
        },
    ];
    let report = store.append(&batch).unwrap();
    assert_eq!(report.written, 2);
    let reasons: Vec<_> = report
        .rejected
        .iter()
        .map(|r| (r.index, r.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, RejectReason::NonFinite),
            (2, RejectReason::NonFinite),
            (3, RejectReason::OutOfOrder { last_ns: 10 }),
            (4, RejectReason::OutOfOrder { last_ns: 10 }),
            (5, RejectReason::UnknownVm),
            (
                6,
                RejectReason::WrongKind {
                    expected: ValueKind::F64
                }
            ),
            (7, RejectReason::BadMetric),
        ]
    );
    assert!(report.rejected[0].reason.to_string().contains("NaN"));
    let values: Vec<f64> = store
        .read_range(1, "cpu", 0, 100)
        .iter()
        .map(|p| p.value.as_f64())
        .collect();
    assert_eq!(values, vec![1.0, 3.0]);
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_block_is_skipped_and_reported_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 1000);
    fill(&mut store, 1, "mem", 0, 1000);
    store.close().unwrap();
    let seg = dir.path().join("seg-00000001.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    flip(&seg, len / 2); // somewhere in the middle of one block
    let store = Store::open(dir.path(), options(100)).unwrap();
    let report = store.open_report().clone();
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    let total = store.read_range(1, "cpu", 0, i64::MAX).len()
        + store.read_range(1, "mem", 0, i64::MAX).len();
    assert_eq!(total, 1900, "exactly one block of 100 points is lost");
}

#[test]
fn truncated_files_open_and_keep_everything_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 550); // 5 blocks sealed, 50 points in the WAL
    store.sync().unwrap();
    drop(store);
    let seg = dir.path().join("seg-00000001.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let wal = dir.path().join("wal-00000001.log");
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(wal_len - 3)
        .unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    assert!(store.open_report().torn_tail_bytes > 0);
    // The cut block's points are still in the WAL (no checkpoint yet), except the last batch,
    // whose WAL record was cut too.
    let points = store.read_range(1, "cpu", 0, i64::MAX);
    assert_eq!(points.len(), 500);
    assert!(points.windows(2).all(|w| w[1].ts_ns > w[0].ts_ns));
    // And the store takes writes again after the damage.
    fill(&mut store, 1, "cpu", 600, 10);
    assert_eq!(store.read_range(1, "cpu", 0, i64::MAX).len(), 510);
}

#[test]
fn a_series_whose_catalog_record_was_lost_does_not_lend_its_data_to_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 100);
    let catalog = dir.path().join("catalog.log");
    let before_mem = std::fs::metadata(&catalog).unwrap().len();
    fill(&mut store, 1, "mem", 0, 250); // two blocks sealed, 50 points in the WAL
    store.sync().unwrap();
    drop(store);
    // The catalog loses its last record, the one that named "mem".
    std::fs::OpenOptions::new()
        .write(true)
        .open(&catalog)
        .unwrap()
        .set_len(before_mem + 5)
        .unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    assert!(
        store.open_report().bad_blocks > 0,
        "mem's blocks are not served"
    );
    assert_eq!(store.read_range(1, "cpu", 0, i64::MAX).len(), 100);
    // A series made after the damage starts empty, now and after a reopen.
    fill(&mut store, 1, "disk", 1000, 10);
    assert_eq!(store.read_range(1, "disk", 0, i64::MAX).len(), 10);
    drop(store);
    let store = Store::open(dir.path(), options(100)).unwrap();
    let disk = store.read_range(1, "disk", 0, i64::MAX);
    assert_eq!(disk.len(), 10, "{:?}", &disk[..disk.len().min(3)]);
    assert!(disk.iter().all(|p| p.ts_ns >= 1000 * S));
}

#[test]
fn points_are_counted_from_block_headers_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 550); // 5 blocks sealed, 50 points in the head
    fill(&mut store, 1, "mem", 0, 30);
    assert_eq!(store.count_vm_points(1, 0, i64::MAX), 580);
    assert_eq!(
        store.count_vm_points(1, 520 * S, 540 * S),
        20,
        "head points exactly"
    );
    // Blocks straddling an end count whole: an upper bound within a block of the truth.
    let some = store.count_vm_points(1, 150 * S, 160 * S);
    assert!((10..=10 + 100).contains(&some), "{some}");
    assert_eq!(store.count_vm_points(2, 0, i64::MAX), 0);
}

#[test]
fn a_lost_block_before_one_that_survived_comes_back_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(100)).unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 250); // blocks 0..99 and 100..199 unsynced, 50 in the head
    store.sync().unwrap();
    drop(store);
    // Power loss wrote back the segment's second block but not its first.
    let seg = dir.path().join("seg-00000001.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 4;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let store = Store::open(dir.path(), options(100)).unwrap();
    assert!(!store.open_report().corrupt.is_empty());
    assert_eq!(store.open_report().wal_points_recovered, 100);
    let points = store.read_range(1, "cpu", 0, i64::MAX);
    assert_eq!(points.len(), 250);
    assert!(points.windows(2).all(|w| w[1].ts_ns > w[0].ts_ns));
    assert_eq!(points[42].value, Value::F64(42.0 * 0.25));
    drop(store);
    // Sealed again, the points are not recovered twice.
    let store = Store::open(dir.path(), options(100)).unwrap();
    assert_eq!(store.open_report().wal_points_recovered, 0);
    assert_eq!(store.read_range(1, "cpu", 0, i64::MAX).len(), 250);
}

#[test]
fn points_retention_deleted_do_not_come_back_from_the_wal_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || StoreOptions {
        block_points: 100,
        segment_bytes: 300,
        ..StoreOptions::default()
    };
    let mut store = Store::open(dir.path(), opts()).unwrap();
    vm(&mut store, 1);
    // No checkpoint: every point is still in the WAL, over several rotated segments.
    fill(&mut store, 1, "cpu", 0, 1200);
    store.sync().unwrap();
    // Down to the current segment alone: nothing sealed is left to date the deleted points.
    assert!(store.apply_retention(None, Some(1)).unwrap() > 0);
    let kept = store.read_range(1, "cpu", 0, i64::MAX);
    assert!(kept.len() < 1200, "{}", kept.len());
    drop(store); // a crash: no close
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(store.read_range(1, "cpu", 0, i64::MAX), kept);
    assert_eq!(store.open_report().wal_points_recovered, 0);
}

#[test]
fn junk_in_the_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.log"), b"not a store").unwrap();
    let error = Store::open(dir.path(), StoreOptions::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("catalog.log"), "{error}");
}

#[test]
fn downsampled_reads_events_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(
        dir.path(),
        StoreOptions {
            block_points: 100,
            segment_bytes: 300,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    vm(&mut store, 1);
    fill(&mut store, 1, "cpu", 0, 3600);
    let buckets = store
        .read_downsampled(1, "cpu", 0, 3600 * S, 60 * S)
        .unwrap();
    assert_eq!(buckets.len(), 60);
    assert_eq!(buckets[1].start_ns, 60 * S);
    assert_eq!(
        (
            buckets[1].min,
            buckets[1].max,
            buckets[1].last,
            buckets[1].count
        ),
        (15.0, 29.75, 29.75, 60)
    );
    assert!((buckets[1].mean - 22.375).abs() < 1e-9);

    store
        .append_event(&Event {
            ts_ns: 5 * S,
            kind: "migration".into(),
            vm: Some(1),
            body: serde_json::json!({"to": "host-b"}),
        })
        .unwrap();
    store
        .append_event(&Event {
            ts_ns: 7 * S,
            kind: "decision".into(),
            vm: None,
            body: serde_json::json!({}),
        })
        .unwrap();
    assert_eq!(store.events(0, 10 * S, Some(1)).unwrap().len(), 1);
    assert_eq!(store.events(0, 10 * S, None).unwrap().len(), 2);

    store.checkpoint().unwrap();
    let before = store.stats();
    assert!(before.segments > 3, "{before:?}");
    let dropped = store.apply_retention(Some(1800 * S), None).unwrap();
    assert!(dropped > 0);
    let kept = store.read_range(1, "cpu", 0, i64::MAX);
    assert!(kept[0].ts_ns > 0 && kept.last().unwrap().ts_ns == 3599 * S);
    assert!(kept.len() >= 1800);
    let dropped = store.apply_retention(None, Some(1500)).unwrap();
    assert!(dropped > 0);
    assert!(store.stats().bytes_on_disk < before.bytes_on_disk);
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.events(0, i64::MAX, None).unwrap().len(), 2);
}
