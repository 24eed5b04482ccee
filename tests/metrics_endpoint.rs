//! `/metrics` over real HTTP: the daemon's health and a running microVM's figures in the
//! Prometheus text format; other paths, methods and oversized requests get a clear answer.

use augur_admin::{Reply, Request};
use augur_tests::TestDaemon;
use augurd::config::Driver;
use augurd::metrics::MetricsServer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn get(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

#[test]
fn metrics_show_health_and_each_vms_figures() {
    let kvm = augur_tests::kvm_or_skip("metrics_show_health_and_each_vms_figures").is_some();
    let daemon = TestDaemon::start(if kvm { Driver::Microvm } else { Driver::None });
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let (server, addr) = daemon
        .runtime
        .block_on(MetricsServer::bind("127.0.0.1:0".parse().unwrap()))
        .unwrap();
    daemon
        .runtime
        .spawn(server.serve(daemon.host.clone(), stop_rx));

    let body = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("\naugur_up 1"), "{body}");
    assert!(body.contains("\naugur_vms 0"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");

    if kvm {
        let mut client = daemon.client();
        let spec = include_str!("../examples/specs/idle.toml").to_string();
        assert!(matches!(
            client.call(Request::VmStart { spec, origin: None }),
            Ok(Reply::VmStarted { .. })
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
            if body.contains("augur_vm_cpu_vcpus{vm_id=\"1\",vm=\"idle\"}") {
                assert!(body.contains("\naugur_vms 1"), "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "no VM figures: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    assert!(get(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    // An endless header is cut off without an answer, and the endpoint keeps serving.
    let huge = [b'a'; 64 * 1024];
    assert!(!get(addr, &huge).contains("200 OK"));
    assert!(get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").contains("augur_up 1"));
}
