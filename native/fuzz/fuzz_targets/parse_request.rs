//! Any bytes: message 1 or 3 (either mode) or a DecodeError; an accepted hardened message
//! is canonical (the builders reproduce it when version and flag bytes are the default ones).
#![no_main]
use ikeresume_native::messages::{
    build_hardened_auth_prefix, build_hardened_init, parse_request_untrusted, Request,
};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::plain;

fuzz_target!(|data: &[u8]| {
    match parse_request_untrusted(data) {
        Ok(Request::HardenedInit(m)) if plain(data) && m.header.flags == 0x08 => {
            let again = build_hardened_init(
                &m.header.spi_i,
                m.handle,
                &m.sa,
                m.nonce,
                m.ke.as_ref(),
                m.mlkem,
            )
            .expect("re-encodes");
            assert_eq!(again, data);
        }
        Ok(Request::HardenedAuth(m))
            if plain(data) && plain(m.init.raw) && m.header.flags == 0x08 =>
        {
            let mut again =
                build_hardened_auth_prefix(&m.header.spi_i, &m.header.spi_r, m.init.raw)
                    .expect("re-encodes");
            again.extend_from_slice(m.mac);
            assert_eq!(again, data);
        }
        _ => {}
    }
});
