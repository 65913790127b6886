//! ikeresume's native data plane (issue 13, phase 1): the hardened-mode wire codec, the key
//! schedule and sans-I/O initiator and responder engines with the same semantics as the
//! Python reference core in `resume/`, plus (feature `python`) the `resume._native`
//! extension module.
//!
//! Safety: no `unsafe` anywhere in this crate; the parsers of untrusted bytes
//! (`wire`, `messages`) additionally deny indexing, slicing, `unwrap`, `expect` and `panic!`
//! through clippy, so no input can make them panic.

#![deny(unsafe_code)]

pub mod credential;
pub mod events;
pub mod initiator;
pub mod keyschedule;
pub mod messages;
pub mod ordered;
pub mod responder;
pub mod rng;
pub mod stats;
pub mod wire;

#[cfg(feature = "python")]
mod python;
