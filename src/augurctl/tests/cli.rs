//! The augurctl binary against an in-process augurd: output, exit codes, one-line errors.

use augur_tests::{kvm_or_skip, TestDaemon};
use augurd::config::Driver;
use std::path::Path;
use std::process::{Command, Output};

fn augurctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_augurctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("augurctl runs")
}

/// `augurctl simulate` of a wide trace on three hosts, with `rest` of the arguments.
fn simulate(trace: &Path, rest: &[&str]) -> Output {
    let trace = trace.to_str().unwrap();
    let args = [
        &[
            "simulate", "--traces", trace, "--format", "wide", "--hosts", "3",
        ],
        rest,
    ]
    .concat();
    augurctl(Path::new("/unused"), &args)
}

fn failure(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "expected exit 1: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(stderr.lines().count(), 1, "one-line error: {stderr}");
    assert!(stderr.starts_with("augurctl: error: "), "{stderr}");
    stderr
}

#[test]
fn no_daemon_is_a_clear_error() {
    let stderr = failure(&augurctl(Path::new("/nonexistent/augurd.sock"), &["vms"]));
    assert!(stderr.contains("augurd is not running"), "{stderr}");
}

#[test]
fn status_json_and_errors_against_a_daemon() {
    let daemon = TestDaemon::start(Driver::None);
    let status = augurctl(&daemon.socket, &["status", "--json"]);
    assert!(status.status.success(), "{status:?}");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON output");
    assert_eq!(json["type"], "status");
    assert_eq!(json["driver"], "none");

    let human = augurctl(&daemon.socket, &["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("driver          none"));

    let stderr = failure(&augurctl(&daemon.socket, &["profile", "ghost"]));
    assert!(
        stderr.contains("no VM with id or name \"ghost\" (unknown_vm)"),
        "{stderr}"
    );

    let stderr = failure(&augurctl(
        &daemon.socket,
        &["vm", "start", "/nonexistent/spec.toml"],
    ));
    assert!(
        stderr.contains("cannot read spec file /nonexistent/spec.toml"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"b\"\nmemory_mib = 3\n[[phase]]\nkind = \"idle\"\nseconds = 1\n",
    )
    .unwrap();
    let stderr = failure(&augurctl(
        &daemon.socket,
        &["vm", "start", bad.to_str().unwrap()],
    ));
    assert!(
        stderr.contains("memory_mib") && stderr.contains("(invalid_spec)"),
        "{stderr}"
    );
}

#[test]
fn start_list_and_stop_a_microvm() {
    if kvm_or_skip("start_list_and_stop_a_microvm").is_none() {
        return;
    }
    let daemon = TestDaemon::start(Driver::Microvm);
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/specs/idle.toml"
    );
    let started = augurctl(&daemon.socket, &["vm", "start", spec]);
    assert!(started.status.success(), "{started:?}");
    assert_eq!(
        String::from_utf8_lossy(&started.stdout),
        "started VM 1 (idle)\n"
    );
    let vms = augurctl(&daemon.socket, &["vms"]);
    let table = String::from_utf8_lossy(&vms.stdout).to_string();
    assert!(
        table.contains(" idle ") && table.contains("running"),
        "{table}"
    );
    let listed = augurctl(&daemon.socket, &["vms", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json["vms"][0]["name"], "idle");
    let stopped = augurctl(&daemon.socket, &["vm", "stop", "idle"]);
    assert_eq!(
        String::from_utf8_lossy(&stopped.stdout),
        "stopped VM 1 (idle)\n"
    );
    failure(&augurctl(&daemon.socket, &["vm", "stop", "idle"]));
}

#[test]
fn store_stats_and_export_outlive_the_vm() {
    if kvm_or_skip("store_stats_and_export_outlive_the_vm").is_none() {
        return;
    }
    let daemon = TestDaemon::start(Driver::Microvm);
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/specs/batch.toml"
    );
    assert!(augurctl(&daemon.socket, &["vm", "start", spec])
        .status
        .success());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(augurctl(&daemon.socket, &["vm", "stop", "batch"])
        .status
        .success());

    let stats = augurctl(&daemon.socket, &["store", "stats", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON stats");
    assert!(json["series"].as_u64().unwrap() >= 10, "{json}");
    assert!(json["samples"].as_u64().unwrap() > 20, "{json}");

    let csv = augurctl(
        &daemon.socket,
        &["store", "export", "batch", "--from", "-1h"],
    );
    assert!(csv.status.success(), "{csv:?}");
    let text = String::from_utf8_lossy(&csv.stdout).to_string();
    assert!(text.starts_with("timestamp_ns,metric,value\n"), "{text}");
    let reads: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(",disk_read_bytes_per_s,"))
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        !reads.is_empty() && reads.iter().any(|r| *r > 1e6),
        "the batch VM read its disk: {reads:?}"
    );

    let json = augurctl(
        &daemon.socket,
        &["store", "export", "1", "--format", "json"],
    );
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON export");
    assert!(parsed["series"]["cpu_vcpus"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));

    // --json on a CSV export: the reply as JSON, the CSV inside it.
    let wrapped = augurctl(
        &daemon.socket,
        &["--json", "store", "export", "batch", "--from", "-1h"],
    );
    let parsed: serde_json::Value =
        serde_json::from_slice(&wrapped.stdout).expect("--json gives JSON");
    assert!(
        parsed.to_string().contains("timestamp_ns,metric,value"),
        "{parsed}"
    );

    let stderr = failure(&augurctl(&daemon.socket, &["store", "export", "ghost"]));
    assert!(stderr.contains("(unknown_vm)"), "{stderr}");
    let stderr = failure(&augurctl(
        &daemon.socket,
        &["store", "export", "batch", "--from", "soon"],
    ));
    assert!(stderr.contains("--from"), "{stderr}");
}

#[test]
fn eval_forecast_reports_every_model_at_every_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\tMemory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\tDisk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]\n");
    for i in 0..2000i64 {
        let cpu =
            20.0 + 10.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin() + (i % 7) as f64;
        text.push_str(&format!(
            "{};\t2;\t5200;\t1;\t{cpu};\t1000;\t500;\t1;\t2;\t3;\t4\n",
            1_375_308_176 + i * 300
        ));
    }
    std::fs::write(dir.path().join("1.csv"), &text).unwrap();
    std::fs::write(dir.path().join("manifest.csv"), "file,rows\n1.csv,2000\n").unwrap();
    let out = augurctl(
        Path::new("/unused"),
        &[
            "eval",
            "forecast",
            "--traces",
            dir.path().to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 21, "(6 baselines + augur-gbt) x 3 horizons");
    for r in results {
        assert!(r["mase"].as_f64().unwrap() > 0.0, "{r}");
        if r["model"] == "augur-gbt" {
            let coverage = r["coverage"]
                .as_f64()
                .expect("augur-gbt has an upper bound");
            assert!((0.5..=1.0).contains(&coverage), "{r}");
        } else {
            assert!(r["coverage"].is_null(), "baselines have no bound: {r}");
        }
    }
    assert_eq!(json["load"]["series"], 1);
    assert_eq!(
        json["load"]["unreadable_files"].as_array().unwrap().len(),
        1,
        "the manifest is not a VM"
    );
    let bad = augurctl(
        Path::new("/unused"),
        &[
            "eval",
            "forecast",
            "--traces",
            dir.path().to_str().unwrap(),
            "--horizons",
            "7m",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--horizons"));
}

#[test]
fn eval_of_series_too_short_for_the_protocol_says_how_long_they_must_be() {
    let dir = tempfile::tempdir().unwrap();
    let day: String = (0..288)
        .map(|i| format!("{i},{},{}\n", i % 50, 10 + i % 7))
        .collect();
    let trace = dir.path().join("day.csv");
    std::fs::write(&trace, format!("step,a,b\n{day}")).unwrap();
    let out = augurctl(
        Path::new("/unused"),
        &[
            "eval",
            "forecast",
            "--traces",
            trace.to_str().unwrap(),
            "--format",
            "wide",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("too short") && stderr.contains("335 steps") && stderr.contains("288"),
        "{stderr}"
    );
}

#[test]
fn simulate_replays_a_wide_trace_under_each_policy() {
    let dir = tempfile::tempdir().unwrap();
    // Nine VMs over two days: three groups, each running a daily job at its own hour.
    let mut text = String::from("step");
    for v in 0..9 {
        text.push_str(&format!(",vm{v}"));
    }
    text.push('\n');
    for step in 0..576 {
        text.push_str(&step.to_string());
        for v in 0..9 {
            let start = 60 + (v % 3) * 50;
            let busy = (start..start + 20).contains(&(step % 288));
            text.push_str(if busy { ",90" } else { ",10" });
        }
        text.push('\n');
    }
    let trace = dir.path().join("day.csv");
    std::fs::write(&trace, text).unwrap();
    let svg = dir.path().join("run.svg");
    for policy in ["none", "reactive", "proactive"] {
        let out = simulate(
            &trace,
            &[
                "--policy",
                policy,
                "--warmup-steps",
                "288",
                "--svg",
                svg.to_str().unwrap(),
                "--json",
            ],
        );
        assert!(out.status.success(), "{policy}: {}", failure(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["policy"], policy);
        assert_eq!(json["steps"], 288);
        for key in ["overload_host_minutes", "slav", "bytes_migrated"] {
            assert!(
                json[key].as_f64().is_some_and(|v| v >= 0.0),
                "{key}: {json}"
            );
        }
        if policy == "none" {
            assert_eq!(json["migrations"], 0);
        }
        assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    }
    // All four in one call: one JSON object per line, all drawn in one SVG.
    let out = simulate(
        &trace,
        &[
            "--policy",
            "all",
            "--warmup-steps",
            "288",
            "--svg",
            svg.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "all: {}", failure(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().filter_map(|j| j["policy"].as_str()).collect();
    assert_eq!(names, ["none", "reactive", "proactive", "oracle"]);
    let drawing = std::fs::read_to_string(&svg).unwrap();
    for name in names {
        assert!(drawing.contains(name), "the SVG names {name}");
    }
    let bad = simulate(&trace, &["--policy", "none,greedy"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(failure(&bad).contains("greedy"), "{}", failure(&bad));
    let no_budget = simulate(&trace, &["--policy", "reactive", "--moves-per-hour", "0"]);
    assert_eq!(no_budget.status.code(), Some(1));
    assert!(
        failure(&no_budget).contains("--moves-per-hour"),
        "{}",
        failure(&no_budget)
    );
}

/// Runs augurctl as `nobody` (uid and gid 65534, no other groups), from a copy of the binary
/// any user may execute.
fn augurctl_as_nobody(socket: &Path, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("augurctl");
    std::fs::copy(env!("CARGO_BIN_EXE_augurctl"), &binary).unwrap();
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv runs")
}

#[test]
fn the_admin_group_may_read_but_only_root_may_change_things() {
    use std::os::unix::fs::PermissionsExt;
    let is_root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    if !is_root || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    // nogroup (65534) stands in for the augur group; nobody's primary group is nogroup.
    let daemon = TestDaemon::start_with(Driver::None, |c| c.admin_group = "nogroup".into());
    // Let the file system through, so that the daemon's own check is what is tested.
    let dir = daemon.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let status = augurctl_as_nobody(&daemon.socket, &["status"]);
    assert!(status.status.success(), "{status:?}");
    let stop = augurctl_as_nobody(&daemon.socket, &["vm", "stop", "web"]);
    let stderr = failure(&stop);
    assert!(
        stderr.contains("uid 65534 may not do this") && stderr.contains("root"),
        "{stderr}"
    );
    // Root gets past the check (and is told the VM does not exist).
    let stderr = failure(&augurctl(&daemon.socket, &["vm", "stop", "web"]));
    assert!(stderr.contains("no VM"), "{stderr}");
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    let bash = augurctl(Path::new("/unused"), &["completions", "bash"]);
    assert!(bash.status.success(), "{bash:?}");
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(
        script.contains("_augurctl()") && script.contains("predict"),
        "{script}"
    );
    let man = augurctl(Path::new("/unused"), &["man"]);
    assert!(man.status.success(), "{man:?}");
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH augurctl"),
        "{page}"
    );
    assert!(page.contains("simulate"), "{page}");
    // A bad argument is clap's usage error: exit status 2, naming the value and the choices.
    let bad = augurctl(Path::new("/unused"), &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash"),
        "{stderr}"
    );
}
