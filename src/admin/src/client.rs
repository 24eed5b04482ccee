//! A blocking admin client, one request at a time.

use crate::messages::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("augurd is not running (no socket at {path})")]
    NotRunning { path: PathBuf },
    #[error("permission denied on {path} (root or the augur group is needed)")]
    PermissionDenied { path: PathBuf },
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to augurd failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("augurd sent an invalid reply: {0}")]
    Protocol(String),
    #[error("{0}")]
    Remote(AdminError),
}

#[derive(Debug)]
pub struct AdminClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl AdminClient {
    /// Connects to the daemon's socket.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning {
                    path: path.to_path_buf(),
                }
            }
            std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                path: path.to_path_buf(),
            },
            _ => ClientError::Connect {
                path: path.to_path_buf(),
                source,
            },
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
        })
    }

    /// How long to wait for a reply; `None` waits as long as the daemon takes (a migration).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.reader.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Sends one raw line and returns the raw reply line (for tests of bad input).
    pub fn call_raw(&mut self, line: &str) -> Result<String, ClientError> {
        self.writer.write_all(line.as_bytes())?;
        self.writer.write_all(b"\n")?;
        let mut reply = String::new();
        let read = (&mut self.reader)
            .take(MAX_REPLY as u64 + 1)
            .read_line(&mut reply)?;
        if read == 0 {
            return Err(ClientError::Protocol("augurd closed the connection".into()));
        }
        Ok(reply)
    }

    /// Sends a request and waits for its reply.
    pub fn call(&mut self, request: Request) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::to_string(&RequestEnvelope {
            version: PROTOCOL_VERSION,
            id,
            request,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = self.call_raw(&line)?;
        let envelope: ReplyEnvelope =
            serde_json::from_str(&reply).map_err(|e| ClientError::Protocol(e.to_string()))?;
        // A refusal before the daemon read any request (too many connections) carries id 0.
        if let (0, Some(error)) = (envelope.id, &envelope.error) {
            return Err(ClientError::Remote(error.clone()));
        }
        if envelope.id != id {
            return Err(ClientError::Protocol(format!(
                "reply id {} does not match request id {id}",
                envelope.id
            )));
        }
        match (envelope.reply, envelope.error) {
            (_, Some(error)) => Err(ClientError::Remote(error)),
            (Some(reply), None) => Ok(reply),
            (None, None) => Err(ClientError::Protocol(
                "reply holds neither reply nor error".into(),
            )),
        }
    }
}
