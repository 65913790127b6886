//! The service's counters, shared by its threads as relaxed atomics (one add per event, no
//! lock on the hot path), read by Python when it renders `/metrics`.  The names and labels
//! are those of `resume/net/metrics.py`'s `ServerMetrics`: Python copies them over.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use super::admission::Drop;
use crate::credential::Lineage;

/// `resume/net/metrics.py`'s `LATENCY_BUCKETS` (seconds).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Why the engine refused a well-formed attempt (`ResumptionFailed.reason`).
pub const FAILURE_REASONS: [&str; 14] = [
    "unknown_or_refused",
    "mode_mismatch",
    "params_mismatch",
    "internal",
    "bad_key_share",
    "stale_or_forged_cookie",
    "bad_mac",
    "commit_failed",
    "x25519_required",
    "paper_disabled",
    "mlkem_required",
    "lineage",
    "mlkem_busy",
    "mlkem_state_missing",
];

/// `ResumptionComplete.ke` values (`crate::events::ke_mode`), the first label of
/// `ikeresume_resumptions_total`; the second is the successor's lineage.
pub const KE_MODES: [&str; 4] = ["none", "x25519", "mlkem768", "x25519+mlkem768"];
const N_RESUMPTIONS: usize = KE_MODES.len() * Lineage::ALL.len();

/// `ikeresume_cache_lookups_total` labels.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Cache {
    Hit,
    Miss,
    Refused,
    Error,
    MissRecent,
}
pub const CACHE_LABELS: [&str; 5] = ["hit", "miss", "refused", "error", "miss_recent"];

/// `ikeresume_commits_total` labels.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Commit {
    Ok,
    Conflict,
    Error,
}
pub const COMMIT_LABELS: [&str; 3] = ["ok", "conflict", "error"];

fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Default)]
pub struct Histogram {
    pub counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub sum_ns: AtomicU64,
}

impl Histogram {
    /// Prometheus' `le` buckets: the first bound >= value (`bisect_left`).
    pub fn observe(&self, seconds: f64) {
        let s = seconds.max(0.0);
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(c) = self.counts.get(i) {
            add(c);
        }
        self.sum_ns
            .fetch_add((s * 1e9).min(1e18) as u64, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Counters {
    pub drops: [AtomicU64; Drop::ALL.len()],
    pub resumed: AtomicU64,
    pub failed: [AtomicU64; FAILURE_REASONS.len()],
    /// completed resumptions by (ke, lineage): [`Counters::resumptions`]
    pub by_ke_lineage: [AtomicU64; N_RESUMPTIONS],
    pub cache: [AtomicU64; CACHE_LABELS.len()],
    pub commits: [AtomicU64; COMMIT_LABELS.len()],
    pub commit_batches: AtomicU64,
    /// install-outbox rows deleted (installed)
    pub forgotten: AtomicU64,
    pub latency: Histogram,
    /// accepts handed to the store and not answered yet
    pub outstanding_commits: AtomicI64,
    /// lookups handed to Python (external store) and not answered yet
    pub outstanding_lookups: AtomicI64,
    /// message-3-to-durable-commit latencies kept for benchmarks (off unless asked)
    pub sampling: AtomicBool,
    pub samples: Mutex<Vec<f64>>,
}

impl Counters {
    pub fn drop(&self, d: Drop) {
        if let Some(c) = self.drops.get(d as usize) {
            add(c);
        }
    }

    pub fn cache(&self, c: Cache) {
        if let Some(x) = self.cache.get(c as usize) {
            add(x);
        }
    }

    pub fn commit(&self, c: Commit) {
        if let Some(x) = self.commits.get(c as usize) {
            add(x);
        }
    }

    pub fn failed(&self, reason: &str) {
        let i = FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(3); // "internal"
        if let Some(c) = self.failed.get(i) {
            add(c);
        }
    }

    pub fn resumed(&self, latency: Option<f64>, ke: &str, lineage: Lineage) {
        add(&self.resumed);
        let k = KE_MODES.iter().position(|m| *m == ke).unwrap_or(0);
        let l = Lineage::ALL.iter().position(|x| *x == lineage).unwrap_or(0);
        if let Some(c) = self.by_ke_lineage.get(k * Lineage::ALL.len() + l) {
            add(c);
        }
        if let Some(l) = latency {
            self.latency.observe(l);
            if self.sampling.load(Ordering::Relaxed) {
                if let Ok(mut s) = self.samples.lock() {
                    s.push(l);
                }
            }
        }
    }

    /// The non-zero (ke, lineage, count) of completed resumptions.
    pub fn resumptions(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (k, ke) in KE_MODES.iter().enumerate() {
            for (l, lin) in Lineage::ALL.iter().enumerate() {
                let n = self
                    .by_ke_lineage
                    .get(k * Lineage::ALL.len() + l)
                    .map_or(0, Self::get);
                if n > 0 {
                    out.push((*ke, lin.name(), n));
                }
            }
        }
        out
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
