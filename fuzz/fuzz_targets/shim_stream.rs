//! A hostile guest's shim channel: any bytes, in any chunking, into the host-side decoder. Never
//! a panic, never more buffered than one frame and one read, and whatever it keeps is a shim's.
#![no_main]

use augur_sense::shim_channel::ShimDecoder;
use augur_wire::frame::MAX_PAYLOAD;
use augur_wire::Source;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1) * 16;
    let mut decoder = ShimDecoder::new();
    for piece in data.chunks(chunk) {
        decoder.feed(piece, "fuzz");
        assert!(decoder.buffered() <= MAX_PAYLOAD + 16 + chunk);
        if let Some(sample) = decoder.take(1) {
            assert_eq!(sample.source, Source::Shim.code());
            assert!(sample.readings.iter().all(|r| (700..800).contains(&r.metric)));
        }
    }
});
