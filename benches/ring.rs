//! The sample ring against the obvious alternative: a bounded crossbeam channel of owned samples.
//! One producer thread, one consumer thread, every record delivered (the ring producer waits
//! when it would overwrite a record the consumer has not read, so both do the same work).
//! The producer is pinned to CPU 0 and the consumer to CPU 1, so every record crosses cores, as
//! between augurd's sampling and profiler threads. Prints the median records/s of each and the
//! ring's speed-up over the channel.

use augur_benches::{ring_dir, typical_sample};
use augur_wire::ring::{RingReader, RingWriter};
use augur_wire::{Metric, Sample};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SLOTS: u64 = 1024;
const BATCH: u64 = 100_000;

static RESULTS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

fn record(name: &'static str, records: u64, elapsed: Duration) {
    RESULTS
        .lock()
        .unwrap()
        .push((name, records as f64 / elapsed.as_secs_f64()));
}

/// Waits a little longer each time nothing is ready, then yields, as crossbeam's channel does,
/// so that polling does not steal the cache lines the other side is writing.
fn backoff(step: &mut u32) {
    if *step < 6 {
        for _ in 0..(1u32 << *step) {
            std::hint::spin_loop();
        }
        *step += 1;
    } else {
        std::thread::yield_now();
    }
}

fn pin(cpu: usize) {
    // On a one-CPU machine both threads share it; the ratio is then a same-core figure.
    let _ = augur_sys::pin_current_thread(cpu);
}

fn run_channel(records: u64) -> Duration {
    pin(1);
    let samples: Vec<Sample> = (0..1024).map(typical_sample).collect();
    let (tx, rx) = crossbeam_channel::bounded::<Sample>(SLOTS as usize);
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        pin(0);
        for i in 0..records {
            tx.send(samples[(i % 1024) as usize].clone()).unwrap();
        }
    });
    let mut sum = 0u64;
    for _ in 0..records {
        let s = rx.recv().unwrap();
        sum = sum.wrapping_add(s.get(Metric::GuestProgress).flatten().unwrap_or(0));
    }
    producer.join().unwrap();
    std::hint::black_box(sum);
    start.elapsed()
}

fn run_ring(records: u64) -> Duration {
    pin(1);
    let dir = ring_dir();
    let path = dir.path().join("ring");
    let mut writer = RingWriter::create(&path, SLOTS, 512).unwrap();
    let mut reader = RingReader::open(&path).unwrap();
    let samples: Vec<Sample> = (0..1024).map(typical_sample).collect();
    let consumed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let producer = {
        let consumed = consumed.clone();
        std::thread::spawn(move || {
            pin(0);
            // The consumer's position is re-read only when the producer would overwrite an unread
            // record, as a bounded channel's sender only waits when the channel is full.
            let mut known_consumed = 0;
            for i in 0..records {
                let mut full = 0;
                while i >= known_consumed + SLOTS {
                    known_consumed = consumed.load(Ordering::Acquire);
                    backoff(&mut full);
                }
                writer.push(&samples[(i % 1024) as usize]).unwrap();
            }
        })
    };
    let mut sum = 0u64;
    let mut read = 0;
    let mut idle = 0;
    while read < records {
        match reader
            .read(|s| s.get(Metric::GuestProgress).flatten().unwrap_or(0))
            .unwrap()
        {
            Some(v) => {
                sum = sum.wrapping_add(v);
                read += 1;
                idle = 0;
                if read % 32 == 0 || read == records {
                    consumed.store(read, Ordering::Release);
                }
            }
            None => backoff(&mut idle),
        }
    }
    producer.join().unwrap();
    assert_eq!(reader.lost(), 0);
    std::hint::black_box(sum);
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sample_transport");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function("crossbeam_channel_owned", |b| {
        b.iter_custom(|iters| {
            let total: Duration = (0..iters).map(|_| run_channel(BATCH)).sum();
            record("channel", BATCH * iters, total);
            total
        })
    });
    group.bench_function("ring_zero_copy", |b| {
        b.iter_custom(|iters| {
            let total: Duration = (0..iters).map(|_| run_ring(BATCH)).sum();
            record("ring", BATCH * iters, total);
            total
        })
    });
    group.finish();
    let results = RESULTS.lock().unwrap();
    let median = |name| {
        let mut rates: Vec<f64> = results
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (channel, ring) = (median("channel"), median("ring"));
    println!("\nsample transport, 1 producer (CPU 0) -> 1 consumer (CPU 1), {BATCH} records per run, medians:");
    println!(
        "  crossbeam channel of owned samples: {:>12.0} records/s (baseline)",
        channel
    );
    println!(
        "  zero-copy sample ring:              {:>12.0} records/s",
        ring
    );
    println!(
        "  ring / channel:                     {:>12.2}x",
        ring / channel
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
