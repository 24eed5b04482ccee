//! Writes seed inputs for the fuzz targets: valid sample frames and payloads of several shapes,
//! so the fuzzers start from archives that pass validation and mutate from there.
//!
//! Usage: `cargo run -p augur-wire --example fuzz_seeds -- fuzz/corpus`
#![forbid(unsafe_code)]

use augur_wire::frame::{archive_sample, encode_sample};
use augur_wire::{Metric, Sample, Source};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let frames = root.join("frame_decoder");
    let payloads = root.join("sample_payload");
    std::fs::create_dir_all(&frames)?;
    std::fs::create_dir_all(&payloads)?;
    for (i, count) in [0usize, 1, 3, 17, 40].into_iter().enumerate() {
        let mut sample = Sample::new(i as u64, Source::ALL[i % Source::ALL.len()], 1 << (20 + i));
        for (k, metric) in Metric::ALL.iter().cycle().take(count).enumerate() {
            if k % 5 == 4 {
                sample.push_unavailable(*metric);
            } else {
                sample.push(*metric, (k as u64) << (k % 40));
            }
        }
        let mut frame = Vec::new();
        encode_sample(&sample, &mut frame)?;
        std::fs::write(frames.join(format!("seed-{i}")), &frame)?;
        std::fs::write(payloads.join(format!("seed-{i}")), archive_sample(&sample)?)?;
    }
    println!("wrote seeds under {}", root.display());
    Ok(())
}
