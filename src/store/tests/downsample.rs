//! Downsampling old segments: reads see one point per bucket, writes go on meanwhile, and a crash
//! before or after the commit neither loses nor duplicates data.

use augur_store::downsample::Tier;
use augur_store::*;
use std::path::Path;

const S: i64 = 1_000_000_000;
const HOUR: i64 = 3600;

fn options() -> StoreOptions {
    StoreOptions {
        block_points: 600,
        segment_bytes: 512,
        tiers: vec![Tier {
            after_ns: HOUR * S,
            step_s: 60,
        }],
        ..StoreOptions::default()
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, options()).unwrap()
}

fn write_seconds(store: &mut Store, from: i64, to: i64) {
    for chunk in (from..to).collect::<Vec<_>>().chunks(300) {
        let mut batch = Vec::new();
        for t in chunk {
            batch.push(Sample {
                vm: 1,
                metric: "load",
                ts_ns: t * S,
                value: Value::F64((t % 60) as f64),
            });
            batch.push(Sample {
                vm: 1,
                metric: "exits",
                ts_ns: t * S,
                value: Value::U64(*t as u64 * 10),
            });
        }
        assert!(store.append(&batch).unwrap().rejected.is_empty());
    }
}

/// Three hours of one VM's points, every one still in the WAL.
fn filled(dir: &Path) -> Store {
    let mut store = open(dir);
    store
        .register_vm(VmMeta {
            id: 1,
            name: "ds".into(),
            attrs: Default::default(),
        })
        .unwrap();
    write_seconds(&mut store, 0, 3 * HOUR);
    store
}

fn fresh(dir: &Path) -> Store {
    let mut store = filled(dir);
    store.checkpoint().unwrap();
    store
}

#[test]
fn old_segments_become_minute_buckets_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = fresh(dir.path());
    let now = 3 * HOUR * S;
    let raw_before = store.stats().samples;
    let mut jobs = 0;
    let mut next_write = 3 * HOUR;
    while let Some(job) = store.plan_downsample(now) {
        let output = job.run().unwrap();
        // The heavy part holds no borrow of the store: writes go on meanwhile.
        write_seconds(&mut store, next_write, next_write + 10);
        next_write += 10;
        assert!(output.points_out < output.points_in);
        store.apply_downsample(output).unwrap();
        jobs += 1;
        assert!(jobs < 100, "the planner never settles");
    }
    assert!(jobs > 0);
    // The first two hours (older than an hour at `now`) hold minute means; recent data is raw.
    let load = store.read_range(1, "load", 0, i64::MAX);
    let early: Vec<&Point> = load.iter().filter(|p| p.ts_ns < HOUR * S).collect();
    assert_eq!(early.len(), 60, "one point per minute in the first hour");
    assert!(
        early.iter().all(|p| p.value == Value::F64(29.5)),
        "mean of 0..59"
    );
    assert!(
        load.windows(2).all(|w| w[1].ts_ns > w[0].ts_ns),
        "still in time order"
    );
    let recent = store.read_range(1, "load", 2 * HOUR * S + 3000 * S, 3 * HOUR * S);
    assert_eq!(recent.len(), 600, "the last 10 minutes stay raw");
    let exits = store.read_range(1, "exits", 0, 60 * S);
    assert_eq!(
        exits,
        vec![Point {
            ts_ns: 0,
            value: Value::U64(590)
        }],
        "counters keep their last value"
    );
    assert!(store.stats().samples < raw_before);
    let before_reopen = store.read_vm(1, 0, i64::MAX);
    drop(store);
    let store = open(dir.path());
    assert!(store.open_report().is_clean(), "{:?}", store.open_report());
    assert_eq!(store.read_vm(1, 0, i64::MAX), before_reopen);
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_crash_after_the_commit_removes_the_leftover_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = fresh(dir.path());
    let job = store.plan_downsample(3 * HOUR * S).unwrap();
    let source = dir.path().join(format!("seg-{:08}.log", job.segment()));
    let saved = std::fs::read(&source).unwrap();
    let output = job.run().unwrap();
    store.apply_downsample(output).unwrap();
    let expected = store.read_vm(1, 0, i64::MAX);
    drop(store);
    // As if the process died between the commit and the deletion.
    std::fs::write(&source, saved).unwrap();
    let store = open(dir.path());
    assert_eq!(store.open_report().downsampled_sources_removed, 1);
    assert!(!source.exists());
    assert_eq!(store.read_vm(1, 0, i64::MAX), expected, "no duplicates");
}

#[test]
fn a_crash_before_the_commit_keeps_the_raw_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = fresh(dir.path());
    let raw = store.read_vm(1, 0, i64::MAX);
    let snapshot = tempfile::tempdir().unwrap();
    copy_files(dir.path(), snapshot.path());
    let job = store.plan_downsample(3 * HOUR * S).unwrap();
    let current = {
        let mut segs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
            .collect();
        segs.sort();
        segs.pop().unwrap()
    };
    let output = job.run().unwrap();
    store.apply_downsample(output).unwrap();
    drop(store);
    // As if the process died after writing some output blocks but before the commit record:
    // restore the files as they were, then keep part of the new tail of the current segment.
    let applied = std::fs::read(&current).unwrap();
    let original_len = std::fs::metadata(snapshot.path().join(current.file_name().unwrap()))
        .unwrap()
        .len() as usize;
    copy_files(snapshot.path(), dir.path());
    let partial = &applied[..original_len + (applied.len() - original_len) / 2];
    std::fs::write(&current, partial).unwrap();
    let mut store = open(dir.path());
    assert_eq!(
        store.read_vm(1, 0, i64::MAX),
        raw,
        "the uncommitted output is ignored"
    );

    // The same segments downsampled again, with the torn apply's blocks still on disk before the
    // new ones: neither the new apply's commit nor a later downsampling of the segment holding
    // them brings them back.
    let mut jobs = 0;
    while let Some(job) = store.plan_downsample(3 * HOUR * S) {
        store.apply_downsample(job.run().unwrap()).unwrap();
        jobs += 1;
        assert!(jobs < 100, "the planner never settles");
    }
    let downsampled = store.read_vm(1, 0, i64::MAX);
    drop(store);
    let store = open(dir.path());
    let reopened = store.read_vm(1, 0, i64::MAX);
    assert_eq!(reopened, downsampled);
    for metric in ["load", "exits"] {
        let points = store.read_range(1, metric, 0, i64::MAX);
        assert!(
            points.windows(2).all(|w| w[1].ts_ns > w[0].ts_ns),
            "{metric}: no point twice"
        );
        let first_hour = points.iter().filter(|p| p.ts_ns < HOUR * S).count();
        assert_eq!(first_hour, 60, "{metric}: one point per minute");
    }
}

#[test]
fn raw_points_still_in_the_wal_do_not_come_back_over_their_buckets() {
    let dir = tempfile::tempdir().unwrap();
    // No checkpoint: the WAL still holds every raw point the downsampling replaces.
    let mut store = filled(dir.path());
    store.sync().unwrap();
    // Every sealed segment downsampled: past the last bucket, only the current segment's raw
    // blocks are left to date the raw points.
    let mut jobs = 0;
    while let Some(job) = store.plan_downsample(100 * HOUR * S) {
        store.apply_downsample(job.run().unwrap()).unwrap();
        jobs += 1;
        assert!(jobs < 100, "the planner never settles");
    }
    assert!(jobs > 0);
    let before = store.read_vm(1, 0, i64::MAX);
    drop(store); // a crash: no close
    let store = open(dir.path());
    assert_eq!(store.open_report().wal_points_recovered, 0);
    assert_eq!(store.read_vm(1, 0, i64::MAX), before);
}
