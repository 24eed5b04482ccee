//! Any bytes as the payload of a frame whose header and checksum passed: the archive validation
//! must refuse what is not a sample, without panicking or reading out of bounds.
#![no_main]

use augur_wire::frame::{self, Frame, FrameKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = Frame {
        kind: FrameKind::Sample,
        payload: data,
    };
    if let Ok(sample) = frame::decode_sample(&frame) {
        let mut out = Vec::new();
        if frame::encode_sample(&sample, &mut out).is_ok() {
            let (again, _) = frame::decode(&out).expect("re-encoded frame decodes");
            assert_eq!(frame::decode_sample(&again).expect("and validates"), sample);
        }
    }
});
