//! ikeresume's native data plane (issue 13, phase 1): the hardened-mode wire codec, the key
//! schedule and sans-I/O initiator and responder engines with the same semantics as the
//! Python reference core in `resume/`, plus (feature `python`) the `resume._native`
//! extension module.
//!
//! Safety: no `unsafe` anywhere in this crate; the parsers of untrusted bytes
//! (`wire`, `messages`) additionally deny indexing, slicing, `unwrap`, `expect` and `panic!`
//! through clippy, so no input can make them panic.

#![deny(unsafe_code)]

// the wire codec: no dependency beyond core/std (what the fuzz targets build)
pub mod messages;
pub mod wire;

#[cfg(feature = "crypto")]
pub mod credential;
#[cfg(feature = "crypto")]
pub mod events;
#[cfg(feature = "crypto")]
pub mod initiator;
#[cfg(feature = "crypto")]
pub mod keyschedule;
#[cfg(feature = "crypto")]
pub mod ordered;
#[cfg(feature = "crypto")]
pub mod responder;
#[cfg(feature = "crypto")]
pub mod rng;
#[cfg(feature = "crypto")]
pub mod stats;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "store")]
pub mod store;

#[cfg(feature = "server")]
pub mod server;
