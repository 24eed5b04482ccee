//! A full disk: appends fail with a clear error, nothing acknowledged is lost, nothing is
//! corrupted, and the store takes writes again once there is room. Needs root (a small tmpfs).

use augur_store::*;
use std::process::Command;

const S: i64 = 1_000_000_000;

struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "augur-test"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("SKIPPED a_full_disk_fails_appends_cleanly_and_recovers: cannot mount a tmpfs (needs root)");
        return;
    };
    let dir = fs.0.path().join("store");
    let filler = fs.0.path().join("filler");
    let options = StoreOptions {
        durability: Durability::EveryAppend,
        block_points: 512,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&dir, options.clone()).unwrap();
    store
        .register_vm(VmMeta {
            id: 1,
            name: "full".into(),
            attrs: Default::default(),
        })
        .unwrap();
    // Leave a little room, then write until the disk is full.
    std::fs::write(&filler, vec![0u8; 900 * 1024]).unwrap();
    let mut acked = 0i64;
    let error = loop {
        let batch: Vec<Sample<'_>> = (acked..acked + 100)
            .map(|i| Sample {
                vm: 1,
                metric: "noise",
                ts_ns: i * S,
                value: Value::F64((i * 7919 % 1000) as f64 / 3.0),
            })
            .collect();
        match store.append(&batch) {
            Ok(report) => acked += report.written as i64,
            Err(error) => break error,
        }
        assert!(acked < 10_000_000, "the disk never filled");
    };
    let message = error.to_string();
    assert!(
        message.contains("No space left") || message.contains("os error 28"),
        "{message}"
    );
    assert_eq!(
        store.read_range(1, "noise", 0, i64::MAX).len() as i64,
        acked,
        "a failed append leaves nothing behind"
    );
    drop(store);

    // Reopen on the still-full disk: every acknowledged point is there, no damage reported.
    let store = Store::open(&dir, options.clone()).unwrap();
    assert!(store.open_report().is_clean(), "{:?}", store.open_report());
    assert_eq!(
        store.read_range(1, "noise", 0, i64::MAX).len() as i64,
        acked
    );
    drop(store);

    // Room again: writes go on where they stopped.
    std::fs::remove_file(&filler).unwrap();
    let mut store = Store::open(&dir, options).unwrap();
    let batch: Vec<Sample<'_>> = (acked..acked + 10)
        .map(|i| Sample {
            vm: 1,
            metric: "noise",
            ts_ns: i * S,
            value: Value::F64(1.0),
        })
        .collect();
    assert_eq!(store.append(&batch).unwrap().written, 10);
    assert_eq!(
        store.read_range(1, "noise", 0, i64::MAX).len() as i64,
        acked + 10
    );
    eprintln!("disk filled after {acked} acknowledged points; all kept");
}
