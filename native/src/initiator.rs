//! The hardened-mode initiator: one sans-I/O engine per resumption attempt (mirrors
//! `resume/initiator.py`).  Sends message 1, retransmits it with exponential backoff, on a
//! valid message 2 sends message 3 and reports completion.  A NACK is an unauthenticated
//! hint: it only makes the attempt give up, or retry once with the previous generation.
//!
//! Draw order per attempt: IKE SPI (8), N_I (32), inbound ESP SPI (4), X25519 key (32),
//! ML-KEM-768 seed (64; with the system's generator aws-lc makes the key pair itself).

use std::collections::VecDeque;

use zeroize::Zeroizing;

use crate::credential::{Credential, Lifetimes, ProtocolMode};
use crate::events::{ke_mode, Completion, InitiatorEvent, LocalError, SaPair};
use crate::keyschedule::{
    compact_at, compact_resp, esp_spi_from, handle_for, mac_msg2, mac_msg3, macs_equal,
    split_keymat, MlKemKey, RunSecrets, X25519Key,
};
use crate::messages::{
    build_hardened_auth_prefix, build_hardened_init, parse_response_untrusted, HardenedResp,
    Response, ResumeSa, MAC_LEN, NONCE_LEN,
};
use crate::rng::RandomSource;
use crate::stats::{Stat, Stats};

/// A replayed message 2 makes a completed initiator resend message 3 at most this often.
pub const MAX_MSG3_RESENDS: u64 = 3;

/// ML-KEM-768 in the exchange (`InitiatorConfig.mlkem` in Python).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MlKemPolicy {
    #[default]
    Off,
    /// Send an encapsulation key; accept a message 2 with or without a ciphertext.
    Offer,
    /// Fall back ("pq_refused") on an authenticated message 2 without a ciphertext.
    Require,
}

impl MlKemPolicy {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "off" => Some(MlKemPolicy::Off),
            "offer" => Some(MlKemPolicy::Offer),
            "require" => Some(MlKemPolicy::Require),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InitiatorConfig {
    pub use_x25519: bool,
    pub require_x25519: bool,
    pub mlkem: MlKemPolicy,
    pub initial_rto: f64,
    pub max_retransmits: u32,
    pub timeout: f64,
    pub default_lifetimes: Lifetimes,
}

impl Default for InitiatorConfig {
    fn default() -> Self {
        InitiatorConfig {
            use_x25519: true,
            require_x25519: false,
            mlkem: MlKemPolicy::Off,
            initial_rto: 0.5,
            max_retransmits: 3,
            timeout: 4.0,
            default_lifetimes: Lifetimes::default(),
        }
    }
}

impl InitiatorConfig {
    pub fn validate(&self) -> Result<(), LocalError> {
        if self.require_x25519 && !self.use_x25519 {
            return Err(LocalError("require_x25519 needs use_x25519".into()));
        }
        for (name, v) in [("initial_rto", self.initial_rto), ("timeout", self.timeout)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(LocalError(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitiatorState {
    Idle,
    WaitResponse,
    Done,
    Fallback,
}

impl InitiatorState {
    pub fn name(self) -> &'static str {
        match self {
            InitiatorState::Idle => "idle",
            InitiatorState::WaitResponse => "wait_response",
            InitiatorState::Done => "done",
            InitiatorState::Fallback => "fallback",
        }
    }
}

/// One resumption attempt with a credential.
pub struct Initiator<A> {
    config: InitiatorConfig,
    cred: Credential,
    previous: Option<Credential>,
    rng: RandomSource,
    peer: A,
    lifetimes: Lifetimes,
    state: InitiatorState,
    used_previous: bool,
    events: VecDeque<InitiatorEvent<A>>,
    outbox: Vec<Vec<u8>>,
    pub stats: Stats,
    spi_i: [u8; 8],
    nonce_i: Zeroizing<[u8; NONCE_LEN]>,
    esp_spi: u32,
    x25519: Option<X25519Key>,
    mlkem: Option<MlKemKey>,
    msg1: Vec<u8>,
    /// compact(message 1): what message 3 echoes and the MACs cover.
    compact1: Vec<u8>,
    msg2: Vec<u8>,
    msg3: Vec<u8>,
    rto: f64,
    retransmits: u32,
    next_retransmit: f64,
    deadline: f64,
}

impl<A: Clone> Initiator<A> {
    pub fn new(
        credential: Credential,
        config: InitiatorConfig,
        rng: RandomSource,
        previous: Option<Credential>,
        peer: A,
        lifetimes: Option<Lifetimes>,
    ) -> Result<Self, LocalError> {
        config.validate()?;
        for c in std::iter::once(&credential).chain(previous.as_ref()) {
            if c.mode() == ProtocolMode::Paper {
                return Err(LocalError(
                    "paper mode (2007 proposal: reuses ESP keys, insecure) is not in the native \
                     engine; use the Python core with allow_paper_mode=True"
                        .into(),
                ));
            }
        }
        if let Some(p) = &previous {
            if p.mode() != credential.mode()
                || p.generation() >= credential.generation()
                || p.id_i() != credential.id_i()
                || p.id_r() != credential.id_r()
            {
                return Err(LocalError(
                    "previous must be an older generation of the same pair".into(),
                ));
            }
        }
        let lifetimes = lifetimes.unwrap_or(config.default_lifetimes);
        Ok(Initiator {
            rto: config.initial_rto,
            config,
            cred: credential,
            previous,
            rng,
            peer,
            lifetimes,
            state: InitiatorState::Idle,
            used_previous: false,
            events: VecDeque::new(),
            outbox: Vec::new(),
            stats: Stats::default(),
            spi_i: [0; 8],
            nonce_i: Zeroizing::new([0; NONCE_LEN]),
            esp_spi: 0,
            x25519: None,
            mlkem: None,
            msg1: Vec::new(),
            compact1: Vec::new(),
            msg2: Vec::new(),
            msg3: Vec::new(),
            retransmits: 0,
            next_retransmit: f64::INFINITY,
            deadline: f64::INFINITY,
        })
    }

    pub fn state(&self) -> InitiatorState {
        self.state
    }

    /// The credential of the current (or completed) attempt.
    pub fn credential(&self) -> &Credential {
        &self.cred
    }

    /// True once a NACK made the attempt retry with the previous generation.
    pub fn used_previous(&self) -> bool {
        self.used_previous
    }

    pub fn peer(&self) -> &A {
        &self.peer
    }

    pub fn initiate(&mut self, now: f64) -> Result<(), LocalError> {
        if self.state != InitiatorState::Idle {
            return Err(LocalError(format!(
                "cannot initiate in state {}",
                self.state.name()
            )));
        }
        if !now.is_finite() {
            return Err(LocalError("now must be finite".into()));
        }
        self.start(now)?;
        self.state = InitiatorState::WaitResponse;
        self.deadline = now + self.config.timeout;
        Ok(())
    }

    /// Feed one UDP payload from the responder; never fails for any `data`.
    pub fn receive_datagram(&mut self, data: &[u8], now: f64) {
        self.stats.inc(Stat::Datagrams);
        if self.state == InitiatorState::Done {
            if !self.msg2.is_empty()
                && data == &self.msg2[..]
                && self.stats.get(Stat::Msg3Resent) < MAX_MSG3_RESENDS
            {
                self.stats.inc(Stat::Msg3Resent);
                self.outbox.push(self.msg3.clone());
            } else {
                self.stats.inc(Stat::DropAfterDone);
            }
            return;
        }
        if self.state != InitiatorState::WaitResponse {
            self.stats.inc(Stat::DropWrongState);
            return;
        }
        let Ok(resp) = parse_response_untrusted(data) else {
            self.stats.inc(Stat::DropMalformed);
            return;
        };
        if !macs_equal(&resp.header().spi_i, &self.spi_i) {
            self.stats.inc(Stat::DropWrongSpi);
            return;
        }
        match resp {
            Response::Nack(n) => self.on_nack(n.header.message_id, now),
            Response::HardenedResp(r) => self.on_hardened_resp(&r),
            Response::PaperResp(_) => self.stats.inc(Stat::DropMode),
        }
    }

    pub fn datagrams_to_send(&mut self) -> Vec<(Vec<u8>, A)> {
        let peer = &self.peer;
        std::mem::take(&mut self.outbox)
            .into_iter()
            .map(|d| (d, peer.clone()))
            .collect()
    }

    pub fn next_event(&mut self) -> Option<InitiatorEvent<A>> {
        self.events.pop_front()
    }

    pub fn get_timer(&self) -> Option<f64> {
        (self.state == InitiatorState::WaitResponse)
            .then(|| self.next_retransmit.min(self.deadline))
    }

    pub fn handle_timer(&mut self, now: f64) {
        if self.state != InitiatorState::WaitResponse {
            return;
        }
        if now >= self.deadline {
            self.state = InitiatorState::Fallback;
            self.stats.inc(Stat::Timeout);
            self.events.push_back(InitiatorEvent::Fallback("timeout"));
        } else if now >= self.next_retransmit {
            self.stats.inc(Stat::Retransmit);
            self.outbox.push(self.msg1.clone());
            self.retransmits += 1;
            self.rto *= 2.0;
            self.next_retransmit = if self.retransmits < self.config.max_retransmits {
                now + self.rto
            } else {
                f64::INFINITY
            };
        }
    }

    // --- internals ------------------------------------------------------------------------------

    fn draw<const N: usize>(&mut self) -> Result<[u8; N], LocalError> {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|e| LocalError(format!("rng: {}", e.0)))?;
        Ok(b)
    }

    /// A fresh attempt: new IKE SPI, nonce, ESP SPI and X25519 key every time.
    fn start(&mut self, now: f64) -> Result<(), LocalError> {
        let spi: [u8; 8] = self.draw()?;
        self.spi_i = if spi == [0; 8] {
            [0, 0, 0, 0, 0, 0, 0, 1]
        } else {
            spi
        };
        self.nonce_i = Zeroizing::new(self.draw()?);
        self.esp_spi = esp_spi_from(self.draw()?);
        self.x25519 = None;
        if self.config.use_x25519 {
            let private = Zeroizing::new(self.draw::<32>()?);
            self.x25519 = Some(
                X25519Key::from_private(&private)
                    .map_err(|_| LocalError("X25519 key generation failed".into()))?,
            );
        }
        let (encr, key_bits, integ, mode) = self.cred.params().wire();
        let sa = ResumeSa {
            spi: self.esp_spi,
            encr,
            key_bits,
            integ,
            mode,
        };
        self.mlkem = None;
        if self.config.mlkem != MlKemPolicy::Off {
            self.mlkem = Some(
                MlKemKey::draw(&mut self.rng)
                    .map_err(|_| LocalError("ML-KEM-768 key generation failed".into()))?,
            );
        }
        let ke = self.x25519.as_ref().map(|k| *k.public());
        let ek = self.mlkem.as_ref().map(MlKemKey::encapsulation_key);
        self.msg1 = build_hardened_init(
            &self.spi_i,
            self.cred.handle(),
            &sa,
            &self.nonce_i[..],
            ke.as_ref(),
            ek,
        )
        .map_err(|e| LocalError(format!("cannot build message 1: {}", e.0)))?;
        // the encapsulation key is the last payload: its header sits 4 + 4 + 1184 from the end
        self.compact1 = match ek {
            Some(ek) => compact_at(&self.msg1, self.msg1.len() - 8 - ek.len()),
            None => self.msg1.clone(),
        };
        self.outbox.push(self.msg1.clone());
        self.rto = self.config.initial_rto;
        self.retransmits = 0;
        self.next_retransmit = if self.config.max_retransmits > 0 {
            now + self.rto
        } else {
            f64::INFINITY
        };
        Ok(())
    }

    fn on_nack(&mut self, message_id: u32, now: f64) {
        if message_id != 0 {
            self.stats.inc(Stat::DropNackMsg3);
            return;
        }
        self.stats.inc(Stat::Nack);
        if let Some(prev) = self.previous.take() {
            // lost-message-3 rule: the responder may still hold the previous generation
            let current = std::mem::replace(&mut self.cred, prev);
            self.stats.inc(Stat::RetryPrevious);
            self.used_previous = true;
            if self.start(now).is_err() {
                // no randomness for the retry: give up as the NACK asked
                self.cred = current;
                self.state = InitiatorState::Fallback;
                self.events.push_back(InitiatorEvent::Fallback("nack"));
            }
            return;
        }
        self.state = InitiatorState::Fallback;
        self.events.push_back(InitiatorEvent::Fallback("nack"));
    }

    fn on_hardened_resp(&mut self, resp: &HardenedResp<'_>) {
        let sa = resp.sa;
        if (sa.encr, sa.key_bits, sa.integ, sa.mode) != self.cred.params().wire() {
            self.stats.inc(Stat::DropParams);
            return;
        }
        let mut dh = Zeroizing::new(Vec::new());
        if let Some(ke) = &resp.ke {
            let Some(own) = &self.x25519 else {
                self.stats.inc(Stat::DropUnexpectedKe);
                return;
            };
            match own.shared_untrusted(ke) {
                Ok(s) => dh.extend_from_slice(&s[..]),
                Err(_) => {
                    self.stats.inc(Stat::DropBadKe);
                    return;
                }
            }
        }
        let mut ss = Zeroizing::new(Vec::new());
        if let Some(ct) = resp.mlkem {
            let Some(own) = &self.mlkem else {
                self.stats.inc(Stat::DropUnexpectedKe);
                return;
            };
            // a forged ciphertext gives a wrong secret (implicit rejection): MAC_2 fails
            match own.decapsulate(ct) {
                Ok(s) => ss.extend_from_slice(&s[..]),
                Err(_) => {
                    self.stats.inc(Stat::DropBadKe);
                    return;
                }
            }
        }
        let mut rs = RunSecrets::new(&self.cred, &self.nonce_i[..], resp.nonce, &dh, &ss);
        let compact2 = compact_resp(resp);
        let prefix2 = compact2
            .get(..compact2.len().saturating_sub(MAC_LEN))
            .unwrap_or(&[]);
        let expected = mac_msg2(&rs.mac_r()[..], &self.compact1, prefix2);
        if !macs_equal(&expected, resp.mac) {
            self.stats.inc(Stat::DropBadMac);
            return;
        }
        if resp.ke.is_none() && self.config.require_x25519 {
            // authenticated refusal of X25519 by the responder
            self.state = InitiatorState::Fallback;
            self.events.push_back(InitiatorEvent::Fallback("nack"));
            return;
        }
        if resp.mlkem.is_none() && self.config.mlkem == MlKemPolicy::Require {
            // authenticated refusal of ML-KEM (MAC_2 covers compact(m1) with our KE(36))
            self.state = InitiatorState::Fallback;
            self.stats.inc(Stat::PqRefused);
            self.events
                .push_back(InitiatorEvent::Fallback("pq_refused"));
            return;
        }
        let mlkem = resp.mlkem.is_some();
        let Ok(mut msg3) =
            build_hardened_auth_prefix(&self.spi_i, &resp.header.spi_r, &self.compact1)
        else {
            self.stats.inc(Stat::DropMalformed);
            return;
        };
        let mac3 = mac_msg3(&rs.mac_i()[..], &self.compact1, &compact2, &msg3);
        msg3.extend_from_slice(&mac3);
        let params = self.cred.params();
        let keymat = rs.keymat(sa.spi, self.esp_spi, 2 * params.keymat_len());
        let (i_to_r, r_to_i) = split_keymat(params, &keymat, sa.spi, self.esp_spi);
        let secret = rs.successor_secret();
        let Some(successor) = self
            .cred
            .successor(&secret, &handle_for(&secret[..]), mlkem)
        else {
            self.stats.inc(Stat::DropParams);
            return;
        };
        let completion = Completion {
            sa: SaPair {
                initiator_side: true,
                i_to_r,
                r_to_i,
                lifetimes: self.lifetimes,
            },
            handle: self.cred.handle().to_vec(),
            generation: self.cred.generation(),
            successor,
            addr: self.peer.clone(),
            ke: ke_mode(resp.ke.is_some(), mlkem),
        };
        self.state = InitiatorState::Done;
        self.msg2 = resp.raw.to_vec();
        self.msg3 = msg3.clone();
        self.outbox.push(msg3);
        self.stats.inc(Stat::Complete);
        self.events
            .push_back(InitiatorEvent::Complete(Box::new(completion)));
    }
}
