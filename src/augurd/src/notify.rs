//! Readiness for systemd (`Type=notify`): `READY=1` and `STOPPING=1` sent as datagrams to
//! `$NOTIFY_SOCKET`, a path or an abstract name (`@...`). Without the variable nothing is sent.

use std::os::unix::net::UnixDatagram;
use tracing::warn;

fn send(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().to_string();
    let result = UnixDatagram::unbound().and_then(|socket| {
        if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(state.as_bytes(), &addr)
        } else {
            socket.send_to(state.as_bytes(), &target)
        }
    });
    if let Err(error) = result {
        warn!(%error, socket = %target, "cannot notify the service manager");
    }
}

/// The admin socket answers and the sampling threads run.
pub fn ready() {
    send("READY=1");
}

pub fn stopping() {
    send("STOPPING=1");
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_reaches_a_notify_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // The variable is read at the moment of sending; this test is the only one that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::ready();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
