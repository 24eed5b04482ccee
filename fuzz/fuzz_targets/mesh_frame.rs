//! Anything a network peer can send, into the mesh's frame decoder and replay guard: never a
//! panic, never an allocation past the cap, and nothing accepted without the key.
#![no_main]

use augur_mesh::frame::{self, ReplayGuard, MAX_PAYLOAD};
use augur_mesh::MeshKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MeshKey::from_bytes(&[7u8; 32]).expect("a 32-byte key");
    if let Ok(total) = frame::frame_len(data) {
        assert!(total <= frame::HEADER_LEN + MAX_PAYLOAD + frame::TAG_LEN);
    }
    if let Ok(envelope) = frame::decode(&key, data) {
        // Only a frame made with the key gets here: re-encoding it gives a frame that decodes
        // to the same envelope, and the guard refuses the second sight of it.
        let again = frame::encode(&key, &envelope).expect("a decoded envelope re-encodes");
        assert_eq!(frame::decode(&key, &again).expect("and decodes"), envelope);
        let mut guard = ReplayGuard::default();
        if guard.check(&envelope, envelope.sent_ms).is_ok() {
            assert!(guard.check(&envelope, envelope.sent_ms).is_err());
        }
    }
});
