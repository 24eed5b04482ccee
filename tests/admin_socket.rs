//! The admin socket end to end: a host served in-process, a client speaking the protocol.

use augur_admin::{AdminClient, ClientError, ErrorCode, Reply, ReplyEnvelope, Request, MAX_LINE};
use augur_tests::TestDaemon as Daemon;
use augurd::config::Driver;
use augurd::server::AdminSocket;
use std::path::Path;
use std::time::Duration;

fn error_code(raw: &str) -> (u64, ErrorCode) {
    let envelope: ReplyEnvelope =
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("not a reply envelope ({e}): {raw}"));
    (envelope.id, envelope.error.expect("an error reply").code)
}

#[test]
fn malformed_and_unknown_requests_get_error_replies_on_a_live_connection() {
    let daemon = Daemon::start(Driver::None);
    let mut client = daemon.client();
    assert_eq!(
        error_code(&client.call_raw("this is not json").unwrap()),
        (0, ErrorCode::Malformed)
    );
    assert_eq!(
        error_code(
            &client
                .call_raw(r#"{"version":1,"id":5,"request":{"type":"reboot"}}"#)
                .unwrap()
        ),
        (5, ErrorCode::UnknownRequest)
    );
    assert_eq!(
        error_code(
            &client
                .call_raw(r#"{"version":2,"id":6,"request":{"type":"vms"}}"#)
                .unwrap()
        ),
        (6, ErrorCode::UnsupportedVersion)
    );
    assert_eq!(
        error_code(
            &client
                .call_raw(r#"{"version":1,"id":7,"request":{"type":"profile"}}"#)
                .unwrap()
        ),
        (7, ErrorCode::Malformed)
    );
    // The same connection still serves good requests.
    match client.call(Request::Status).unwrap() {
        Reply::Status(status) => assert_eq!(status.driver, "none"),
        other => panic!("unexpected {other:?}"),
    }
    match client.call(Request::VmStop { vm: "ghost".into() }) {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::UnknownVm),
        other => panic!("unexpected {other:?}"),
    }
    match client.call(Request::VmStart {
        spec: "name = \"x\"".into(),
        origin: Some("x.toml".into()),
    }) {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidSpec);
            assert!(e.message.starts_with("x.toml"), "{}", e.message);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_oversized_line_is_refused_and_the_connection_closed() {
    let daemon = Daemon::start(Driver::None);
    let mut client = daemon.client();
    let huge = "x".repeat(MAX_LINE + 10);
    assert_eq!(
        error_code(&client.call_raw(&huge).unwrap()).1,
        ErrorCode::TooLarge
    );
    assert!(
        client.call(Request::Status).is_err(),
        "the connection is closed"
    );
    assert!(
        daemon.client().call(Request::Vms).is_ok(),
        "other clients are unaffected"
    );
}

#[test]
fn a_second_daemon_does_not_steal_a_live_socket() {
    let daemon = Daemon::start(Driver::None);
    let result = daemon.runtime.block_on(AdminSocket::bind(&daemon.socket));
    assert!(result
        .unwrap_err()
        .to_string()
        .contains("already listening"));
    assert!(daemon.client().call(Request::Status).is_ok());
}

#[test]
fn client_reports_a_daemon_that_is_not_running() {
    match AdminClient::connect(Path::new("/nonexistent/augurd.sock")) {
        Err(e @ ClientError::NotRunning { .. }) => assert!(e.to_string().contains("not running")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn vm_start_profile_stop_round_trip() {
    if augur_tests::kvm_or_skip("vm_start_profile_stop_round_trip").is_none() {
        return;
    }
    let daemon = Daemon::start(Driver::Microvm);
    let mut client = daemon.client();
    let spec = include_str!("../examples/specs/batch.toml").to_string();
    let started = match client
        .call(Request::VmStart {
            spec: spec.clone(),
            origin: None,
        })
        .unwrap()
    {
        Reply::VmStarted { vm } => vm,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(started.name, "batch");
    match client.call(Request::VmStart { spec, origin: None }) {
        Err(ClientError::Remote(e)) => assert!(e.message.contains("already running")),
        other => panic!("a second VM with the same name: {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(1500));
    let profile = match client
        .call(Request::Profile {
            vm: "batch".into(),
            history: Some(5),
        })
        .unwrap()
    {
        Reply::Profile(p) => p,
        other => panic!("unexpected {other:?}"),
    };
    let current = profile
        .vm
        .current
        .expect("a window after a few sample intervals");
    assert!(
        current.disk_read_bytes_per_s.unwrap_or(0.0) > 1e6,
        "batch starts by reading its disk: {current:?}"
    );
    assert!(!profile.history.is_empty());
    assert!(current.sources.iter().any(|s| s == "microvm_run_loop"));
    match client.call(Request::Vms).unwrap() {
        Reply::Vms { vms } => assert_eq!(vms.len(), 1),
        other => panic!("unexpected {other:?}"),
    }
    match client
        .call(Request::VmStop {
            vm: started.id.to_string(),
        })
        .unwrap()
    {
        Reply::VmStopped { name, .. } => assert_eq!(name, "batch"),
        other => panic!("unexpected {other:?}"),
    }
    match client.call(Request::Profile {
        vm: "batch".into(),
        history: None,
    }) {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::UnknownVm),
        other => panic!("unexpected {other:?}"),
    }
}
