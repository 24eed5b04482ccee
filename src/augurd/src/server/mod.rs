//! The admin server: a Unix socket speaking the protocol of [`augur_admin`].
//!
//! One task per connection, at most [`MAX_CONNECTIONS`] at once; one module per verb, each
//! with the `apply` that carries it out. Requests are read as bounded lines, so a client cannot
//! make the daemon buffer without limit.

pub mod access;
mod mesh;
mod migrate;
mod status;
pub(crate) mod store;
mod vm_start;
mod vm_stop;
mod vms;

use crate::host::Host;
use augur_admin::{
    AdminError, ErrorCode, Reply, ReplyEnvelope, Request, MAX_LINE, PROTOCOL_VERSION,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

pub const MAX_CONNECTIONS: usize = 64;
/// After refusing an oversized line: how much more of it to read and drop, and for how long.
const LINGER_BYTES: u64 = 4 * MAX_LINE as u64;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// An admin connection idle this long between requests is closed, so that idle clients cannot
/// hold every place.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Request types this build knows, to tell an unknown request from a malformed one.
const KNOWN_REQUESTS: [&str; 15] = [
    "migrate",
    "peers",
    "migrations",
    "explain",
    "drain",
    "pause",
    "resume",
    "status",
    "vms",
    "profile",
    "vm_start",
    "vm_stop",
    "store_stats",
    "store_export",
    "predict",
];

/// A bound admin socket, removed again when dropped.
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminSocket {
    /// Binds `path` (mode 0660), replacing a stale socket left by a crashed daemon but refusing
    /// to steal one a live daemon answers on.
    pub async fn bind(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!("another augurd is already listening on {}", path.display());
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| anyhow::anyhow!("cannot bind admin socket {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, host: Arc<Host>, mut shutdown: watch::Receiver<bool>) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let access = Arc::new(access::AccessPolicy::new(
            &host.config.admin_group,
            &host.config.admin_write_group,
        ));
        if let Some(gid) = access.socket_gid() {
            if let Err(error) = std::os::unix::fs::chown(&self.path, None, Some(gid)) {
                warn!(%error, gid, "cannot give the admin socket to the admin group");
            }
        }
        info!(socket = %self.path.display(), "admin socket ready");
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let host = host.clone();
                        let access = access.clone();
                        match limit.clone().try_acquire_owned() {
                            Ok(permit) => {
                                tokio::spawn(async move {
                                    if let Err(error) = serve_connection(stream, host, &access).await {
                                        debug!(%error, "admin connection ended");
                                    }
                                    drop(permit);
                                });
                            }
                            Err(_) => {
                                tokio::spawn(refuse(stream));
                            }
                        }
                    }
                    Err(error) => warn!(%error, "admin accept failed"),
                },
            }
        }
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn refuse(mut stream: UnixStream) {
    let error = AdminError::new(ErrorCode::Unavailable, "too many admin connections");
    let _ = stream.write_all(reply_line(0, Err(error)).as_bytes()).await;
}

fn reply_line(id: u64, result: Result<Reply, AdminError>) -> String {
    let (reply, error) = match result {
        Ok(reply) => (Some(reply), None),
        Err(error) => (None, Some(error)),
    };
    let envelope = ReplyEnvelope {
        version: PROTOCOL_VERSION,
        id,
        reply,
        error,
    };
    let mut line = serde_json::to_string(&envelope).unwrap_or_else(|e| {
        format!(r#"{{"version":{PROTOCOL_VERSION},"id":{id},"error":{{"code":"internal","message":"{e}"}}}}"#)
    });
    line.push('\n');
    line
}

/// Reads the envelope far enough to answer even a bad request with its id.
fn parse(line: &[u8]) -> (u64, Result<Request, AdminError>) {
    let value: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                0,
                Err(AdminError::new(
                    ErrorCode::Malformed,
                    format!("not JSON: {e}"),
                )),
            )
        }
    };
    let id = value.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return (
                id,
                Err(AdminError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                    "protocol version {v} is not supported (this daemon speaks {PROTOCOL_VERSION})"
                ),
                )),
            )
        }
        None => {
            return (
                id,
                Err(AdminError::new(ErrorCode::Malformed, "missing \"version\"")),
            )
        }
    }
    let Some(request) = value.get("request") else {
        return (
            id,
            Err(AdminError::new(ErrorCode::Malformed, "missing \"request\"")),
        );
    };
    let kind = request.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if !KNOWN_REQUESTS.contains(&kind) {
        return (
            id,
            Err(AdminError::new(
                ErrorCode::UnknownRequest,
                format!(
                    "unknown request type {kind:?} (known: {})",
                    KNOWN_REQUESTS.join(", ")
                ),
            )),
        );
    }
    match serde_json::from_value::<Request>(request.clone()) {
        Ok(request) => (id, Ok(request)),
        Err(e) => (
            id,
            Err(AdminError::new(
                ErrorCode::Malformed,
                format!("bad {kind} request: {e}"),
            )),
        ),
    }
}

/// Every request runs off the runtime: several take locks the sampler holds while libvirt
/// answers, or read the store, and the runtime's two workers also serve the mesh and /metrics.
async fn dispatch(host: &Arc<Host>, request: Request) -> Result<Reply, AdminError> {
    let host = host.clone();
    blocking(move || handle(&host, request)).await
}

fn handle(host: &Arc<Host>, request: Request) -> Result<Reply, AdminError> {
    match request {
        Request::Status => Ok(status::apply(host)),
        Request::Vms => Ok(vms::apply_list(host)),
        Request::Profile { vm, history } => vms::apply_profile(host, &vm, history),
        Request::VmStart { spec, origin } => vm_start::apply(host, &spec, origin.as_deref()),
        Request::VmStop { vm } => vm_stop::apply(host, &vm),
        Request::StoreStats => store::apply_stats(host),
        Request::Peers
        | Request::Migrations
        | Request::Explain { .. }
        | Request::Drain { .. }
        | Request::Pause
        | Request::Resume => mesh::apply(host, request),
        Request::Migrate(request) => migrate::apply(host, &request),
        Request::Predict { vm } => host.predict(&vm).map(Reply::Predict),
        Request::StoreExport {
            vm,
            from_ns,
            to_ns,
            format,
        } => store::apply_export(host, &vm, from_ns, to_ns, format),
    }
}

async fn blocking(
    f: impl FnOnce() -> Result<Reply, AdminError> + Send + 'static,
) -> Result<Reply, AdminError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(AdminError::new(
            ErrorCode::Internal,
            format!("request failed: {e}"),
        ))
    })
}

async fn serve_connection(
    stream: UnixStream,
    host: Arc<Host>,
    access: &access::AccessPolicy,
) -> std::io::Result<()> {
    let peer = access::peer_of(&stream)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        // A connection that says nothing for a while gives its place back.
        let Ok(n) = tokio::time::timeout(IDLE_TIMEOUT, read).await else {
            return Ok(());
        };
        if n? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let error = AdminError::new(
                ErrorCode::TooLarge,
                format!("request line exceeds {MAX_LINE} bytes; closing the connection"),
            );
            write
                .write_all(reply_line(0, Err(error)).as_bytes())
                .await?;
            write.shutdown().await?;
            // Lingering close: let the client finish sending (up to a bound, briefly) so that
            // its write does not fail before it reads the reply.
            let mut rest = (&mut reader).take(LINGER_BYTES);
            let mut sink = tokio::io::sink();
            let drain = tokio::io::copy(&mut rest, &mut sink);
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (id, request) = parse(&line);
        let result = match request {
            Ok(request) => match access.check(&peer, &request) {
                Ok(()) => dispatch(&host, request).await,
                Err(denied) => {
                    info!(uid = peer.uid, pid = ?peer.pid, "admin request denied");
                    Err(denied)
                }
            },
            Err(error) => Err(error),
        };
        write.write_all(reply_line(id, result).as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_tells_bad_requests_apart() {
        let code = |line: &str| parse(line.as_bytes()).1.unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::Malformed);
        assert_eq!(
            code(r#"{"version":7,"id":1,"request":{"type":"vms"}}"#),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            code(r#"{"version":1,"id":1,"request":{"type":"reboot"}}"#),
            ErrorCode::UnknownRequest
        );
        assert_eq!(
            code(r#"{"version":1,"id":1,"request":{"type":"vm_stop"}}"#),
            ErrorCode::Malformed
        );
        assert_eq!(
            parse(br#"{"version":1,"id":42,"request":{"type":"nope"}}"#).0,
            42
        );
        assert!(parse(br#"{"version":1,"id":1,"request":{"type":"vms"}}"#)
            .1
            .is_ok());
    }
}
