//! Any bytes: message 2 (either mode), a NACK or a DecodeError; an accepted hardened
//! message 2 and NACK are canonical.
#![no_main]
use ikeresume_native::messages::{
    build_hardened_resp_prefix, build_nack, parse_response_untrusted, Response,
};
use ikeresume_native::wire::decode_chain_untrusted;
use libfuzzer_sys::fuzz_target;

/// Default version and all-zero payload flag bytes (C bit and reserved bits are ignored on
/// receipt, so only such a message can be expected to re-encode byte for byte).
fn plain(data: &[u8]) -> bool {
    data.get(17) == Some(&0x20)
        && decode_chain_untrusted(data).is_ok_and(|(_, c)| {
            c.payloads()
                .iter()
                .all(|p| data.get(p.start - 3) == Some(&0))
        })
}

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
