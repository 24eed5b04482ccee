//! Any bytes at all, fed in any chunking, to the frame reader and the sample decoder: never a
//! panic, never a buffer that grows past what was pushed.
#![no_main]

use augur_wire::frame::{self, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // One-shot decode of the whole input.
    if let Ok((frame, used)) = frame::decode(data) {
        assert!(used <= data.len());
        let _ = frame::decode_sample(&frame);
    }
    // Streamed decode, the first byte choosing the chunk size.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut reader = FrameReader::new();
    let mut pushed = 0;
    for piece in data.chunks(chunk) {
        reader.push(piece);
        pushed += piece.len();
        for _ in 0..=pushed {
            match reader.next_sample() {
                Ok(None) => break,
                Ok(Some(sample)) => {
                    // A decoded sample re-encodes to a frame that decodes to the same sample.
                    let mut out = Vec::new();
                    frame::encode_sample(&sample, &mut out).expect("a decoded sample re-encodes");
                    let (again, _) = frame::decode(&out).expect("re-encoded frame decodes");
                    assert_eq!(frame::decode_sample(&again).expect("and validates"), sample);
                }
                Err(_) => {}
            }
        }
        assert!(reader.buffered() <= pushed);
    }
});
