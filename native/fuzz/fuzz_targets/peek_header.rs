//! Any bytes: a header or a DecodeError, never a panic; an accepted header's length is the
//! datagram's.
#![no_main]
use ikeresume_native::wire::peek_header_untrusted;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = peek_header_untrusted(data) {
        assert_eq!(h.length as usize, data.len());
        assert_eq!(h.version >> 4, 2);
    }
});
