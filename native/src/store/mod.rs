//! The credential store in Rust (issue 13, phase 2): what the responder's per-resumption
//! path needs of `store/`, without a Python round trip.
//!
//! * [`sqlite`]: the responder lookup (exactly the columns `store/repository.py` reads) and
//!   the group-committed, policy-guarded compare-and-set of the ratchet (the same UPDATE,
//!   the same bound values), on rusqlite, WAL, `synchronous=FULL`;
//! * [`keys`]: AES-256-GCM unwrapping/wrapping with the master keys Python hands over;
//! * [`params`]: the stored SA parameter text;
//! * [`policy`]: `Policy.check`, `sa_lifetimes` and the SQL guard.
//!
//! The schema is defined once, in Python (`store/tables.py` and its alembic migrations):
//! this module never creates or alters a table.  `tests/native/test_store_contract.py`
//! proves that it reads and writes exactly those columns, with exactly the Python store's
//! statements.  Every failure is one of [`StoreError`]'s three kinds and fails closed: the
//! caller refuses the resumption (NACK) and counts it.

pub mod keys;
pub mod params;
pub mod policy;
pub mod sqlite;

use crate::credential::{Credential, Lifetimes};
use policy::Refusal;

/// Why the store could not answer (each is a refusal for the peer: full IKE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A row that does not decode or authenticate (`store.errors.CorruptRecord`).
    Corrupt(String),
    /// A row wrapped under a key id that is not configured (`MasterKeyError`).
    Key(String),
    /// The database failed or is unreachable (`StoreUnavailable`).
    Unavailable(String),
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Key(_) => "key",
            StoreError::Unavailable(_) => "unavailable",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            StoreError::Corrupt(m) | StoreError::Key(m) | StoreError::Unavailable(m) => m,
        }
    }
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

/// A lookup's answer when the store could answer.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No responder record has this handle.
    Miss,
    /// The record exists but the policy refuses a resumption now (nothing was unwrapped).
    Refused(Refusal),
    /// A usable credential and the SA lifetimes the policy leaves.
    Found(Box<(Credential, Lifetimes)>),
}
