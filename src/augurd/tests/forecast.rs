//! Online forecasting in the augurd binary: models train on the store's history at start, are
//! written to disk by generation, reload on restart, and answer `predict` for any stored VM.

use augur_admin::{AdminClient, ErrorCode, Reply, Request};
use augur_store::{Sample, Store, StoreOptions, Value, VmMeta};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NS: i64 = 1_000_000_000;
const STEP_S: i64 = 300;
const DAYS: i64 = 3;

/// Three VMs with three days of 5-minute history ending now: a daily cycle, a flat one, and one
/// that grows; each with memory, disk, network and dirty-rate series.
fn fill_store(dir: &Path) {
    let mut store = Store::open(dir, StoreOptions::default()).unwrap();
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start_s = (now_s - DAYS * 86_400) / STEP_S * STEP_S;
    for (id, name) in [(1, "cycle"), (2, "flat"), (3, "grower")] {
        store
            .register_vm(VmMeta {
                id,
                name: name.into(),
                attrs: [("vcpus", "2"), ("memory_mib", "1024")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .unwrap();
        let mut noise = 0x2545_f491_4f6c_dd1du64 ^ id;
        let steps = (now_s - start_s) / STEP_S;
        let mut names_and_values: Vec<(&str, i64, f64)> = Vec::new();
        for i in 0..steps {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let jitter = (noise >> 11) as f64 / (1u64 << 53) as f64;
            let day = ((i * STEP_S) % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
            let cpu = match id {
                1 => 1.0 + 0.8 * day.sin() + 0.1 * jitter,
                2 => 0.3 + 0.02 * jitter,
                _ => 0.2 + 1.5 * i as f64 / steps as f64 + 0.1 * jitter,
            };
            let ts = start_s + i * STEP_S;
            names_and_values.extend([
                ("cpu_vcpus", ts, cpu),
                ("working_set_mib", ts, 200.0 + 100.0 * cpu),
                ("disk_read_bytes_per_s", ts, 1e5 * cpu),
                ("disk_write_bytes_per_s", ts, 5e4),
                ("net_tx_bytes_per_s", ts, 2e4 * cpu),
                ("net_rx_bytes_per_s", ts, 1e4),
                ("dirty_mib_per_s", ts, 0.5 * cpu),
            ]);
        }
        let samples: Vec<Sample<'_>> = names_and_values
            .iter()
            .map(|(metric, ts, v)| Sample {
                vm: id,
                metric,
                ts_ns: ts * NS,
                value: Value::F64(*v),
            })
            .collect();
        store.append(&samples).unwrap();
    }
    store.close().unwrap();
}

/// A running augurd, stopped with SIGTERM when dropped (also when a test fails).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> Daemon {
    start_with(dir, "")
}

/// Starts augurd on `dir` with `extra` appended to its config.
fn start_with(dir: &Path, extra: &str) -> Daemon {
    let config = dir.join("augurd.toml");
    std::fs::write(
        &config,
        format!(
            "driver = \"none\"\ndata_dir = \"{}\"\nadmin_socket = \"{}\"\n{extra}",
            dir.join("data").display(),
            dir.join("augurd.sock").display()
        ),
    )
    .unwrap();
    let _ = std::fs::remove_file(dir.join("augurd.sock"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_augurd"))
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("augurd.sock").exists() {
        assert!(Instant::now() < deadline, "augurd never opened its socket");
        assert!(child.try_wait().unwrap().is_none(), "augurd exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon(child)
}

fn predict(dir: &Path, vm: &str) -> Result<augur_admin::PredictReply, augur_admin::AdminError> {
    let mut client = AdminClient::connect(&dir.join("augurd.sock")).unwrap();
    match client.call(Request::Predict { vm: vm.into() }) {
        Ok(Reply::Predict(reply)) => Ok(reply),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(augur_admin::ClientError::Remote(error)) => Err(error),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn models_train_on_history_persist_by_generation_and_forecast_every_resource() {
    let dir = tempfile::tempdir().unwrap();
    fill_store(&dir.path().join("data/store"));
    let daemon = start(dir.path());

    let deadline = Instant::now() + Duration::from_secs(240);
    let reply = loop {
        let reply = predict(dir.path(), "cycle").unwrap();
        if reply.resources.len() == 4 {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "no forecasts after 240 s: {:?}",
            reply.notes
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(reply.step_s, STEP_S);
    assert!(reply.history_steps >= 288, "{} steps", reply.history_steps);
    for r in &reply.resources {
        assert_eq!(r.model_generation, 1);
        let horizons: Vec<i64> = r.horizons.iter().map(|h| h.horizon_s).collect();
        assert_eq!(horizons, vec![300, 900, 3600], "{}", r.resource);
        for h in &r.horizons {
            assert!(h.mean.is_finite() && h.mean >= 0.0, "{r:?}");
            assert!(h.upper >= h.mean, "{r:?}");
            // A season of outcomes was walked: each mean says what it follows.
            assert!(!h.centre.is_empty(), "{r:?}");
        }
    }
    // The daily cycle's CPU stays within the range it has ever had.
    let cpu = reply
        .resources
        .iter()
        .find(|r| r.resource == "cpu")
        .unwrap();
    for h in &cpu.horizons {
        assert!((0.0..=2.5).contains(&h.mean), "{cpu:?}");
    }
    let class = reply.class.expect("a workload class");
    assert!(!class.explanation.is_empty());

    let unknown = predict(dir.path(), "nonesuch").unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownVm);
    drop(daemon);

    let models = dir.path().join("data/models");
    for resource in ["cpu", "mem", "disk", "net"] {
        assert!(
            models.join(format!("{resource}-000001.json")).exists(),
            "{resource} model file"
        );
    }
    // A damaged newer generation is skipped on restart and the good one is used at once.
    std::fs::write(models.join("cpu-000002.json"), b"{\"format\":").unwrap();
    let daemon = start(dir.path());
    let reply = predict(dir.path(), "2").unwrap();
    drop(daemon);
    assert_eq!(reply.name, "flat");
    assert_eq!(reply.resources.len(), 4, "{:?}", reply.notes);
    let cpu = reply
        .resources
        .iter()
        .find(|r| r.resource == "cpu")
        .unwrap();
    assert_eq!(cpu.model_generation, 1);

    // Other behavioural features configured: the models made for the old ones are not fed the
    // new columns; new ones are trained at once and used.
    let daemon = start_with(dir.path(), "[forecast]\nfeatures = [\"exits_per_s\"]\n");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let reply = predict(dir.path(), "cycle").unwrap();
        assert!(
            reply.resources.iter().all(|r| r.model_generation >= 2),
            "a model trained for other features was used: {reply:?}"
        );
        if reply.resources.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retrained models: {:?}",
            reply.notes
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(daemon);
}
