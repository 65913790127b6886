//! Any bytes: a payload chain or a DecodeError; an accepted chain tiles the datagram
//! exactly and re-encodes to the same bytes when version and payload flag bytes are 0x20/0.
#![no_main]
use ikeresume_native::wire::{decode_message_untrusted, encode_message, MAX_PAYLOADS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode_message_untrusted(data) else {
        return;
    };
    assert!(m.payloads.len() <= MAX_PAYLOADS);
    let total: usize = 28 + m.payloads.iter().map(|p| 4 + p.2.len()).sum::<usize>();
    assert_eq!(total, data.len());
    let payloads: Vec<(u8, &[u8])> = m.payloads.iter().map(|p| (p.0, &p.2[..])).collect();
    let h = m.header;
    let again = encode_message(
        &h.spi_i,
        &h.spi_r,
        h.flags,
        h.message_id,
        &payloads,
        h.exchange_type,
        0,
    )
    .expect("an accepted message re-encodes");
    let flags_zero = (0..m.payloads.len()).all(|i| {
        let off = 28 + m.payloads[..i].iter().map(|p| 4 + p.2.len()).sum::<usize>();
        data.get(off + 1) == Some(&0)
    });
    if h.version == 0x20 && flags_zero {
        assert_eq!(again, data);
    }
});
