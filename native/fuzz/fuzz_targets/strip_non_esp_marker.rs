//! Any bytes: a value or a DecodeError, never a panic; an accepted value re-encodes exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(inner) = ikeresume_native::wire::strip_non_esp_marker_untrusted(data) {
        assert_eq!(ikeresume_native::wire::add_non_esp_marker(inner), data);
    }
});
