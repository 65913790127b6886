//! Any bytes: a value or a DecodeError, never a panic; an accepted value re-encodes exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sa) = ikeresume_native::messages::decode_sa_untrusted(data) {
        assert_eq!(&sa.encode()[..], data);
    }
});
