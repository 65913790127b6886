//! Shared by the targets that check canonical re-encoding.

use ikeresume_native::wire::decode_chain_untrusted;

/// Default version and all-zero payload flag bytes (C bit and reserved bits are ignored on
/// receipt, so only such a message can be expected to re-encode byte for byte).
pub fn plain(data: &[u8]) -> bool {
    data.get(17) == Some(&0x20)
        && decode_chain_untrusted(data).is_ok_and(|(_, c)| {
            c.payloads()
                .iter()
                .all(|p| data.get(p.start - 3) == Some(&0))
        })
}
