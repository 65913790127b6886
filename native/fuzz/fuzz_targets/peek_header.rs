//! Any bytes: a header or a DecodeError, never a panic; a header exactly when there are 28
//! bytes, and the handle peek never reads past the datagram.
#![no_main]
use ikeresume_native::wire::{peek_handle_untrusted, peek_header_untrusted, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        peek_header_untrusted(data).is_ok(),
        data.len() >= HEADER_LEN
    );
    if let Ok(h) = peek_handle_untrusted(data) {
        assert!(h.len() <= data.len().saturating_sub(32));
    }
});
