//! The store against the two engines it was chosen over, on a real trace, plus its own goals.
//!
//! 1. Replay of ../shared/traces/bitbrains-rnd/2013-8 (100 VMs, 10 metrics, one month at 5 min,
//!    8.6 M samples) into augur-store, fjall (LSM key-value: key = series + time, value = f64) and
//!    tsink (an embedded TSDB): bytes per sample on disk, ingest samples/s, a whole-month read of
//!    one series, and the time to reopen. Printed as a table with ratios against fjall.
//! 2. Criterion: ingest of synthetic 1 s samples in batches (goal: 1 M samples/s on one core)
//!    and the read of one VM's 24 h window of 20 metrics at 1 s (goal: under 5 ms).

use augur_benches::trace::{load_dir, traces_root, VmTrace, METRICS};
use augur_store::{Durability, Sample, Store, StoreOptions, Value, VmMeta};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;
use std::time::{Duration, Instant};

const S: i64 = 1_000_000_000;
const BATCH_ROWS: usize = 100;

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Debug)]
struct EngineResult {
    name: &'static str,
    samples: usize,
    ingest: Duration,
    bytes: u64,
    month_read: Duration,
    month_points: usize,
    reopen: Duration,
}

fn augur(traces: &[VmTrace], dir: &Path) -> EngineResult {
    let samples: usize = traces.iter().map(VmTrace::samples).sum();
    let started = Instant::now();
    let mut store = Store::open(dir, StoreOptions::default()).unwrap();
    for t in traces {
        store
            .register_vm(VmMeta {
                id: t.id,
                name: format!("vm{}", t.id),
                attrs: Default::default(),
            })
            .unwrap();
    }
    let mut batch = Vec::with_capacity(BATCH_ROWS * METRICS.len());
    for t in traces {
        for rows in (0..t.ts_ns.len()).collect::<Vec<_>>().chunks(BATCH_ROWS) {
            batch.clear();
            for &r in rows {
                for (m, metric) in METRICS.iter().enumerate() {
                    batch.push(Sample {
                        vm: t.id,
                        metric,
                        ts_ns: t.ts_ns[r],
                        value: Value::F64(t.columns[m][r]),
                    });
                }
            }
            store.append(&batch).unwrap();
        }
    }
    store.close().unwrap();
    let ingest = started.elapsed();
    let bytes = dir_bytes(dir);
    let started = Instant::now();
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let reopen = started.elapsed();
    let started = Instant::now();
    let points = store
        .read_range(traces[0].id, "cpu_usage_mhz", 0, i64::MAX)
        .len();
    EngineResult {
        name: "augur-store",
        samples,
        ingest,
        bytes,
        month_read: started.elapsed(),
        month_points: points,
        reopen,
    }
}

fn fjall_key(series: u32, ts: i64) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..4].copy_from_slice(&series.to_be_bytes());
    key[4..].copy_from_slice(&(ts as u64).to_be_bytes());
    key
}

fn fjall(traces: &[VmTrace], dir: &Path) -> EngineResult {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let samples: usize = traces.iter().map(VmTrace::samples).sum();
    let started = Instant::now();
    {
        let db = Database::builder(dir).open().unwrap();
        let points = db
            .keyspace("points", KeyspaceCreateOptions::default)
            .unwrap();
        for (v, t) in traces.iter().enumerate() {
            for rows in (0..t.ts_ns.len()).collect::<Vec<_>>().chunks(BATCH_ROWS) {
                let mut batch = db.batch();
                for &r in rows {
                    for m in 0..METRICS.len() {
                        let series = (v * METRICS.len() + m) as u32;
                        batch.insert(
                            &points,
                            fjall_key(series, t.ts_ns[r]).to_vec(),
                            t.columns[m][r].to_le_bytes().to_vec(),
                        );
                    }
                }
                batch.commit().unwrap();
            }
        }
        db.persist(PersistMode::SyncAll).unwrap();
    }
    let ingest = started.elapsed();
    let bytes = dir_bytes(dir);
    let started = Instant::now();
    let db = Database::builder(dir).open().unwrap();
    let points = db
        .keyspace("points", KeyspaceCreateOptions::default)
        .unwrap();
    let reopen = started.elapsed();
    let started = Instant::now();
    let series = 2u32; // vm 0, cpu_usage_mhz
    let mut n = 0;
    for guard in points.range(fjall_key(series, 0).to_vec()..fjall_key(series + 1, 0).to_vec()) {
        let (_, value) = guard.into_inner().unwrap();
        std::hint::black_box(f64::from_le_bytes(value[..8].try_into().unwrap()));
        n += 1;
    }
    EngineResult {
        name: "fjall",
        samples,
        ingest,
        bytes,
        month_read: started.elapsed(),
        month_points: n,
        reopen,
    }
}

fn tsink(traces: &[VmTrace], dir: &Path) -> EngineResult {
    use tsink::{DataPoint, Label, Row, StorageBuilder, TimestampPrecision, WalSyncMode};
    let samples: usize = traces.iter().map(VmTrace::samples).sum();
    let build = || {
        StorageBuilder::new()
            .with_data_path(dir)
            .with_timestamp_precision(TimestampPrecision::Seconds)
            .with_wal_sync_mode(WalSyncMode::Periodic(Duration::from_millis(200)))
            .build()
            .unwrap()
    };
    let started = Instant::now();
    {
        let storage = build();
        for t in traces {
            let labels = vec![Label::new("vm", t.id.to_string())];
            for rows in (0..t.ts_ns.len()).collect::<Vec<_>>().chunks(BATCH_ROWS) {
                let mut batch = Vec::with_capacity(rows.len() * METRICS.len());
                for &r in rows {
                    for (m, metric) in METRICS.iter().enumerate() {
                        batch.push(Row::with_labels(
                            *metric,
                            labels.clone(),
                            DataPoint::new(t.ts_ns[r] / S, t.columns[m][r]),
                        ));
                    }
                }
                storage.insert_rows(&batch).unwrap();
            }
        }
        storage.close().unwrap();
    }
    let ingest = started.elapsed();
    let bytes = dir_bytes(dir);
    let started = Instant::now();
    let storage = build();
    let reopen = started.elapsed();
    let started = Instant::now();
    let labels = vec![Label::new("vm", traces[0].id.to_string())];
    let n = storage
        .select("cpu_usage_mhz", &labels, 0, i64::MAX / S)
        .unwrap()
        .len();
    let month_read = started.elapsed();
    let _ = storage.close();
    EngineResult {
        name: "tsink",
        samples,
        ingest,
        bytes,
        month_read,
        month_points: n,
        reopen,
    }
}

fn engine_comparison() {
    let dir = traces_root().join("bitbrains-rnd/2013-8");
    let traces = match load_dir(&dir) {
        Ok(t) if !t.is_empty() => t,
        _ => {
            println!(
                "engine comparison skipped: no trace at {} (set AUGUR_TRACES)",
                dir.display()
            );
            return;
        }
    };
    let skipped: usize = traces.iter().map(|t| t.skipped_rows).sum();
    let results: Vec<EngineResult> = [augur, fjall, tsink]
        .iter()
        .map(|engine| {
            let tmp = tempfile::tempdir().unwrap();
            engine(&traces, tmp.path())
        })
        .collect();
    let base = &results[1];
    println!("\nstore engines on bitbrains-rnd 2013-8: {} VMs, {} samples ({skipped} malformed rows skipped)", traces.len(), results[0].samples);
    println!(
        "  {:<12} {:>10} {:>14} {:>14} {:>16} {:>12}",
        "engine", "B/sample", "ingest/s", "month read", "(points)", "reopen"
    );
    for r in &results {
        println!(
            "  {:<12} {:>10.3} {:>14.0} {:>11.2} ms {:>16} {:>9.1} ms",
            r.name,
            r.bytes as f64 / r.samples as f64,
            r.samples as f64 / r.ingest.as_secs_f64(),
            r.month_read.as_secs_f64() * 1e3,
            r.month_points,
            r.reopen.as_secs_f64() * 1e3,
        );
    }
    for r in &results {
        println!(
            "  {:<12} vs fjall: {:.3}x the bytes, {:.2}x the ingest rate, {:.2}x the read time, {:.2}x the reopen time",
            r.name,
            r.bytes as f64 / base.bytes as f64,
            base.ingest.as_secs_f64() / r.ingest.as_secs_f64(),
            r.month_read.as_secs_f64() / base.month_read.as_secs_f64(),
            r.reopen.as_secs_f64() / base.reopen.as_secs_f64(),
        );
    }
    println!("  anchor: Prometheus TSDB about 1.3 B/sample; goal here: at most 2 B/sample\n");
}

const METRICS_PER_VM: usize = 20;

/// One VM with 20 metrics sampled every second for `seconds`: gauges with noise and counters.
fn synthetic_batch(store: &mut Store, names: &[String], from: i64, seconds: i64) {
    let mut batch = Vec::with_capacity(names.len() * 64);
    for chunk_start in (from..from + seconds).step_by(64) {
        batch.clear();
        for t in chunk_start..(chunk_start + 64).min(from + seconds) {
            for (m, name) in names.iter().enumerate() {
                let noise = ((t * 2654435761 + m as i64 * 97) % 1000) as f64 / 1000.0;
                let value = if m % 4 == 0 {
                    Value::U64((t * 1000 + m as i64) as u64)
                } else {
                    Value::F64(
                        (m as f64 + noise * 5.0 * (t % 300) as f64 / 300.0 * 100.0).round() / 100.0,
                    )
                };
                batch.push(Sample {
                    vm: 1,
                    metric: name,
                    ts_ns: t * S,
                    value,
                });
            }
        }
        store.append(&batch).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    if std::env::var_os("AUGUR_BENCH_SKIP_ENGINES").is_none() {
        engine_comparison();
    }
    let names: Vec<String> = (0..METRICS_PER_VM).map(|m| format!("metric_{m}")).collect();

    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    let ingest_points = 3600 * METRICS_PER_VM as u64;
    group.throughput(Throughput::Elements(ingest_points));
    group.bench_function("ingest_1h_of_20_metrics_batched", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut store = Store::open(
                    dir.path(),
                    StoreOptions {
                        durability: Durability::Manual,
                        ..StoreOptions::default()
                    },
                )
                .unwrap();
                store
                    .register_vm(VmMeta {
                        id: 1,
                        name: "bench".into(),
                        attrs: Default::default(),
                    })
                    .unwrap();
                let started = Instant::now();
                synthetic_batch(&mut store, &names, 0, 3600);
                store.sync().unwrap();
                total += started.elapsed();
            }
            total
        })
    });

    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .register_vm(VmMeta {
                id: 1,
                name: "bench".into(),
                attrs: Default::default(),
            })
            .unwrap();
        synthetic_batch(&mut store, &names, 0, 86_400);
        store.close().unwrap();
    }
    let mut medians = Vec::new();
    for (label, cache_bytes) in [
        ("decode_every_read", 0usize),
        ("decoded_block_cache", 64 << 20),
    ] {
        let store = Store::open(
            dir.path(),
            StoreOptions {
                cache_bytes,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mut buffers = Vec::new();
        store.read_vm_columns_into(1, 0, 86_400 * S, &mut buffers);
        let day_points: usize = buffers.iter().map(|d| d.len()).sum();
        assert_eq!(day_points, 86_400 * METRICS_PER_VM);
        group.throughput(Throughput::Elements(day_points as u64));
        let mut times = Vec::new();
        group.bench_function(format!("read_24h_of_20_metrics_at_1s/{label}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    store.read_vm_columns_into(1, 0, 86_400 * S, &mut buffers);
                    std::hint::black_box(&buffers);
                }
                let elapsed = started.elapsed();
                times.push(elapsed / iters as u32);
                elapsed
            })
        });
        times.sort();
        medians.push((
            label,
            times[times.len() / 2],
            store.stats().bytes_per_sample,
        ));
    }
    group.finish();
    println!("\nstore goals (24 h of one VM's 20 metrics at 1 s = 1,728,000 points; goal: read in under 5 ms):");
    for (label, median, _) in &medians {
        println!(
            "  {label:<22} median {:>7.2} ms ({:.2}x the goal)",
            median.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3 / 5.0
        );
    }
    println!(
        "  decode / cached:       {:.1}x",
        medians[0].1.as_secs_f64() / medians[1].1.as_secs_f64()
    );
    println!(
        "  synthetic 1 s series: {:.3} B/sample sealed",
        medians[0].2.unwrap_or(0.0)
    );
    println!(
        "  ingest: see store/ingest_1h_of_20_metrics_batched thrpt above (goal 1 M samples/s)"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
