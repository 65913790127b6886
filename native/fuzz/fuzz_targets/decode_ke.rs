//! Any bytes: a value or a DecodeError, never a panic; an accepted value re-encodes exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((method, ke)) = ikeresume_native::messages::decode_ke_untrusted(data) {
        assert_eq!(&ikeresume_native::messages::encode_ke(method, ke)[..], data);
    }
});
