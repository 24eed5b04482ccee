//! How reports reach the host, and what happens when the host does not read them.
//!
//! The collector never blocks on the host: it hands each report to an [`Outbox`] holding at
//! most a fixed number of reports; when it is full the oldest is dropped and counted. A writer
//! thread takes reports out and writes them to the channel, reopening it (after a pause) when a
//! write fails, which is what a host-side restart or a migration looks like from inside.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub const DEFAULT_PORT: &str = "/dev/virtio-ports/org.augur.shim";
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Where the shim sends its reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A virtio-serial port (a character device in the guest).
    VirtioSerial(PathBuf),
    /// A TCP address, `host:port`.
    Tcp(String),
    /// A vsock address: the host is CID 2.
    Vsock { cid: u32, port: u32 },
}

impl Transport {
    /// `virtio-serial[:PATH]`, `tcp:HOST:PORT` or `vsock:CID:PORT`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        match kind {
            "virtio-serial" if rest.is_empty() => Ok(Transport::VirtioSerial(DEFAULT_PORT.into())),
            "virtio-serial" => Ok(Transport::VirtioSerial(rest.into())),
            "tcp" if rest.contains(':') => Ok(Transport::Tcp(rest.to_string())),
            "vsock" => {
                let (cid, port) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("vsock transport needs CID:PORT, got {rest:?}"))?;
                let number = |s: &str, what: &str| {
                    s.parse::<u32>()
                        .map_err(|_| format!("vsock {what} {s:?} is not a number"))
                };
                Ok(Transport::Vsock {
                    cid: number(cid, "CID")?,
                    port: number(port, "port")?,
                })
            }
            _ => Err(format!(
                "unknown transport {text:?}: use virtio-serial[:PATH], tcp:HOST:PORT or vsock:CID:PORT"
            )),
        }
    }

    fn open(&self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Transport::VirtioSerial(path) => {
                Box::new(std::fs::OpenOptions::new().write(true).open(path)?)
            }
            Transport::Tcp(addr) => {
                let stream = std::net::TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            Transport::Vsock { cid, port } => Box::new(vsock::VsockStream::connect(
                &vsock::VsockAddr::new(*cid, *port),
            )?),
        })
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::VirtioSerial(path) => write!(f, "virtio-serial:{}", path.display()),
            Transport::Tcp(addr) => write!(f, "tcp:{addr}"),
            Transport::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

/// Reports waiting for the host, at most `capacity` of them.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a report, dropping (and counting) the oldest when full.
    pub fn push(&self, report: Vec<u8>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while queue.len() >= self.capacity {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(report);
        self.ready.notify_one();
    }

    /// Reports dropped so far because the host did not read.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn pop(&self) -> Vec<u8> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(report) = queue.pop_front() {
                return report;
            }
            queue = self.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn unpop(&self, report: Vec<u8>) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() < self.capacity {
            queue.push_front(report);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes the outbox to `transport` forever, reconnecting after failures.
pub fn run_writer(transport: Transport, outbox: Arc<Outbox>) {
    let mut channel: Option<Box<dyn Write + Send>> = None;
    let mut warned = false;
    loop {
        let report = outbox.pop();
        if channel.is_none() {
            match transport.open() {
                Ok(c) => {
                    eprintln!("augur-shim: connected to {transport}");
                    warned = false;
                    channel = Some(c);
                }
                Err(e) => {
                    if !warned {
                        eprintln!("augur-shim: cannot open {transport}: {e}; retrying every {RECONNECT_PAUSE:?}");
                        warned = true;
                    }
                    outbox.unpop(report);
                    std::thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
            }
        }
        let Some(c) = channel.as_mut() else { continue };
        if let Err(e) = c.write_all(&report).and_then(|()| c.flush()) {
            eprintln!("augur-shim: write to {transport} failed: {e}; reconnecting");
            channel = None;
            outbox.unpop(report);
            std::thread::sleep(RECONNECT_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_transport_and_names_bad_ones() {
        assert_eq!(
            Transport::parse("virtio-serial").unwrap(),
            Transport::VirtioSerial(DEFAULT_PORT.into())
        );
        assert_eq!(
            Transport::parse("tcp:10.0.2.2:7000").unwrap(),
            Transport::Tcp("10.0.2.2:7000".into())
        );
        assert_eq!(
            Transport::parse("vsock:2:7000").unwrap(),
            Transport::Vsock { cid: 2, port: 7000 }
        );
        assert!(Transport::parse("vsock:x:1").unwrap_err().contains("CID"));
        assert!(Transport::parse("carrier-pigeon")
            .unwrap_err()
            .contains("unknown transport"));
        assert!(Transport::parse("tcp:nohostport").is_err());
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts() {
        let outbox = Outbox::new(3);
        for i in 0..10u8 {
            outbox.push(vec![i]);
        }
        assert_eq!(outbox.len(), 3);
        assert_eq!(outbox.dropped(), 7);
        assert_eq!(outbox.pop(), vec![7]);
    }

    #[test]
    fn the_writer_reconnects_after_the_host_goes_away() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let outbox = Outbox::new(16);
        let writer_box = outbox.clone();
        std::thread::spawn(move || run_writer(Transport::Tcp(addr), writer_box));
        outbox.push(b"first".to_vec());
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"first");
        drop(conn);
        // Writes after the host closed fail (maybe not the first one): keep pushing until the
        // writer reconnects and a report arrives on a new connection.
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            outbox.push(b"again".to_vec());
            if let Ok((c, _)) = listener.accept() {
                break c;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never reconnected"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        conn.set_nonblocking(false).unwrap();
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"again");
    }
}
