//! Encryption at rest, the Rust half of `store/keys.py` and `store/wrapping.py`
//! (format: `specs/cache-format.md` section 3): AES-256-GCM under master keys that Python
//! hands over (the same key ids), `wrapped = nonce(12) | ciphertext | tag(16)`, and the AAD
//! that binds a ciphertext to its row:
//!
//! ```text
//! aad     = "ikeresume-store/v1" 0 PURPOSE 0 role 0 mode 0 u16(len handle) handle u64(gen) binding
//! binding = SHA-256("ikeresume-store binding v1" 0 u32(len id_i) id_i u32(len id_r) id_r params)
//! ```

use std::collections::HashMap;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::rand;
use zeroize::Zeroizing;

use crate::keyschedule::sha256;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"ikeresume-store/v1\x00";
const BINDING_LABEL: &[u8] = b"ikeresume-store binding v1\x00";
const INSTALL_LABEL: &[u8] = b"ikeresume-store install v1\x00";

/// Why a wrapped value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwrapError {
    /// The row names a key id this keyring does not have (`MasterKeyError`).
    UnknownKey(String),
    /// Too short, or does not authenticate (`CorruptRecord`).
    Corrupt(&'static str),
}

/// The master keys: the first wraps, all unwrap (a rotation in progress).
pub struct Keyring {
    keys: HashMap<String, LessSafeKey>,
    current: String,
}

impl Keyring {
    /// `keys`: (key id, 32 key bytes), the current (wrapping) key first.
    pub fn new(keys: Vec<(String, Zeroizing<Vec<u8>>)>) -> Result<Self, String> {
        let current = keys
            .first()
            .map(|(id, _)| id.clone())
            .ok_or("no master key")?;
        let mut map = HashMap::new();
        for (id, key) in keys {
            if key.len() != KEY_LEN {
                return Err(format!("master key {id:?} must be {KEY_LEN} bytes"));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &key)
                .map_err(|_| format!("master key {id:?} rejected by AES-256-GCM"))?;
            if map.insert(id.clone(), LessSafeKey::new(unbound)).is_some() {
                return Err(format!("master key id {id:?} appears twice"));
            }
        }
        Ok(Keyring { keys: map, current })
    }

    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// The plaintext of `blob` under `key_id` for `aad`.
    pub fn unwrap(
        &self,
        key_id: &str,
        blob: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| UnwrapError::UnknownKey(key_id.to_owned()))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(UnwrapError::Corrupt("wrapped value truncated"));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| UnwrapError::Corrupt("bad nonce"))?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let n = key
            .open_in_place(nonce, Aad::from(aad), &mut buf[..])
            .map_err(|_| UnwrapError::Corrupt("does not authenticate"))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// (current key id, `nonce | ciphertext | tag`) with a fresh random nonce.
    pub fn wrap(&self, plaintext: &[u8], aad: &[u8]) -> Result<(&str, Vec<u8>), String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce).map_err(|_| "system random failed".to_owned())?;
        self.wrap_with_nonce(plaintext, aad, nonce)
    }

    /// As [`Keyring::wrap`] with a nonce the caller drew (fresh random bytes, never reused).
    pub fn wrap_with_nonce(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<(&str, Vec<u8>), String> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or("current master key missing")?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = {
            let (_, body) = out.split_at_mut(NONCE_LEN);
            key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                body,
            )
            .map_err(|_| "AES-GCM seal failed".to_owned())?
        };
        out.extend_from_slice(tag.as_ref());
        Ok((self.current.as_str(), out))
    }
}

/// `record_binding(id_i, id_r, params_text)`.
pub fn record_binding(id_i: &[u8], id_r: &[u8], params_text: &str) -> [u8; 32] {
    let li = u32::try_from(id_i.len()).unwrap_or(u32::MAX).to_be_bytes();
    let lr = u32::try_from(id_r.len()).unwrap_or(u32::MAX).to_be_bytes();
    sha256(&[BINDING_LABEL, &li, id_i, &lr, id_r, params_text.as_bytes()])
}

/// `install_binding(sa_text, expires_at)` (an install-outbox row's public fields).
pub fn install_binding(sa_text: &str, expires_at: Option<f64>) -> [u8; 32] {
    let l = u32::try_from(sa_text.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let exp = expires_at.map(f64::to_be_bytes);
    let mut parts: Vec<&[u8]> = vec![INSTALL_LABEL, &l, sa_text.as_bytes()];
    if let Some(e) = &exp {
        parts.push(e);
    }
    sha256(&parts)
}

/// `record_aad(purpose, role, mode, handle, generation, binding)`; None when the handle
/// is longer than a u16 length can say (Python raises OverflowError there: corrupt).
pub fn record_aad(
    purpose: &str,
    role: &str,
    mode: &str,
    handle: &[u8],
    generation: u64,
    binding: &[u8; 32],
) -> Option<Vec<u8>> {
    let hl = u16::try_from(handle.len()).ok()?;
    let mut out = Vec::with_capacity(
        AAD_PREFIX.len() + purpose.len() + role.len() + mode.len() + handle.len() + 45,
    );
    out.extend_from_slice(AAD_PREFIX);
    for part in [purpose, role, mode] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    out.extend_from_slice(&hl.to_be_bytes());
    out.extend_from_slice(handle);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(binding);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_aad_binding() {
        let kr = Keyring::new(vec![("k1".into(), Zeroizing::new(vec![7u8; 32]))]).unwrap();
        let b = record_binding(b"\x02a", b"\x02b", "{}");
        let aad = record_aad("secret", "responder", "hardened", b"hh", 3, &b).unwrap();
        let (kid, blob) = kr.wrap(b"s3cret", &aad).unwrap();
        assert_eq!(kid, "k1");
        assert_eq!(&kr.unwrap("k1", &blob, &aad).unwrap()[..], b"s3cret");
        let other = record_aad("secret", "responder", "hardened", b"hh", 4, &b).unwrap();
        assert_eq!(
            kr.unwrap("k1", &blob, &other),
            Err(UnwrapError::Corrupt("does not authenticate"))
        );
        assert!(matches!(
            kr.unwrap("k2", &blob, &aad),
            Err(UnwrapError::UnknownKey(_))
        ));
        assert!(kr.unwrap("k1", &blob[..20], &aad).is_err());
    }
}
