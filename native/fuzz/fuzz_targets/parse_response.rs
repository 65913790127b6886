//! Any bytes: message 2 (either mode), a NACK or a DecodeError; an accepted hardened
//! message 2 and NACK are canonical.
#![no_main]
use ikeresume_native::messages::{
    build_hardened_resp_prefix, build_nack, parse_response_untrusted, Response,
};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::plain;

fuzz_target!(|data: &[u8]| {
    let plain = plain(data);
    match parse_response_untrusted(data) {
        Ok(Response::HardenedResp(m)) if plain && m.header.flags == 0x20 => {
            let mut again = build_hardened_resp_prefix(
                &m.header.spi_i,
                &m.header.spi_r,
                &m.sa,
                m.nonce,
                m.ke.as_ref(),
                m.mlkem,
            )
            .expect("re-encodes");
            again.extend_from_slice(m.mac);
            assert_eq!(again, data);
        }
        Ok(Response::Nack(m)) if plain && m.header.flags == 0x20 => {
            assert_eq!(
                build_nack(&m.header.spi_i, &m.header.spi_r, m.header.message_id),
                data
            );
        }
        _ => {}
    }
});
