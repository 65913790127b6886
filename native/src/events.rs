//! What the engines hand to the application (mirrors `resume/events.py`), as plain data.

use crate::credential::{Credential, Lifetimes};
use crate::keyschedule::DirectionKeys;

/// The two ESP SAs of a completed resumption.  `role` tells which one is inbound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPair {
    pub initiator_side: bool,
    pub i_to_r: DirectionKeys,
    pub r_to_i: DirectionKeys,
    pub lifetimes: Lifetimes,
}

/// A resumption both sides completed: install `sa`, store `successor`; `handle` and
/// `generation` name the credential consumed; `ke` the key exchanges of the run
/// (`"none"`, `"x25519"`, `"mlkem768"`, `"x25519+mlkem768"`).
#[derive(Debug, Clone)]
pub struct Completion<A> {
    pub sa: SaPair,
    pub handle: Vec<u8>,
    pub generation: u32,
    pub successor: Credential,
    pub addr: A,
    pub ke: &'static str,
}

/// `ResumptionComplete.ke` of a run.
pub fn ke_mode(x25519: bool, mlkem: bool) -> &'static str {
    match (x25519, mlkem) {
        (false, false) => "none",
        (true, false) => "x25519",
        (false, true) => "mlkem768",
        (true, true) => "x25519+mlkem768",
    }
}

/// Responder events.
#[derive(Debug, Clone)]
pub enum ResponderEvent<A> {
    /// Look `handle` up and answer `provide_credential(token, ...)`.
    CredentialNeeded {
        token: u64,
        handle: Vec<u8>,
        addr: A,
    },
    /// Compare-and-set generation `generation` of `handle` to `successor`; answer
    /// `commit_result(token, ok)`.  Only `ok` completes.  `sa` is the pair the completion
    /// will report: an application that installs SAs commits it with the ratchet (the
    /// install outbox, spec 6.2.1).
    CommitNeeded {
        token: u64,
        handle: Vec<u8>,
        generation: u32,
        successor: Credential,
        sa: Box<SaPair>,
    },
    Complete(Box<Completion<A>>),
    /// Local only (metrics): why a well-formed attempt was refused; the peer saw the NACK.
    Failed {
        reason: &'static str,
        handle: Option<Vec<u8>>,
        addr: A,
    },
}

/// Initiator events.
#[derive(Debug, Clone)]
pub enum InitiatorEvent<A> {
    Complete(Box<Completion<A>>),
    /// "nack", "timeout" or "pq_refused": run a full IKE.
    Fallback(&'static str),
}

/// The application misused the API (`LocalProtocolError` in Python).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalError(pub String);

impl core::fmt::Display for LocalError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LocalError {}

/// Checks a caller's `now`: finite and not negative (ticks are u64).
pub fn check_now(now: f64) -> Result<(), LocalError> {
    if now.is_finite() && now >= 0.0 {
        Ok(())
    } else {
        Err(LocalError(format!(
            "now must be a finite, non-negative time, not {now}"
        )))
    }
}
