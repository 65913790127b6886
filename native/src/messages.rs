//! The messages of the resumption exchange on top of [`crate::wire`] (mirrors
//! `resume/wire.py`).  Payload order is fixed and unknown payloads are rejected, so
//! every message has one encoding.  Paper-mode messages are *recognised* (a hardened-only
//! responder must NACK them exactly as the Python one does) but never built here.
//!
//! KE payloads are generic (`u16 method | u16 0 | data`): method 31 is X25519, 36
//! ML-KEM-768 (the encapsulation key in message 1, the ciphertext in message 2, their
//! SHA-256 inside RESUME_ECHO).  The parsers record where a KE(36) payload sits so that the
//! key schedule can build the compact form (`keyschedule::compact_at`; hashing needs the
//! crypto feature, this module none).

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use crate::wire::{
    be_u16, be_u32, decode_chain_untrusted, encode_message, Chain, DecodeError, EncodeError,
    Header, PayloadRef, EXCHANGE_IKE_RESUME, FLAG_INITIATOR, FLAG_RESPONSE,
    NOTIFY_RESUMPTION_REFUSED, PAYLOAD_HEADER_LEN, PT_IDI, PT_IDR, PT_KE, PT_NONCE, PT_NOTIFY,
    PT_RESUME_AUTH, PT_RESUME_ECHO, PT_RESUME_HANDLE, PT_RESUME_SA,
};

pub const MAC_LEN: usize = 32;
pub const NONCE_LEN: usize = 32;
pub const NONCE_MIN: usize = 16;
pub const NONCE_MAX: usize = 256;
pub const HANDLE_LEN: usize = 16;
pub const HANDLE_MIN: usize = 8;
pub const HANDLE_MAX: usize = 64;
pub const ID_MAX: usize = 255;
pub const GROUP_CURVE25519: u16 = 31;
pub const X25519_LEN: usize = 32;
/// ML-KEM-768 as a key exchange method (the code point strongSwan 6 and libreswan 5.4 use).
pub const KE_MLKEM768: u16 = 36;
pub const MLKEM768_EK_LEN: usize = 1184;
pub const MLKEM768_CT_LEN: usize = 1088;
/// A KE(36) payload's data in the compact form (and in RESUME_ECHO): SHA-256(ek or ct).
pub const KE_DIGEST_LEN: usize = 32;
pub const ZERO_SPI: [u8; 8] = [0; 8];
pub const MIN_ESP_SPI: u32 = 256;
const SA_LEN: usize = 12;
/// Notify body of the NACK: protocol 0, SPI size 0, type 8240.
pub const NACK_BODY: [u8; 4] = {
    let t = NOTIFY_RESUMPTION_REFUSED.to_be_bytes();
    [0, 0, t[0], t[1]]
};

/// RESUME_SA body: the sender's inbound ESP SPI and the algorithms (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeSa {
    pub spi: u32,
    pub encr: u16,
    pub key_bits: u16,
    pub integ: u16,
    /// 1 = transport, 2 = tunnel
    pub mode: u8,
}

impl ResumeSa {
    pub fn encode(&self) -> [u8; SA_LEN] {
        let mut b = [0u8; SA_LEN];
        let mut w = Writer(&mut b, 0);
        w.put(&self.spi.to_be_bytes());
        w.put(&self.encr.to_be_bytes());
        w.put(&self.key_bits.to_be_bytes());
        w.put(&self.integ.to_be_bytes());
        w.put(&[self.mode, 0]);
        b
    }

    /// (ENCR, key bits, INTEG, mode): what must equal the credential's parameters.
    pub fn algorithms(&self) -> (u16, u16, u16, u8) {
        (self.encr, self.key_bits, self.integ, self.mode)
    }
}

/// Copies into a fixed buffer without panicking (extra bytes are dropped, never reached).
struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn put(&mut self, src: &[u8]) {
        let end = self.1.saturating_add(src.len());
        if let Some(dst) = self.0.get_mut(self.1..end) {
            dst.copy_from_slice(src);
        }
        self.1 = end;
    }
}

pub fn decode_sa_untrusted(body: &[u8]) -> Result<ResumeSa, DecodeError> {
    if body.len() != SA_LEN {
        return Err(DecodeError("RESUME_SA body is not 12 bytes"));
    }
    let bad = DecodeError("RESUME_SA body is not 12 bytes");
    let sa = ResumeSa {
        spi: be_u32(body, 0).ok_or(bad)?,
        encr: be_u16(body, 4).ok_or(bad)?,
        key_bits: be_u16(body, 6).ok_or(bad)?,
        integ: be_u16(body, 8).ok_or(bad)?,
        mode: *body.get(10).ok_or(bad)?,
    };
    let reserved = *body.get(11).ok_or(bad)?;
    if reserved != 0 || !(sa.mode == 1 || sa.mode == 2) || sa.spi < MIN_ESP_SPI {
        return Err(DecodeError(
            "RESUME_SA has a reserved SPI, mode or non-zero reserved byte",
        ));
    }
    Ok(sa)
}

/// ID payload body (type, 3 reserved, data) to credential form (type byte + data).
pub fn decode_id_untrusted(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match body {
        [t, 0, 0, 0, data @ ..] if !data.is_empty() && data.len() <= ID_MAX => {
            let mut out = Vec::with_capacity(1 + data.len());
            out.push(*t);
            out.extend_from_slice(data);
            Ok(out)
        }
        _ => Err(DecodeError("bad ID payload")),
    }
}

/// Data lengths a KE payload of `method` may carry anywhere (the message parsers then
/// require the one their position allows); None for an unknown method.
fn ke_lengths(method: u16) -> Option<&'static [usize]> {
    match method {
        GROUP_CURVE25519 => Some(&[X25519_LEN]),
        KE_MLKEM768 => Some(&[KE_DIGEST_LEN, MLKEM768_CT_LEN, MLKEM768_EK_LEN]),
        _ => None,
    }
}

/// A KE payload body: (method, data) for a known method, reserved 0, data of a length
/// that method has.
pub fn decode_ke_untrusted(body: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    let bad = DecodeError("KE payload shorter than its method field");
    let method = be_u16(body, 0).ok_or(bad)?;
    let reserved = be_u16(body, 2).ok_or(bad)?;
    if reserved != 0 {
        return Err(DecodeError("KE payload reserved field is not zero"));
    }
    let lengths = ke_lengths(method).ok_or(DecodeError("KE payload method is not supported"))?;
    let data = body.get(4..).ok_or(bad)?;
    if !lengths.contains(&data.len()) {
        return Err(DecodeError(
            "KE payload data length is wrong for its method",
        ));
    }
    Ok((method, data))
}

/// A KE payload body: `u16 method | u16 0 | data`.
pub fn encode_ke(method: u16, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + data.len());
    b.extend_from_slice(&method.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(data);
    b
}

/// Where a run of KE payloads sits: the data length of (X25519, ML-KEM) there.
#[derive(Clone, Copy)]
enum KePlace {
    Msg1,
    Echo,
    Msg2,
}

impl KePlace {
    fn mlkem_len(self) -> usize {
        match self {
            KePlace::Msg1 => MLKEM768_EK_LEN,
            KePlace::Echo => KE_DIGEST_LEN,
            KePlace::Msg2 => MLKEM768_CT_LEN,
        }
    }
}

/// The KE payloads at chain positions `from..to`: known methods in ascending order (X25519
/// first, each at most once) with the length `place` requires.  Returns the X25519 share,
/// the ML-KEM data and the offset of the ML-KEM payload's generic header (0: none).
#[allow(clippy::type_complexity)]
fn kes_untrusted<'a>(
    data: &'a [u8],
    chain: &Chain,
    from: usize,
    to: usize,
    place: KePlace,
) -> Result<(Option<[u8; X25519_LEN]>, Option<&'a [u8]>, usize), DecodeError> {
    let mut x25519 = None;
    let mut mlkem = None;
    let mut at = 0;
    let mut last: Option<u16> = None;
    for i in from..to {
        let (method, d) = decode_ke_untrusted(body(data, chain, i)?)?;
        if last.is_some_and(|l| method <= l) {
            return Err(DecodeError("KE payloads duplicated or out of order"));
        }
        last = Some(method);
        if method == GROUP_CURVE25519 {
            x25519 = Some(d.try_into().map_err(|_| DecodeError("bad X25519 share"))?);
        } else {
            if d.len() != place.mlkem_len() {
                return Err(DecodeError("ML-KEM payload has the wrong length here"));
            }
            mlkem = Some(d);
            at = chain
                .payloads()
                .get(i)
                .map_or(0, |p| p.start.saturating_sub(PAYLOAD_HEADER_LEN));
        }
    }
    Ok((x25519, mlkem, at))
}

fn nonce_untrusted(body: &[u8]) -> Result<&[u8], DecodeError> {
    if (NONCE_MIN..=NONCE_MAX).contains(&body.len()) {
        Ok(body)
    } else {
        Err(DecodeError("nonce length out of range"))
    }
}

fn mac_untrusted(body: &[u8]) -> Result<&[u8; MAC_LEN], DecodeError> {
    body.try_into()
        .map_err(|_| DecodeError("RESUME_AUTH body is not 32 bytes"))
}

/// Hardened message 1 (a view into the datagram).  `mlkem`: the ML-KEM-768 encapsulation
/// key (inside RESUME_ECHO: its SHA-256); `mlkem_at`: the offset of that KE payload's
/// generic header when `raw` is not its own compact form (0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardenedInit<'a> {
    pub raw: &'a [u8],
    pub header: Header,
    pub handle: &'a [u8],
    pub sa: ResumeSa,
    pub nonce: &'a [u8],
    pub ke: Option<[u8; X25519_LEN]>,
    pub mlkem: Option<&'a [u8]>,
    pub mlkem_at: usize,
}

/// Hardened message 2; `mlkem`: the ML-KEM-768 ciphertext, at `mlkem_at` (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardenedResp<'a> {
    pub raw: &'a [u8],
    pub header: Header,
    pub sa: ResumeSa,
    pub nonce: &'a [u8],
    pub ke: Option<[u8; X25519_LEN]>,
    pub mlkem: Option<&'a [u8]>,
    pub mlkem_at: usize,
    pub mac: &'a [u8; MAC_LEN],
}

/// Hardened message 3: the echoed message 1 and the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardenedAuth<'a> {
    pub raw: &'a [u8],
    pub header: Header,
    pub init: HardenedInit<'a>,
    pub mac: &'a [u8; MAC_LEN],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperInit<'a> {
    pub raw: &'a [u8],
    pub header: Header,
    pub id_i: Vec<u8>,
    pub nonce: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperResp<'a> {
    pub raw: &'a [u8],
    pub header: Header,
    pub id_r: Vec<u8>,
    pub nonce: &'a [u8],
    pub mac: &'a [u8; MAC_LEN],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperAuth<'a> {
    pub raw: &'a [u8],
    pub header: Header,
    pub id_i: Vec<u8>,
    pub mac: &'a [u8; MAC_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<'a> {
    pub raw: &'a [u8],
    pub header: Header,
}

/// What a responder can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    HardenedInit(HardenedInit<'a>),
    HardenedAuth(HardenedAuth<'a>),
    PaperInit(PaperInit<'a>),
    PaperAuth(PaperAuth<'a>),
}

impl Request<'_> {
    pub fn header(&self) -> &Header {
        match self {
            Request::HardenedInit(m) => &m.header,
            Request::HardenedAuth(m) => &m.header,
            Request::PaperInit(m) => &m.header,
            Request::PaperAuth(m) => &m.header,
        }
    }
}

/// What an initiator can receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    HardenedResp(HardenedResp<'a>),
    PaperResp(PaperResp<'a>),
    Nack(Nack<'a>),
}

impl Response<'_> {
    pub fn header(&self) -> &Header {
        match self {
            Response::HardenedResp(m) => &m.header,
            Response::PaperResp(m) => &m.header,
            Response::Nack(m) => &m.header,
        }
    }
}

const H1: [u8; 3] = [PT_RESUME_HANDLE, PT_RESUME_SA, PT_NONCE];
const H1_KE: [u8; 4] = [PT_RESUME_HANDLE, PT_RESUME_SA, PT_NONCE, PT_KE];
const H1_KE2: [u8; 5] = [PT_RESUME_HANDLE, PT_RESUME_SA, PT_NONCE, PT_KE, PT_KE];
const H2: [u8; 3] = [PT_RESUME_SA, PT_NONCE, PT_RESUME_AUTH];
const H2_KE: [u8; 4] = [PT_RESUME_SA, PT_NONCE, PT_KE, PT_RESUME_AUTH];
const H2_KE2: [u8; 5] = [PT_RESUME_SA, PT_NONCE, PT_KE, PT_KE, PT_RESUME_AUTH];
const H3: [u8; 2] = [PT_RESUME_ECHO, PT_RESUME_AUTH];
const P1: [u8; 2] = [PT_IDI, PT_NONCE];
const P2: [u8; 3] = [PT_IDR, PT_NONCE, PT_RESUME_AUTH];
const P3: [u8; 2] = [PT_IDI, PT_RESUME_AUTH];

/// Body `i` of the chain (the chain was checked against a type list of at least i+1).
fn body<'a>(data: &'a [u8], chain: &Chain, i: usize) -> Result<&'a [u8], DecodeError> {
    chain
        .payloads()
        .get(i)
        .and_then(|p: &PayloadRef| data.get(p.start..p.end))
        .ok_or(DecodeError("missing payload"))
}

fn hardened_init<'a>(
    data: &'a [u8],
    header: Header,
    chain: &Chain,
    nested: bool,
) -> Result<HardenedInit<'a>, DecodeError> {
    let handle = body(data, chain, 0)?;
    if !(HANDLE_MIN..=HANDLE_MAX).contains(&handle.len()) {
        return Err(DecodeError("handle length out of range"));
    }
    let sa = decode_sa_untrusted(body(data, chain, 1)?)?;
    let nonce = nonce_untrusted(body(data, chain, 2)?)?;
    let place = if nested { KePlace::Echo } else { KePlace::Msg1 };
    let (ke, mlkem, at) = kes_untrusted(data, chain, 3, chain.payloads().len(), place)?;
    Ok(HardenedInit {
        raw: data,
        header,
        handle,
        sa,
        nonce,
        ke,
        mlkem,
        mlkem_at: if nested { 0 } else { at },
    })
}

fn parse_request(data: &[u8], nested: bool) -> Result<Request<'_>, DecodeError> {
    let (h, chain) = decode_chain_untrusted(data)?;
    if h.exchange_type != EXCHANGE_IKE_RESUME {
        return Err(DecodeError("exchange type is not IKE_RESUME"));
    }
    if h.flags & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_INITIATOR {
        return Err(DecodeError("not a request from an initiator"));
    }
    if h.spi_i == ZERO_SPI {
        return Err(DecodeError("zero initiator SPI"));
    }
    if h.message_id == 0 {
        if h.spi_r != ZERO_SPI {
            return Err(DecodeError("message 1 with a responder SPI"));
        }
        if chain.types_are(&H1) || chain.types_are(&H1_KE) || chain.types_are(&H1_KE2) {
            return Ok(Request::HardenedInit(hardened_init(
                data, h, &chain, nested,
            )?));
        }
        if chain.types_are(&P1) && !nested {
            return Ok(Request::PaperInit(PaperInit {
                raw: data,
                header: h,
                id_i: decode_id_untrusted(body(data, &chain, 0)?)?,
                nonce: nonce_untrusted(body(data, &chain, 1)?)?,
            }));
        }
    } else if h.message_id == 1 && !nested {
        if h.spi_r == ZERO_SPI {
            return Err(DecodeError("message 3 without a responder SPI"));
        }
        if chain.types_are(&H3) {
            let inner = match parse_request(body(data, &chain, 0)?, true)? {
                Request::HardenedInit(i) if i.header.spi_i == h.spi_i => i,
                _ => {
                    return Err(DecodeError(
                        "RESUME_ECHO does not hold this initiator's message 1",
                    ))
                }
            };
            return Ok(Request::HardenedAuth(HardenedAuth {
                raw: data,
                header: h,
                init: inner,
                mac: mac_untrusted(body(data, &chain, 1)?)?,
            }));
        }
        if chain.types_are(&P3) {
            return Ok(Request::PaperAuth(PaperAuth {
                raw: data,
                header: h,
                id_i: decode_id_untrusted(body(data, &chain, 0)?)?,
                mac: mac_untrusted(body(data, &chain, 1)?)?,
            }));
        }
    }
    Err(DecodeError("unexpected payloads for this message id"))
}

/// Message 1 or 3 (either mode) as the responder receives it.
pub fn parse_request_untrusted(data: &[u8]) -> Result<Request<'_>, DecodeError> {
    parse_request(data, false)
}

/// Message 2 (either mode) or a NACK as the initiator receives it.
pub fn parse_response_untrusted(data: &[u8]) -> Result<Response<'_>, DecodeError> {
    let (h, chain) = decode_chain_untrusted(data)?;
    if h.exchange_type != EXCHANGE_IKE_RESUME {
        return Err(DecodeError("exchange type is not IKE_RESUME"));
    }
    if h.flags & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_RESPONSE {
        return Err(DecodeError("not a response from a responder"));
    }
    if chain.types_are(&[PT_NOTIFY]) && (h.message_id == 0 || h.message_id == 1) {
        if body(data, &chain, 0)? != NACK_BODY {
            return Err(DecodeError("notify is not RESUMPTION_REFUSED"));
        }
        return Ok(Response::Nack(Nack {
            raw: data,
            header: h,
        }));
    }
    if h.message_id == 0 && h.spi_r != ZERO_SPI {
        if chain.types_are(&H2) || chain.types_are(&H2_KE) || chain.types_are(&H2_KE2) {
            let last = chain.payloads().len().saturating_sub(1);
            let sa = decode_sa_untrusted(body(data, &chain, 0)?)?;
            let nonce = nonce_untrusted(body(data, &chain, 1)?)?;
            let (ke, mlkem, mlkem_at) = kes_untrusted(data, &chain, 2, last, KePlace::Msg2)?;
            return Ok(Response::HardenedResp(HardenedResp {
                raw: data,
                header: h,
                sa,
                nonce,
                ke,
                mlkem,
                mlkem_at,
                mac: mac_untrusted(body(data, &chain, last)?)?,
            }));
        }
        if chain.types_are(&P2) {
            return Ok(Response::PaperResp(PaperResp {
                raw: data,
                header: h,
                id_r: decode_id_untrusted(body(data, &chain, 0)?)?,
                nonce: nonce_untrusted(body(data, &chain, 1)?)?,
                mac: mac_untrusted(body(data, &chain, 2)?)?,
            }));
        }
    }
    Err(DecodeError("unexpected payloads for this message id"))
}

// --- builders (trusted inputs; the *_prefix ones stop before the 32-byte MAC value) ----------

/// Message 1; `mlkem` is the ML-KEM-768 encapsulation key (or its SHA-256: the compact
/// form).
pub fn build_hardened_init(
    spi_i: &[u8; 8],
    handle: &[u8],
    sa: &ResumeSa,
    nonce: &[u8],
    ke: Option<&[u8; X25519_LEN]>,
    mlkem: Option<&[u8]>,
) -> Result<Vec<u8>, EncodeError> {
    let sa_b = sa.encode();
    let ke_b = ke.map(|k| encode_ke(GROUP_CURVE25519, k));
    let ml_b = mlkem.map(|k| encode_ke(KE_MLKEM768, k));
    let mut payloads: Vec<(u8, &[u8])> = vec![
        (PT_RESUME_HANDLE, handle),
        (PT_RESUME_SA, &sa_b),
        (PT_NONCE, nonce),
    ];
    for k in [&ke_b, &ml_b].into_iter().flatten() {
        payloads.push((PT_KE, k));
    }
    encode_message(
        spi_i,
        &ZERO_SPI,
        FLAG_INITIATOR,
        0,
        &payloads,
        EXCHANGE_IKE_RESUME,
        0,
    )
}

/// Message 2 up to (not including) the MAC value; `mlkem` is the ML-KEM-768 ciphertext
/// (or its SHA-256: the compact form).
pub fn build_hardened_resp_prefix(
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
    sa: &ResumeSa,
    nonce: &[u8],
    ke: Option<&[u8; X25519_LEN]>,
    mlkem: Option<&[u8]>,
) -> Result<Vec<u8>, EncodeError> {
    let sa_b = sa.encode();
    let ke_b = ke.map(|k| encode_ke(GROUP_CURVE25519, k));
    let ml_b = mlkem.map(|k| encode_ke(KE_MLKEM768, k));
    let mut payloads: Vec<(u8, &[u8])> = vec![(PT_RESUME_SA, &sa_b), (PT_NONCE, nonce)];
    for k in [&ke_b, &ml_b].into_iter().flatten() {
        payloads.push((PT_KE, k));
    }
    payloads.push((PT_RESUME_AUTH, &[]));
    encode_message(
        spi_i,
        spi_r,
        FLAG_RESPONSE,
        0,
        &payloads,
        EXCHANGE_IKE_RESUME,
        MAC_LEN,
    )
}

/// Message 3 up to (not including) the MAC value; `msg1` is compact(message 1).
pub fn build_hardened_auth_prefix(
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
    msg1: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    encode_message(
        spi_i,
        spi_r,
        FLAG_INITIATOR,
        1,
        &[(PT_RESUME_ECHO, msg1), (PT_RESUME_AUTH, &[])],
        EXCHANGE_IKE_RESUME,
        MAC_LEN,
    )
}

/// The one NACK: a function of the request's header only, never of the failure reason.
pub fn build_nack(spi_i: &[u8; 8], spi_r: &[u8; 8], message_id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    out.extend_from_slice(spi_i);
    out.extend_from_slice(spi_r);
    out.extend_from_slice(&[
        PT_NOTIFY,
        crate::wire::IKE_VERSION,
        EXCHANGE_IKE_RESUME,
        FLAG_RESPONSE,
    ]);
    out.extend_from_slice(&message_id.to_be_bytes());
    out.extend_from_slice(&36u32.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 8]);
    out.extend_from_slice(&NACK_BODY);
    out
}

/// The NACK answering `header` (zero SPIr for message 1, the request's SPIr for message 3).
pub fn nack_for(header: &Header) -> Vec<u8> {
    let spi_r = if header.message_id == 0 {
        ZERO_SPI
    } else {
        header.spi_r
    };
    build_nack(&header.spi_i, &spi_r, header.message_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_equals_the_generic_framer() {
        let spi_i = [1u8; 8];
        let spi_r = [2u8; 8];
        for mid in [0u32, 1] {
            let generic = encode_message(
                &spi_i,
                &spi_r,
                FLAG_RESPONSE,
                mid,
                &[(PT_NOTIFY, &NACK_BODY)],
                EXCHANGE_IKE_RESUME,
                0,
            )
            .unwrap();
            assert_eq!(build_nack(&spi_i, &spi_r, mid), generic);
            assert_eq!(
                u16::from_be_bytes([NACK_BODY[2], NACK_BODY[3]]),
                NOTIFY_RESUMPTION_REFUSED
            );
        }
    }

    #[test]
    fn built_messages_parse_back() {
        let sa = ResumeSa {
            spi: 0x1234_5678,
            encr: 20,
            key_bits: 256,
            integ: 0,
            mode: 2,
        };
        let m1 =
            build_hardened_init(&[9; 8], &[7; 16], &sa, &[5; 32], Some(&[3; 32]), None).unwrap();
        match parse_request_untrusted(&m1).unwrap() {
            Request::HardenedInit(i) => {
                assert_eq!(i.handle, &[7; 16]);
                assert_eq!(i.sa, sa);
                assert_eq!(i.ke, Some([3; 32]));
            }
            other => panic!("{other:?}"),
        }
        let mut m3 = build_hardened_auth_prefix(&[9; 8], &[1; 8], &m1).unwrap();
        m3.extend_from_slice(&[0xAA; 32]);
        assert!(matches!(
            parse_request_untrusted(&m3),
            Ok(Request::HardenedAuth(_))
        ));
        let mut m2 =
            build_hardened_resp_prefix(&[9; 8], &[1; 8], &sa, &[4; 32], None, None).unwrap();
        m2.extend_from_slice(&[0xBB; 32]);
        assert!(matches!(
            parse_response_untrusted(&m2),
            Ok(Response::HardenedResp(_))
        ));
    }

    #[test]
    fn every_truncation_is_a_decode_error() {
        let sa = ResumeSa {
            spi: 300,
            encr: 12,
            key_bits: 128,
            integ: 12,
            mode: 1,
        };
        let m1 = build_hardened_init(
            &[9; 8],
            &[7; 16],
            &sa,
            &[5; 32],
            Some(&[1; 32]),
            Some(&[2; MLKEM768_EK_LEN]),
        )
        .unwrap();
        assert!(matches!(
            parse_request_untrusted(&m1),
            Ok(Request::HardenedInit(HardenedInit { mlkem: Some(_), .. }))
        ));
        for n in 0..m1.len() {
            assert!(parse_request_untrusted(&m1[..n]).is_err());
            assert!(parse_response_untrusted(&m1[..n]).is_err());
        }
    }
}
