//! The augurd binary: config checking, start-up, and a clean exit on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn augurd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_augurd"))
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("augurd.toml");
    let text = format!(
        "driver = \"none\"\ndata_dir = \"{}\"\nadmin_socket = \"{}\"\n{extra}",
        dir.join("data").display(),
        dir.join("augurd.sock").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_good_and_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "sample_interval_ms = 500\n");
    let out = augurd()
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config ok\n");

    let bad = write_config(dir.path(), "[microvm]\ndisk_mb = 64\n");
    let out = augurd()
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("disk_mb") && stderr.contains("augurd.toml"),
        "{stderr}"
    );

    let missing = augurd()
        .args(["--config", "/nonexistent/augurd.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/augurd.toml"));
}

#[test]
fn runs_until_sigterm_then_exits_cleanly_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let socket = dir.path().join("augurd.sock");
    let mut child = augurd()
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "augurd never opened its socket");
        assert!(child.try_wait().unwrap().is_none(), "augurd exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = augur_admin::AdminClient::connect(&socket).unwrap();
    assert!(matches!(
        client.call(augur_admin::Request::Status),
        Ok(augur_admin::Reply::Status(_))
    ));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "augurd did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(!socket.exists(), "the socket is removed on shutdown");
}
