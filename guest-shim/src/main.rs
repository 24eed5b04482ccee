//! `augur-shim`: reports what only the guest can see (syscall mix, flows, disk pattern, memory
//! pressure, CPU) to the host's augurd, once per interval, as framed rkyv records.
//!
//! ```text
//! augur-shim [--transport virtio-serial[:PATH] | tcp:HOST:PORT | vsock:CID:PORT]
//!            [--interval-ms N] [--queue N] [--flows-every N] [--once]
//! ```
#![forbid(unsafe_code)]

mod collector;
mod procfs;
mod syscalls;
mod transport;

use std::time::{Duration, Instant};
use transport::{Outbox, Transport};

const USAGE: &str = "usage: augur-shim [--transport virtio-serial[:PATH]|tcp:HOST:PORT|vsock:CID:PORT] [--interval-ms N] [--queue N] [--flows-every N] [--once]";

#[derive(Debug)]
struct Args {
    transport: Transport,
    interval: Duration,
    queue: usize,
    /// Reports between readings of the flow table.
    flows_every: u64,
    once: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        transport: Transport::VirtioSerial(transport::DEFAULT_PORT.into()),
        interval: Duration::from_secs(1),
        queue: 16,
        flows_every: collector::SLOW_EVERY,
        once: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--transport" => parsed.transport = Transport::parse(&value("--transport")?)?,
            "--interval-ms" => {
                let ms: u64 = value("--interval-ms")?.parse().map_err(|_| {
                    "--interval-ms needs a whole number of milliseconds".to_string()
                })?;
                if !(100..=3_600_000).contains(&ms) {
                    return Err(format!("--interval-ms {ms} is outside 100..=3600000"));
                }
                parsed.interval = Duration::from_millis(ms);
            }
            "--queue" => {
                parsed.queue = value("--queue")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or("--queue needs a number of reports in 1..=1024")?;
            }
            "--flows-every" => {
                parsed.flows_every = value("--flows-every")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or("--flows-every needs a number of reports in 1..=3600")?;
            }
            "--once" => parsed.once = true,
            "--help" | "-h" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut collector = collector::Collector::open(args.flows_every);
    if args.once {
        // For a person checking a guest: one report, printed, nothing sent. The counters opened
        // just now, so wait an interval for the counts to cover one.
        std::thread::sleep(args.interval);
        let (sample, flows) = collector.collect(0);
        for (metric, value) in sample.known() {
            match value {
                Some(v) => println!("{metric} {v}"),
                None => println!("{metric} unavailable"),
            }
        }
        for f in flows.iter().flat_map(|r| &r.flows) {
            println!(
                "flow {} {}:{} sockets={}",
                f.proto_label(),
                f.ip(),
                f.port,
                f.sockets
            );
        }
        return;
    }
    let outbox = Outbox::new(args.queue);
    {
        let outbox = outbox.clone();
        let transport = args.transport.clone();
        std::thread::Builder::new()
            .name("augur-shim-tx".into())
            .spawn(move || transport::run_writer(transport, outbox))
            .expect("cannot start the writer thread");
    }
    eprintln!(
        "augur-shim: reporting every {:?} to {}",
        args.interval, args.transport
    );
    let mut next = Instant::now();
    loop {
        let (sample, flows) = collector.collect(outbox.dropped());
        match collector::Collector::frame(&sample, flows.as_ref()) {
            Ok(bytes) => outbox.push(bytes),
            Err(e) => eprintln!("augur-shim: report not framed: {e}"),
        }
        next += args.interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (the guest was paused or migrated): skip the missed ticks.
            next = now + args.interval;
        }
        std::thread::sleep(next - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_options() {
        let a = args(&[]).unwrap();
        assert_eq!(a.interval, Duration::from_secs(1));
        assert!(matches!(a.transport, Transport::VirtioSerial(_)));
        let a = args(&[
            "--transport",
            "tcp:127.0.0.1:9",
            "--interval-ms",
            "500",
            "--queue",
            "4",
        ])
        .unwrap();
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!(a.queue, 4);
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert!(args(&["--interval-ms", "5"])
            .unwrap_err()
            .contains("outside"));
        assert!(args(&["--queue", "0"]).unwrap_err().contains("1..=1024"));
        assert!(args(&["--bogus"]).unwrap_err().contains("unknown argument"));
        assert!(args(&["--transport"])
            .unwrap_err()
            .contains("needs a value"));
    }

    #[test]
    fn a_report_frames_and_decodes() {
        let mut collector = collector::Collector::open(collector::SLOW_EVERY);
        let (sample, flows) = collector.collect(3);
        let bytes = collector::Collector::frame(&sample, flows.as_ref()).unwrap();
        let mut reader = augur_wire::frame::FrameReader::new();
        reader.push(&bytes);
        let first = reader.next_record().unwrap().unwrap();
        let augur_wire::Record::Sample(decoded) = first else {
            panic!("the sample comes first")
        };
        assert_eq!(
            decoded.get(augur_wire::Metric::ShimDroppedReports),
            Some(Some(3))
        );
        // /proc/stat exists wherever the tests run.
        assert!(decoded
            .get(augur_wire::Metric::GuestCpuBusyNs)
            .unwrap()
            .is_some());
        assert!(matches!(
            reader.next_record(),
            Ok(Some(augur_wire::Record::Flows(_)))
        ));
    }
}
