//! IKEv2 framing of the resumption exchange (RFC 7296 3.1 header, 3.2 payload headers).
//!
//! Mirrors `resume/wire.py`.  Every function reading network bytes ends in `_untrusted`,
//! never panics (no indexing that is not bounds-checked first, no arithmetic that can
//! overflow on `usize`) and returns only [`DecodeError`].  Clippy enforces the first part:
//! indexing, slicing, `unwrap`, `expect` and `panic!` are denied in this module.

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::fmt;

/// Private-use exchange type (RFC 7296 3.1: 240-255).
pub const EXCHANGE_IKE_RESUME: u8 = 240;
/// IKE major version 2, minor 0.
pub const IKE_VERSION: u8 = 0x20;
pub const FLAG_INITIATOR: u8 = 0x08;
pub const FLAG_RESPONSE: u8 = 0x20;

pub const PT_NONE: u8 = 0;
pub const PT_KE: u8 = 34;
pub const PT_IDI: u8 = 35;
pub const PT_IDR: u8 = 36;
pub const PT_NONCE: u8 = 40;
pub const PT_NOTIFY: u8 = 41;
pub const PT_RESUME_HANDLE: u8 = 240;
pub const PT_RESUME_SA: u8 = 241;
pub const PT_RESUME_AUTH: u8 = 242;
pub const PT_RESUME_ECHO: u8 = 243;

/// Private-use error notify: "resumption refused, run a full IKE" (identical for every reason).
pub const NOTIFY_RESUMPTION_REFUSED: u16 = 8240;

pub const HEADER_LEN: usize = 28;
pub const PAYLOAD_HEADER_LEN: usize = 4;
pub const MAX_PAYLOADS: usize = 8;
pub const MAX_MESSAGE_LEN: usize = 2048;
/// NAT-T framing on UDP 4500 (RFC 3948 2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0, 0, 0, 0];

/// The one error of every `_untrusted` function: the datagram is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A trusted builder was handed a value that cannot be framed (e.g. a 70 KB payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeError(pub &'static str);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for EncodeError {}

/// The fixed IKEv2 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: [u8; 8],
    pub spi_r: [u8; 8],
    pub next_payload: u8,
    pub version: u8,
    pub exchange_type: u8,
    pub flags: u8,
    pub message_id: u32,
    pub length: u32,
}

/// Big-endian readers that return `None` instead of panicking past the end.
pub(crate) fn be_u16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes(b.try_into().ok()?))
}

pub(crate) fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

pub(crate) fn array8(data: &[u8], at: usize) -> Option<[u8; 8]> {
    data.get(at..at.checked_add(8)?)?.try_into().ok()
}

fn header_untrusted(data: &[u8]) -> Result<Header, DecodeError> {
    let n = data.len();
    if n < HEADER_LEN {
        return Err(DecodeError("datagram is shorter than an IKE header"));
    }
    if n > MAX_MESSAGE_LEN {
        return Err(DecodeError("datagram exceeds 2048 bytes"));
    }
    let h = peek_header_untrusted(data)?;
    if h.version >> 4 != 2 {
        return Err(DecodeError("IKE major version is not 2"));
    }
    if usize::try_from(h.length).ok() != Some(n) {
        return Err(DecodeError(
            "header length differs from the datagram length",
        ));
    }
    Ok(h)
}

/// The 28-byte header's fields, for demultiplexing and admission before any other work.
/// Checks only that a header is there (the caller judges version, exchange type, flags and
/// message ID); [`decode_chain_untrusted`] checks all of them and the lengths.
pub fn peek_header_untrusted(data: &[u8]) -> Result<Header, DecodeError> {
    let bad = DecodeError("datagram is shorter than an IKE header");
    Ok(Header {
        spi_i: array8(data, 0).ok_or(bad)?,
        spi_r: array8(data, 8).ok_or(bad)?,
        next_payload: *data.get(16).ok_or(bad)?,
        version: *data.get(17).ok_or(bad)?,
        exchange_type: *data.get(18).ok_or(bad)?,
        flags: *data.get(19).ok_or(bad)?,
        message_id: be_u32(data, 20).ok_or(bad)?,
        length: be_u32(data, 24).ok_or(bad)?,
    })
}

/// The body of the first payload -- a message 1's RESUME_HANDLE -- cut at the datagram's
/// end, from the generic payload header alone (admission's key for recent store misses).
pub fn peek_handle_untrusted(data: &[u8]) -> Result<&[u8], DecodeError> {
    let plen = be_u16(data, HEADER_LEN + 2).ok_or(DecodeError("no first payload"))?;
    let start = HEADER_LEN + PAYLOAD_HEADER_LEN;
    let end = (HEADER_LEN + usize::from(plen)).min(data.len());
    Ok(data.get(start..end).unwrap_or(&[]))
}

/// One payload of a chain: its type (from the previous Next Payload), C bit and body range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadRef {
    pub ptype: u8,
    pub critical: bool,
    pub start: usize,
    pub end: usize,
}

/// The payload chain of a message, without allocation (at most [`MAX_PAYLOADS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    len: usize,
    items: [PayloadRef; MAX_PAYLOADS],
}

impl Chain {
    pub fn payloads(&self) -> &[PayloadRef] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// True when the payload types, in order, are exactly `expected`.
    pub fn types_are(&self, expected: &[u8]) -> bool {
        let p = self.payloads();
        p.len() == expected.len() && p.iter().zip(expected).all(|(a, b)| a.ptype == *b)
    }
}

/// Header plus the generic payload chain, bodies uninterpreted (`decode_chain_untrusted`):
/// strict lengths, the chain ends exactly at the end of the datagram, at most 8 payloads.
pub fn decode_chain_untrusted(data: &[u8]) -> Result<(Header, Chain), DecodeError> {
    let header = header_untrusted(data)?;
    let n = data.len();
    let mut chain = Chain {
        len: 0,
        items: [PayloadRef::default(); MAX_PAYLOADS],
    };
    let mut off = HEADER_LEN;
    let mut np = header.next_payload;
    while np != PT_NONE {
        if chain.len >= MAX_PAYLOADS {
            return Err(DecodeError("too many payloads"));
        }
        let body_start = off + PAYLOAD_HEADER_LEN; // off <= n <= 2048: no overflow
        if body_start > n {
            return Err(DecodeError("payload header runs past the end"));
        }
        let bad = DecodeError("payload header runs past the end");
        let nxt = *data.get(off).ok_or(bad)?;
        let cflags = *data.get(off + 1).ok_or(bad)?;
        let plen = usize::from(be_u16(data, off + 2).ok_or(bad)?);
        let end = off + plen;
        if plen < PAYLOAD_HEADER_LEN || end > n {
            return Err(DecodeError("payload length out of bounds"));
        }
        if let Some(slot) = chain.items.get_mut(chain.len) {
            *slot = PayloadRef {
                ptype: np,
                critical: cflags & 0x80 != 0,
                start: body_start,
                end,
            };
        }
        chain.len += 1;
        np = nxt;
        off = end;
    }
    if off != n {
        return Err(DecodeError("bytes after the last payload"));
    }
    Ok((header, chain))
}

/// A decoded message with owned payload bodies (`decode_message_untrusted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    /// (type, critical, body)
    pub payloads: Vec<(u8, bool, Vec<u8>)>,
}

pub fn decode_message_untrusted(data: &[u8]) -> Result<Message, DecodeError> {
    let (header, chain) = decode_chain_untrusted(data)?;
    let payloads = chain
        .payloads()
        .iter()
        .map(|p| {
            let body = data.get(p.start..p.end).unwrap_or(&[]).to_vec();
            (p.ptype, p.critical, body)
        })
        .collect();
    Ok(Message { header, payloads })
}

/// Frame `payloads` (type, body) into a message; the C bit is never set.  `trailer` bytes
/// are counted in the header's and the last payload's length but not written: the caller
/// appends them (a MAC computed over the returned prefix).
pub fn encode_message(
    spi_i: &[u8; 8],
    spi_r: &[u8; 8],
    flags: u8,
    message_id: u32,
    payloads: &[(u8, &[u8])],
    exchange_type: u8,
    trailer: usize,
) -> Result<Vec<u8>, EncodeError> {
    if payloads.is_empty() && trailer != 0 {
        return Err(EncodeError("a trailer belongs to the last payload"));
    }
    let mut total = HEADER_LEN + trailer;
    for (_, body) in payloads {
        total = total
            .checked_add(PAYLOAD_HEADER_LEN + body.len())
            .ok_or(EncodeError("message too long"))?;
    }
    let total32 = u32::try_from(total).map_err(|_| EncodeError("message too long"))?;
    let mut out = Vec::with_capacity(total - trailer);
    out.extend_from_slice(spi_i);
    out.extend_from_slice(spi_r);
    out.push(payloads.first().map_or(PT_NONE, |p| p.0));
    out.push(IKE_VERSION);
    out.push(exchange_type);
    out.push(flags);
    out.extend_from_slice(&message_id.to_be_bytes());
    out.extend_from_slice(&total32.to_be_bytes());
    for (i, (_, body)) in payloads.iter().enumerate() {
        let nxt = payloads.get(i + 1).map_or(PT_NONE, |p| p.0);
        let extra = if nxt == PT_NONE { trailer } else { 0 };
        let plen = u16::try_from(PAYLOAD_HEADER_LEN + body.len() + extra)
            .map_err(|_| EncodeError("payload too long"))?;
        out.push(nxt);
        out.push(0);
        out.extend_from_slice(&plen.to_be_bytes());
        out.extend_from_slice(body);
    }
    Ok(out)
}

/// Frame an IKE message for UDP 4500 (RFC 3948).
pub fn add_non_esp_marker(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 4);
    out.extend_from_slice(&NON_ESP_MARKER);
    out.extend_from_slice(data);
    out
}

/// The IKE message inside a UDP 4500 datagram; ESP (non-zero SPI) is a DecodeError.
pub fn strip_non_esp_marker_untrusted(data: &[u8]) -> Result<&[u8], DecodeError> {
    match data.split_first_chunk::<4>() {
        Some((marker, rest)) if *marker == NON_ESP_MARKER => Ok(rest),
        _ => Err(DecodeError(
            "not an IKE message on the NAT-T port (no non-ESP marker)",
        )),
    }
}
