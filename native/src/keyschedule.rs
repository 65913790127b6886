//! Key schedule of the hardened exchange (mirrors `resume/keyschedule.py`, specs 3.1 and 5).
//!
//! HMAC-SHA-256/512, SHA-256, X25519 and ML-KEM-768 come from aws-lc-rs (the `ml-kem`
//! crate only expands a seed into a key pair and encapsulates from a given `m`, for the
//! deterministic random sources: see [`MlKemKey`], [`mlkem_encapsulate`]).  Keys used more than once (a
//! run's PRK, the server secret, the server secret with a tick absorbed) are kept as
//! `hmac::Key` / `hmac::Context`, whose pads are absorbed once and cloned per use.

use std::borrow::Cow;

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_768};
use aws_lc_rs::{agreement, digest, hmac};
use ml_kem::{EncapsulateDeterministic, EncodedSizeUser, KemCore, MlKem768};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::credential::{Credential, SaParams};
use crate::messages::{
    HardenedInit, HardenedResp, KE_DIGEST_LEN, MIN_ESP_SPI, MLKEM768_CT_LEN, MLKEM768_EK_LEN,
};
use crate::rng::RandomSource;
use crate::wire::PAYLOAD_HEADER_LEN;

pub const L_BOOTSTRAP: &[u8] = b"ikeresume v1 bootstrap";
pub const L_HANDLE: &[u8] = b"ikeresume v1 handle";
pub const L_PARAMS: &[u8] = b"ikeresume v1 params";
pub const L_MAC_I: &[u8] = b"ikeresume v1 mac i";
pub const L_MAC_R: &[u8] = b"ikeresume v1 mac r";
pub const L_ESP: &[u8] = b"ikeresume v1 esp keymat";
pub const L_SUCCESSOR: &[u8] = b"ikeresume v1 successor";
pub const L_MSG2: &[u8] = b"ikeresume v1 msg2 responder";
pub const L_MSG3: &[u8] = b"ikeresume v1 msg3 initiator";
pub const L_RESPONDER_VALUES: &[u8] = b"ikeresume v1 responder values";

pub const SECRET_LEN: usize = 32;
pub const HANDLE_LEN: usize = 16;

/// A 32-byte secret that is wiped when dropped.
pub type Secret32 = Zeroizing<[u8; 32]>;

/// `u16(len) | data`.  Callers guarantee `data.len() <= 0xFFFF` (credentials are validated at
/// construction, messages are at most 2048 bytes); longer data is truncated rather than
/// panicking, which can only make a MAC fail.
pub fn push_lp(out: &mut Vec<u8>, data: &[u8]) {
    let n = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(data.get(..usize::from(n)).unwrap_or(data));
}

pub fn lp(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    push_lp(&mut out, data);
    out
}

fn tag32(tag: hmac::Tag) -> [u8; 32] {
    let mut out = [0u8; 32];
    let t = tag.as_ref();
    if let Some(src) = t.get(..32) {
        out.copy_from_slice(src);
    }
    out
}

/// HMAC-SHA-256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    tag32(ctx.sign())
}

/// RFC 5869 HKDF-Extract with SHA-256 (an empty salt is 32 zero bytes).
pub fn hkdf_extract(salt: &[u8], ikm: &[&[u8]]) -> Secret32 {
    let zero = [0u8; 32];
    let salt = if salt.is_empty() { &zero[..] } else { salt };
    Zeroizing::new(hmac_sha256(salt, ikm))
}

/// RFC 5869 HKDF-Expand with SHA-256 for a PRK kept as a key; `info` is the concatenation
/// of `info` parts.  `length` is at most 255 * 32 (callers ask for 32 or 2 * KEYMAT).
pub fn hkdf_expand_key(prk: &hmac::Key, info: &[&[u8]], length: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(length.min(255 * 32) + 32));
    let mut t: [u8; 32] = [0; 32];
    let mut counter: u8 = 1;
    while out.len() < length && out.len() < 255 * 32 {
        let mut ctx = hmac::Context::with_key(prk);
        if counter > 1 {
            ctx.update(&t);
        }
        for p in info {
            ctx.update(p);
        }
        ctx.update(&[counter]);
        t = tag32(ctx.sign());
        out.extend_from_slice(&t);
        counter = counter.wrapping_add(1);
    }
    t.zeroize();
    out.truncate(length);
    out
}

pub fn hkdf_expand(prk: &[u8], info: &[&[u8]], length: usize) -> Zeroizing<Vec<u8>> {
    hkdf_expand_key(&hmac::Key::new(hmac::HMAC_SHA256, prk), info, length)
}

fn expand32(prk: &hmac::Key, info: &[&[u8]]) -> Secret32 {
    let v = hkdf_expand_key(prk, info, 32);
    let mut out = Zeroizing::new([0u8; 32]);
    if let Some(src) = v.get(..32) {
        out.copy_from_slice(src);
    }
    out
}

/// Constant-time comparison (every MAC and cookie check goes through here).
pub fn macs_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The lookup handle of a hardened credential.
pub fn handle_for(secret: &[u8]) -> [u8; HANDLE_LEN] {
    let h = hmac_sha256(secret, &[L_HANDLE]);
    let mut out = [0u8; HANDLE_LEN];
    if let Some(src) = h.get(..HANDLE_LEN) {
        out.copy_from_slice(src);
    }
    out
}

pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    if let Some(src) = ctx.finish().as_ref().get(..32) {
        out.copy_from_slice(src);
    }
    out
}

/// `ctx = lp(ID_I) | lp(ID_R) | lp(handle) | u32(generation) | params_digest`.
pub fn context(cred: &Credential) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(6 + cred.id_i().len() + cred.id_r().len() + cred.handle().len() + 36);
    push_lp(&mut out, cred.id_i());
    push_lp(&mut out, cred.id_r());
    push_lp(&mut out, cred.handle());
    out.extend_from_slice(&cred.generation().to_be_bytes());
    out.extend_from_slice(&cred.params().digest());
    out
}

/// PRK and ctx of one run; each key is expanded when asked for (the responder needs only
/// K_mac_r for message 1).
#[derive(Clone)]
pub struct RunSecrets {
    prk: Secret32,
    key: hmac::Key,
    ctx: Vec<u8>,
    mac_i: Option<Secret32>,
    mac_r: Option<Secret32>,
}

impl RunSecrets {
    /// `PRK = HKDF-Extract(lp(N_I) | lp(N_R), S | DH | SS)` (DH: the X25519 secret, SS: the
    /// ML-KEM-768 shared secret; either may be empty).
    pub fn new(cred: &Credential, nonce_i: &[u8], nonce_r: &[u8], dh: &[u8], ss: &[u8]) -> Self {
        let mut salt = Vec::with_capacity(nonce_i.len() + nonce_r.len() + 4);
        push_lp(&mut salt, nonce_i);
        push_lp(&mut salt, nonce_r);
        let prk = hkdf_extract(&salt, &[cred.secret(), dh, ss]);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &prk[..]);
        RunSecrets {
            prk,
            key,
            ctx: context(cred),
            mac_i: None,
            mac_r: None,
        }
    }

    pub fn prk(&self) -> &[u8; 32] {
        &self.prk
    }

    pub fn ctx(&self) -> &[u8] {
        &self.ctx
    }

    pub fn mac_i(&mut self) -> Secret32 {
        let key = &self.key;
        let ctx = &self.ctx;
        self.mac_i
            .get_or_insert_with(|| expand32(key, &[L_MAC_I, ctx]))
            .clone()
    }

    pub fn mac_r(&mut self) -> Secret32 {
        let key = &self.key;
        let ctx = &self.ctx;
        self.mac_r
            .get_or_insert_with(|| expand32(key, &[L_MAC_R, ctx]))
            .clone()
    }

    pub fn keymat(&self, spi_i2r: u32, spi_r2i: u32, length: usize) -> Zeroizing<Vec<u8>> {
        let spis = [spi_i2r.to_be_bytes(), spi_r2i.to_be_bytes()].concat();
        hkdf_expand_key(&self.key, &[L_ESP, &self.ctx, &spis], length)
    }

    pub fn successor_secret(&self) -> Secret32 {
        expand32(&self.key, &[L_SUCCESSOR, &self.ctx])
    }
}

pub fn mac_msg2(mac_key_r: &[u8], msg1: &[u8], msg2_prefix: &[u8]) -> [u8; 32] {
    hmac_sha256(mac_key_r, &[L_MSG2, &lp(msg1), msg2_prefix])
}

pub fn mac_msg3(mac_key_i: &[u8], msg1: &[u8], msg2: &[u8], msg3_prefix: &[u8]) -> [u8; 32] {
    hmac_sha256(mac_key_i, &[L_MSG3, &lp(msg1), &lp(msg2), msg3_prefix])
}

/// Keys and SPI of one ESP SA (one direction); `spi` was chosen by that SA's receiver.
#[derive(Clone, PartialEq, Eq)]
pub struct DirectionKeys {
    pub spi: u32,
    pub encr_key: Zeroizing<Vec<u8>>,
    pub integ_key: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DirectionKeys(spi={}, <keys>)", self.spi)
    }
}

/// KEYMAT -> (i_to_r, r_to_i), each encryption key (salt included) then integrity key.
pub fn split_keymat(
    params: &SaParams,
    keymat: &[u8],
    spi_i2r: u32,
    spi_r2i: u32,
) -> (DirectionKeys, DirectionKeys) {
    let e = params.encr_key_len();
    let k = params.keymat_len();
    let part = |a: usize, b: usize| Zeroizing::new(keymat.get(a..b).unwrap_or(&[]).to_vec());
    (
        DirectionKeys {
            spi: spi_i2r,
            encr_key: part(0, e),
            integ_key: part(e, k),
        },
        DirectionKeys {
            spi: spi_r2i,
            encr_key: part(k, k + e),
            integ_key: part(k + e, 2 * k),
        },
    )
}

/// Map 4 random bytes to a usable ESP SPI (values below 256 are reserved): add 256.
pub fn esp_spi_from(raw4: [u8; 4]) -> u32 {
    let spi = u32::from_be_bytes(raw4);
    if spi < MIN_ESP_SPI {
        spi + MIN_ESP_SPI
    } else {
        spi
    }
}

/// What the stateless responder computes for a message 1 (all public: they are in message 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderValues {
    pub nonce_r: [u8; 32],
    pub spi_r: [u8; 8],
    pub esp_spi: u32,
}

impl ResponderValues {
    fn from_prf(v: &[u8]) -> Self {
        let mut nonce_r = [0u8; 32];
        let mut spi_r = [0u8; 8];
        let mut esp = [0u8; 4];
        if let (Some(a), Some(b), Some(c)) = (v.get(0..32), v.get(32..40), v.get(40..44)) {
            nonce_r.copy_from_slice(a);
            spi_r.copy_from_slice(b);
            esp.copy_from_slice(c);
        }
        if spi_r == [0u8; 8] {
            spi_r = [0, 0, 0, 0, 0, 0, 0, 1];
        }
        ResponderValues {
            nonce_r,
            spi_r,
            esp_spi: esp_spi_from(esp),
        }
    }
}

/// A peer address as the responder binds it into its values:
/// `u8(IP version) | packed IP | u16(UDP port)`.
pub trait PeerAddr: Clone + Eq + core::hash::Hash {
    fn write_addr_bytes(&self, out: &mut Vec<u8>);
}

pub fn write_ip_port(ip: &std::net::IpAddr, port: u16, out: &mut Vec<u8>) {
    match ip {
        std::net::IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        std::net::IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&port.to_be_bytes());
}

impl PeerAddr for std::net::SocketAddr {
    fn write_addr_bytes(&self, out: &mut Vec<u8>) {
        write_ip_port(&self.ip(), self.port(), out);
    }
}

/// `V = HMAC-SHA-512(server_secret, label | u64(tick) | addr | lp(m1))` for one server
/// secret: the pads are absorbed once, the label and tick once per tick (3 ticks kept).
pub struct ResponderPrf {
    key: hmac::Key,
    ticks: Vec<(u64, hmac::Context)>,
    scratch: Vec<u8>,
}

impl ResponderPrf {
    const KEEP_TICKS: usize = 3;

    pub fn new(server_secret: &[u8]) -> Self {
        ResponderPrf {
            key: hmac::Key::new(hmac::HMAC_SHA512, server_secret),
            ticks: Vec::with_capacity(Self::KEEP_TICKS + 1),
            scratch: Vec::with_capacity(2100),
        }
    }

    /// The full 64-byte PRF output (test vectors record it).
    pub fn prf<A: PeerAddr>(&mut self, tick: u64, addr: &A, msg1: &[u8]) -> [u8; 64] {
        let pos = match self.ticks.iter().position(|(t, _)| *t == tick) {
            Some(p) => p,
            None => {
                let mut ctx = hmac::Context::with_key(&self.key);
                ctx.update(L_RESPONDER_VALUES);
                ctx.update(&tick.to_be_bytes());
                self.ticks.push((tick, ctx));
                while self.ticks.len() > Self::KEEP_TICKS {
                    if let Some(oldest) = self
                        .ticks
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (t, _))| *t)
                        .map(|(i, _)| i)
                    {
                        self.ticks.swap_remove(oldest);
                    }
                }
                self.ticks.iter().position(|(t, _)| *t == tick).unwrap_or(0)
            }
        };
        self.scratch.clear();
        addr.write_addr_bytes(&mut self.scratch);
        push_lp(&mut self.scratch, msg1);
        let mut ctx = match self.ticks.get(pos) {
            Some((_, c)) => c.clone(),
            None => {
                let mut c = hmac::Context::with_key(&self.key);
                c.update(L_RESPONDER_VALUES);
                c.update(&tick.to_be_bytes());
                c
            }
        };
        ctx.update(&self.scratch);
        let tag = ctx.sign();
        let mut out = [0u8; 64];
        if let Some(src) = tag.as_ref().get(..64) {
            out.copy_from_slice(src);
        }
        out
    }

    pub fn values<A: PeerAddr>(&mut self, tick: u64, addr: &A, msg1: &[u8]) -> ResponderValues {
        ResponderValues::from_prf(&self.prf(tick, addr, msg1))
    }
}

/// Generation 0 from a CHILD_SA both peers can read (specs 3.1):
/// `S_0 = HKDF-Expand(HKDF-Extract(label, keys), label | u32(SPI_i2r) | u32(SPI_r2i) |
/// lp(ID_I) | lp(ID_R) | params_digest, 32)`; returns (S_0, handle_0).
pub fn bootstrap_secret(
    params: &SaParams,
    i_to_r: &DirectionKeys,
    r_to_i: &DirectionKeys,
    id_i: &[u8],
    id_r: &[u8],
) -> (Secret32, [u8; HANDLE_LEN]) {
    let prk = hkdf_extract(
        L_BOOTSTRAP,
        &[
            &i_to_r.encr_key,
            &i_to_r.integ_key,
            &r_to_i.encr_key,
            &r_to_i.integ_key,
        ],
    );
    let spis = [i_to_r.spi.to_be_bytes(), r_to_i.spi.to_be_bytes()].concat();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &prk[..]);
    let secret = expand32(
        &key,
        &[L_BOOTSTRAP, &spis, &lp(id_i), &lp(id_r), &params.digest()],
    );
    let handle = handle_for(&secret[..]);
    (secret, handle)
}

// --- X25519 (RFC 7748) ------------------------------------------------------------------------

/// An X25519 key pair from 32 private bytes (clamped by the primitive).
pub struct X25519Key {
    private: agreement::PrivateKey,
    public: [u8; 32],
}

/// The X25519 share was unusable (all-zero shared secret or rejected by the primitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadKeyShare;

impl X25519Key {
    pub fn from_private(bytes: &[u8; 32]) -> Result<Self, BadKeyShare> {
        let private = agreement::PrivateKey::from_private_key(&agreement::X25519, bytes)
            .map_err(|_| BadKeyShare)?;
        let pk = private.compute_public_key().map_err(|_| BadKeyShare)?;
        let public: [u8; 32] = pk.as_ref().try_into().map_err(|_| BadKeyShare)?;
        Ok(X25519Key { private, public })
    }

    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Shared secret with a peer's share; an all-zero result is refused.
    pub fn shared_untrusted(&self, peer: &[u8; 32]) -> Result<Secret32, BadKeyShare> {
        let pk = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        let dh = agreement::agree(&self.private, pk, BadKeyShare, |s| {
            let mut out = Zeroizing::new([0u8; 32]);
            match s.get(..32) {
                Some(src) if s.len() == 32 => out.copy_from_slice(src),
                _ => return Err(BadKeyShare),
            }
            Ok(out)
        })?;
        if bool::from(dh.ct_eq(&[0u8; 32])) {
            return Err(BadKeyShare);
        }
        Ok(dh)
    }
}

// --- the compact form (spec 4.4) ---------------------------------------------------------------

/// `raw` with the KE(36) payload whose generic header is at `off` holding SHA-256 of its
/// data (payload and header lengths adjusted, every other byte as it was).  `off` comes
/// from a parser, so it is in bounds; if not, `raw` is returned unchanged (a MAC fails).
pub fn compact_at(raw: &[u8], off: usize) -> Vec<u8> {
    let plen = raw
        .get(off + 2..off + 4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    let (Some(head), Some(method), Some(data), Some(tail)) = (
        raw.get(..off + 2),
        raw.get(off + PAYLOAD_HEADER_LEN..off + PAYLOAD_HEADER_LEN + 4),
        raw.get(off + PAYLOAD_HEADER_LEN + 4..off + plen),
        raw.get(off + plen..),
    ) else {
        return raw.to_vec();
    };
    let new_plen = PAYLOAD_HEADER_LEN + 4 + KE_DIGEST_LEN;
    let mut out = Vec::with_capacity(raw.len() + new_plen - plen);
    out.extend_from_slice(head);
    out.extend_from_slice(&(new_plen as u16).to_be_bytes());
    out.extend_from_slice(method);
    out.extend_from_slice(&sha256(&[data]));
    out.extend_from_slice(tail);
    let total = (out.len() as u32).to_be_bytes();
    if let Some(len) = out.get_mut(24..28) {
        len.copy_from_slice(&total);
    }
    out
}

/// compact(message 1): what message 3 echoes, the responder values and the MACs use.
pub fn compact_init<'a>(init: &HardenedInit<'a>) -> Cow<'a, [u8]> {
    if init.mlkem_at == 0 {
        Cow::Borrowed(init.raw)
    } else {
        Cow::Owned(compact_at(init.raw, init.mlkem_at))
    }
}

/// compact(message 2).
pub fn compact_resp<'a>(resp: &HardenedResp<'a>) -> Cow<'a, [u8]> {
    if resp.mlkem_at == 0 {
        Cow::Borrowed(resp.raw)
    } else {
        Cow::Owned(compact_at(resp.raw, resp.mlkem_at))
    }
}

// --- ML-KEM-768 (FIPS 203) ----------------------------------------------------------------------

/// The FIPS 203 input check of an encapsulation key (section 7.2): 1184 bytes whose 768
/// 12-bit coefficients are all below q = 3329 (the encoding is then canonical).  aws-lc
/// refuses such a key only when encapsulating, `cryptography` when importing it: the
/// engines check first, so both cores refuse exactly the same keys.
pub fn mlkem_ek_valid(ek: &[u8]) -> bool {
    if ek.len() != MLKEM768_EK_LEN {
        return false;
    }
    ek.get(..MLKEM768_EK_LEN - 32).is_some_and(|t| {
        t.chunks_exact(3).all(|c| {
            let (a, b, d) = (u16::from(c[0]), u16::from(c[1]), u16::from(c[2]));
            (a | ((b & 0x0f) << 8)) < 3329 && ((b >> 4) | (d << 4)) < 3329
        })
    })
}

/// The initiator's ML-KEM-768 key pair and the encapsulation key it sends.
pub struct MlKemKey {
    dk: DecapsulationKey,
    ek: Vec<u8>,
}

impl MlKemKey {
    /// From a 64-byte seed `d | z` (FIPS 203 ML-KEM.KeyGen_internal, the seed form
    /// `cryptography`'s `from_seed_bytes` takes): expanded by the `ml-kem` crate, then the
    /// expanded decapsulation key is loaded into aws-lc.
    pub fn from_seed(seed: &[u8; 64]) -> Result<Self, BadKeyShare> {
        let (d, z) = seed.split_at(32);
        let d = ml_kem::B32::try_from(d).map_err(|_| BadKeyShare)?;
        let z = ml_kem::B32::try_from(z).map_err(|_| BadKeyShare)?;
        let (dk, ek) = MlKem768::generate_deterministic(&d, &z);
        let dk_bytes = Zeroizing::new(dk.as_bytes().to_vec());
        let dk = DecapsulationKey::new(&ML_KEM_768, &dk_bytes).map_err(|_| BadKeyShare)?;
        Ok(MlKemKey {
            dk,
            ek: ek.as_bytes().to_vec(),
        })
    }

    /// A fresh key pair from aws-lc's generator (the system's randomness).
    pub fn generate() -> Result<Self, BadKeyShare> {
        let dk = DecapsulationKey::generate(&ML_KEM_768).map_err(|_| BadKeyShare)?;
        let ek = dk
            .encapsulation_key()
            .and_then(|k| k.key_bytes())
            .map_err(|_| BadKeyShare)?
            .as_ref()
            .to_vec();
        Ok(MlKemKey { dk, ek })
    }

    /// A key drawn as `rng` says: the system's generator for `Os`, otherwise a 64-byte
    /// seed drawn from `rng` (the draw the Python core makes).
    pub fn draw(rng: &mut RandomSource) -> Result<Self, BadKeyShare> {
        if matches!(rng, RandomSource::Os) {
            return Self::generate();
        }
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill(&mut seed[..]).map_err(|_| BadKeyShare)?;
        Self::from_seed(&seed)
    }

    pub fn encapsulation_key(&self) -> &[u8] {
        &self.ek
    }

    /// The shared secret of a ciphertext of the right length; a forged one gives a
    /// pseudorandom wrong secret (implicit rejection), so the MAC fails.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Secret32, BadKeyShare> {
        if ct.len() != MLKEM768_CT_LEN {
            return Err(BadKeyShare);
        }
        let ss = self
            .dk
            .decapsulate(Ciphertext::from(ct))
            .map_err(|_| BadKeyShare)?;
        let mut out = Zeroizing::new([0u8; 32]);
        let src = ss.as_ref().get(..32).ok_or(BadKeyShare)?;
        out.copy_from_slice(src);
        Ok(out)
    }
}

/// FIPS 203 ML-KEM.Encaps_internal(ek, m): the deterministic encapsulation the vectors and
/// the differential tests replay (`resume/kem_testing.py` is the Python twin).
pub fn mlkem_encapsulate_deterministic(
    ek: &[u8],
    m: &[u8; 32],
) -> Result<(Vec<u8>, Secret32), BadKeyShare> {
    if !mlkem_ek_valid(ek) {
        return Err(BadKeyShare);
    }
    let enc = ml_kem::Encoded::<<MlKem768 as KemCore>::EncapsulationKey>::try_from(ek)
        .map_err(|_| BadKeyShare)?;
    let key = <MlKem768 as KemCore>::EncapsulationKey::from_bytes(&enc);
    let m = ml_kem::B32::from(*m);
    let (ct, ss) = key.encapsulate_deterministic(&m).map_err(|_| BadKeyShare)?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ss.as_slice());
    Ok((ct.to_vec(), out))
}

/// The responder's (ciphertext, shared secret) for a peer's encapsulation key: aws-lc's
/// randomized encapsulation for `Os`, otherwise ML-KEM.Encaps_internal with `m` drawn
/// from `rng`.  An unusable key (wrong length, coefficient not reduced) draws nothing and is
/// refused.
pub fn mlkem_encapsulate(
    ek: &[u8],
    rng: &mut RandomSource,
) -> Result<(Vec<u8>, Secret32), BadKeyShare> {
    if !mlkem_ek_valid(ek) {
        return Err(BadKeyShare);
    }
    if !matches!(rng, RandomSource::Os) {
        let mut m = Zeroizing::new([0u8; 32]);
        rng.fill(&mut m[..]).map_err(|_| BadKeyShare)?;
        return mlkem_encapsulate_deterministic(ek, &m);
    }
    let key = EncapsulationKey::new(&ML_KEM_768, ek).map_err(|_| BadKeyShare)?;
    let (ct, ss) = key.encapsulate().map_err(|_| BadKeyShare)?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ss.as_ref().get(..32).ok_or(BadKeyShare)?);
    Ok((ct.as_ref().to_vec(), out))
}
