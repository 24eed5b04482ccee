//! Crash safety: a child process appends and syncs continuously and is killed with SIGKILL at
//! random moments, 50 times. After each kill the store must open, report no damage beyond a torn
//! tail, and hold every point the child saw acknowledged as durable.

use augur_store::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "AUGUR_STORE_CRASH_DIR";
const SERIES: u64 = 4;
const S: i64 = 1_000_000_000;

fn value_of(i: i64, series: u64) -> f64 {
    i as f64 * 0.5 + series as f64
}

/// The child: resume after the newest durable point and append forever, reporting each sync.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let options = StoreOptions {
        block_points: 256,
        wal_checkpoint_bytes: 64 << 10,
        ..StoreOptions::default()
    };
    let mut store = Store::open(Path::new(&dir), options).unwrap();
    store
        .register_vm(VmMeta {
            id: 1,
            name: "crash".into(),
            attrs: Default::default(),
        })
        .unwrap();
    let mut next = store.latest(1, "m0").map_or(0, |p| p.ts_ns / S + 1);
    let mut out = std::io::stdout().lock();
    loop {
        let metrics: Vec<String> = (0..SERIES).map(|s| format!("m{s}")).collect();
        let mut batch = Vec::new();
        for i in next..next + 50 {
            for (s, metric) in metrics.iter().enumerate() {
                batch.push(Sample {
                    vm: 1,
                    metric,
                    ts_ns: i * S,
                    value: Value::F64(value_of(i, s as u64)),
                });
            }
        }
        let report = store.append(&batch).unwrap();
        assert!(report.rejected.is_empty());
        store.sync().unwrap();
        next += 50;
        // Everything below `next` is now acknowledged as durable.
        writeln!(out, "acked {next}").unwrap();
        out.flush().unwrap();
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn fifty_sigkills_lose_no_acknowledged_point() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Lcg(seed);
    let mut acked_total = 0i64;
    for round in 0..50 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = 0i64;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.parse().ok()) {
                    last = n;
                }
            }
            last
        });
        std::thread::sleep(Duration::from_millis(30 + rng.next(250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap().max(acked_total);
        acked_total = acked;

        let store = Store::open(dir.path(), StoreOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: store does not open: {e}"));
        let report = store.open_report();
        assert!(
            report.is_clean(),
            "round {round}: damage beyond a torn tail: {report:?}"
        );
        for s in 0..SERIES {
            let points = store.read_range(1, &format!("m{s}"), 0, i64::MAX);
            assert!(
                points.len() as i64 >= acked,
                "round {round}: series m{s} holds {} points, {acked} were acknowledged",
                points.len()
            );
            for (i, p) in points.iter().enumerate() {
                assert_eq!(
                    p.ts_ns,
                    i as i64 * S,
                    "round {round}: m{s} point {i} out of place"
                );
                assert_eq!(
                    p.value,
                    Value::F64(value_of(i as i64, s)),
                    "round {round}: m{s} point {i} value"
                );
            }
        }
    }
    assert!(acked_total > 0, "the child never acknowledged anything");
    eprintln!("50 kills survived; {acked_total} points per series acknowledged");
}
