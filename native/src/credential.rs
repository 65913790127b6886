//! The cached credential and the SA parameters it carries (mirrors `resume/credential.py`
//! and `resume/sa.py`), as plain Rust data: the engines never see a Python object, so a
//! later Rust store (rusqlite) can build these from rows directly.
//!
//! Invariants are checked once, at construction ([`Credential::new`], [`SaParams::new`]),
//! so the key schedule never meets a field it cannot length-prefix.

use std::net::IpAddr;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::keyschedule::{sha256, L_PARAMS};

/// A constructor was handed values the protocol cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidValue(pub String);

impl core::fmt::Display for InvalidValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidValue {}

fn invalid<T>(msg: impl Into<String>) -> Result<T, InvalidValue> {
    Err(InvalidValue(msg.into()))
}

pub const ENCR_AES_CBC: u16 = 12;
pub const ENCR_AES_GCM_16: u16 = 20;
pub const ENCR_CHACHA20_POLY1305: u16 = 28;

/// One traffic selector; the address strings are kept as given (exact round trip to the
/// Python objects), their packed form is what the parameters digest binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelector {
    pub start_addr: String,
    pub end_addr: String,
    pub protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    start: IpAddr,
    end: IpAddr,
}

/// Parse an IP literal as Python's `ipaddress.ip_address` does for our purposes (an IPv6
/// scope suffix `%eth0` is ignored for the packed form).
pub fn parse_ip(s: &str) -> Result<IpAddr, InvalidValue> {
    let bare = s.split_once('%').map_or(s, |(a, _)| a);
    match bare.parse::<IpAddr>() {
        Ok(ip) if bare.len() == s.len() || ip.is_ipv6() => Ok(ip),
        _ => invalid(format!("{s:?} is not an IP address")),
    }
}

impl TrafficSelector {
    pub fn new(
        start_addr: &str,
        end_addr: &str,
        protocol: u8,
        start_port: u16,
        end_port: u16,
    ) -> Result<Self, InvalidValue> {
        let start = parse_ip(start_addr)?;
        let end = parse_ip(end_addr)?;
        if start.is_ipv4() != end.is_ipv4() || start > end {
            return invalid(format!(
                "bad traffic selector range {start_addr}-{end_addr}"
            ));
        }
        if start_port > end_port {
            return invalid("bad traffic selector ports");
        }
        Ok(TrafficSelector {
            start_addr: start_addr.to_owned(),
            end_addr: end_addr.to_owned(),
            protocol,
            start_port,
            end_port,
            start,
            end,
        })
    }

    /// `u8(7|8) | u8(proto) | u16(start port) | u16(end port) | start | end`.
    fn write_bytes(&self, out: &mut Vec<u8>) {
        out.push(if self.start.is_ipv4() { 7 } else { 8 });
        out.push(self.protocol);
        out.extend_from_slice(&self.start_port.to_be_bytes());
        out.extend_from_slice(&self.end_port.to_be_bytes());
        for ip in [&self.start, &self.end] {
            match ip {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
    }
}

/// What the last full IKE negotiated (no keys), as `resume.sa.SAParams`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaParams {
    /// 1 transport, 2 tunnel
    pub mode: u8,
    pub encr: u16,
    pub encr_key_bits: u16,
    pub integ: u16,
    pub initiator_addr: String,
    pub responder_addr: String,
    pub tsi: Vec<TrafficSelector>,
    pub tsr: Vec<TrafficSelector>,
    pub natt_initiator_port: Option<u16>,
    pub natt_responder_port: Option<u16>,
    pub replay_window: u32,
    digest: [u8; 32],
    encr_key_len: usize,
    keymat_len: usize,
}

fn integ_key_len(integ: u16) -> Option<usize> {
    match integ {
        0 => Some(0),
        12 => Some(32),
        13 => Some(48),
        14 => Some(64),
        _ => None,
    }
}

impl SaParams {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mode: u8,
        encr: u16,
        encr_key_bits: u16,
        integ: u16,
        initiator_addr: &str,
        responder_addr: &str,
        tsi: Vec<TrafficSelector>,
        tsr: Vec<TrafficSelector>,
        natt_initiator_port: Option<u16>,
        natt_responder_port: Option<u16>,
        replay_window: u32,
    ) -> Result<Self, InvalidValue> {
        if mode != 1 && mode != 2 {
            return invalid("mode must be 1 (transport) or 2 (tunnel)");
        }
        let aead = match encr {
            ENCR_AES_CBC => false,
            ENCR_AES_GCM_16 | ENCR_CHACHA20_POLY1305 => true,
            _ => return invalid(format!("unsupported ENCR transform {encr}")),
        };
        if encr == ENCR_CHACHA20_POLY1305 && encr_key_bits != 256 {
            return invalid("ChaCha20-Poly1305 takes a 256-bit key");
        }
        if encr != ENCR_CHACHA20_POLY1305 && ![128, 192, 256].contains(&encr_key_bits) {
            return invalid(format!("AES key size {encr_key_bits} not supported"));
        }
        let Some(ilen) = integ_key_len(integ) else {
            return invalid(format!("unsupported INTEG transform {integ}"));
        };
        if aead != (integ == 0) {
            return invalid("AEAD ciphers take no integrity algorithm; CBC needs one");
        }
        parse_ip(initiator_addr)?;
        parse_ip(responder_addr)?;
        if natt_initiator_port.is_some() != natt_responder_port.is_some() {
            return invalid("NAT-T needs both ports or neither");
        }
        let (Ok(ni), Ok(nr)) = (u8::try_from(tsi.len()), u8::try_from(tsr.len())) else {
            return invalid("at most 255 traffic selectors per side");
        };
        let encr_key_len = usize::from(encr_key_bits / 8) + if aead { 4 } else { 0 };
        let mut p = SaParams {
            mode,
            encr,
            encr_key_bits,
            integ,
            initiator_addr: initiator_addr.to_owned(),
            responder_addr: responder_addr.to_owned(),
            tsi,
            tsr,
            natt_initiator_port,
            natt_responder_port,
            replay_window,
            digest: [0; 32],
            encr_key_len,
            keymat_len: encr_key_len + ilen,
        };
        let pb = p.params_bytes_with(ni, nr);
        p.digest = sha256(&[L_PARAMS, &pb]);
        Ok(p)
    }

    fn params_bytes_with(&self, ni: u8, nr: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 40 * (self.tsi.len() + self.tsr.len()));
        out.push(self.mode);
        out.extend_from_slice(&self.encr.to_be_bytes());
        out.extend_from_slice(&self.encr_key_bits.to_be_bytes());
        out.extend_from_slice(&self.integ.to_be_bytes());
        out.push(ni);
        for t in &self.tsi {
            t.write_bytes(&mut out);
        }
        out.push(nr);
        for t in &self.tsr {
            t.write_bytes(&mut out);
        }
        out
    }

    /// Canonical encoding of what both peers must agree on (specs 5.1).
    pub fn params_bytes(&self) -> Vec<u8> {
        let ni = u8::try_from(self.tsi.len()).unwrap_or(u8::MAX);
        let nr = u8::try_from(self.tsr.len()).unwrap_or(u8::MAX);
        self.params_bytes_with(ni, nr)
    }

    /// `SHA-256("ikeresume v1 params" | params_bytes)`, computed once.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Encryption key bytes, salt included.
    pub fn encr_key_len(&self) -> usize {
        self.encr_key_len
    }

    /// KEYMAT bytes of one direction.
    pub fn keymat_len(&self) -> usize {
        self.keymat_len
    }

    /// (ENCR, key bits, INTEG, mode) as RESUME_SA carries them.
    pub fn wire(&self) -> (u16, u16, u16, u8) {
        (self.encr, self.encr_key_bits, self.integ, self.mode)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolMode {
    Hardened,
    /// Recognised so that a paper credential handed to the native engine is refused the
    /// same way the Python core refuses it; paper mode itself stays in Python.
    Paper,
}

/// How a credential's secret chain began and what its resumptions added (mirrors
/// `resume.credential.Lineage`; spec 12.3).  Never an input of the key schedule: what a
/// `require_pq_lineage` policy judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lineage {
    /// A full IKE with only (EC)DH.
    Classical,
    /// ML-KEM in the full IKE.
    HybridPq,
    /// A postquantum preshared key (RFC 8784 / RFC 9867).
    Ppk,
    /// A chain that was not PQ into which a resumption mixed an ML-KEM secret.
    PqResumed,
    #[default]
    Unknown,
}

impl Lineage {
    pub const ALL: [Lineage; 5] = [
        Lineage::Classical,
        Lineage::HybridPq,
        Lineage::Ppk,
        Lineage::PqResumed,
        Lineage::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Lineage::Classical => "classical",
            Lineage::HybridPq => "hybrid-pq",
            Lineage::Ppk => "ppk",
            Lineage::PqResumed => "pq-resumed",
            Lineage::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<Lineage> {
        Lineage::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The chains `require_pq_lineage` accepts.
    pub fn is_pq(self) -> bool {
        matches!(self, Lineage::HybridPq | Lineage::Ppk | Lineage::PqResumed)
    }

    /// The successor's lineage: kept by a symmetric ratchet; a run that mixed ML-KEM turns
    /// a chain that was not PQ into `PqResumed`.
    pub fn after_run(self, mlkem: bool) -> Lineage {
        if mlkem && !self.is_pq() {
            Lineage::PqResumed
        } else {
            self
        }
    }
}

/// Kernel SA lifetimes (XFRM soft/hard limits); `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetimes {
    pub soft_seconds: Option<u64>,
    pub hard_seconds: Option<u64>,
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

/// One generation of a cached resumption credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    mode: ProtocolMode,
    handle: Vec<u8>,
    generation: u32,
    secret: Zeroizing<Vec<u8>>,
    id_i: Vec<u8>,
    id_r: Vec<u8>,
    params: Arc<SaParams>,
    lineage: Lineage,
}

impl core::fmt::Debug for Credential {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Credential(gen={}, handle={:02x?}, <secret>)",
            self.generation, self.handle
        )
    }
}

impl Credential {
    pub fn new(
        mode: ProtocolMode,
        handle: Vec<u8>,
        generation: u32,
        secret: Vec<u8>,
        id_i: Vec<u8>,
        id_r: Vec<u8>,
        params: Arc<SaParams>,
    ) -> Result<Self, InvalidValue> {
        let secret = Zeroizing::new(secret);
        for (name, v) in [("handle", &handle), ("id_i", &id_i), ("id_r", &id_r)] {
            if v.len() > 0xFFFF {
                return invalid(format!("{name} longer than 65535 bytes"));
            }
        }
        Ok(Credential {
            mode,
            handle,
            generation,
            secret,
            id_i,
            id_r,
            params,
            lineage: Lineage::Unknown,
        })
    }

    /// The same credential with another lineage.
    pub fn with_lineage(mut self, lineage: Lineage) -> Self {
        self.lineage = lineage;
        self
    }

    pub fn lineage(&self) -> Lineage {
        self.lineage
    }

    pub fn mode(&self) -> ProtocolMode {
        self.mode
    }
    pub fn handle(&self) -> &[u8] {
        &self.handle
    }
    pub fn generation(&self) -> u32 {
        self.generation
    }
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
    pub fn id_i(&self) -> &[u8] {
        &self.id_i
    }
    pub fn id_r(&self) -> &[u8] {
        &self.id_r
    }
    pub fn params(&self) -> &Arc<SaParams> {
        &self.params
    }

    /// Generation g+1 (None at u32::MAX: the chain must restart with a full IKE); `mlkem`:
    /// the run mixed an ML-KEM secret (the lineage advances).
    pub fn successor(&self, secret: &[u8; 32], handle: &[u8], mlkem: bool) -> Option<Credential> {
        Some(Credential {
            mode: ProtocolMode::Hardened,
            handle: handle.to_vec(),
            generation: self.generation.checked_add(1)?,
            secret: Zeroizing::new(secret.to_vec()),
            id_i: self.id_i.clone(),
            id_r: self.id_r.clone(),
            params: Arc::clone(&self.params),
            lineage: self.lineage.after_run(mlkem),
        })
    }
}
