//! Any bytes: a value or a DecodeError, never a panic; an accepted value re-encodes exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = ikeresume_native::messages::decode_id_untrusted(data) {
        assert_eq!(id.len() + 3, data.len());
    }
});
