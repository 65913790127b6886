//! Admission: what may reach the engine, decided from the fixed header alone, before any
//! cryptography or database work (the Rust twin of `resume/net/admission.py` and
//! `resume/net/ratelimit.py`: the same checks in the same order, the same drop reasons,
//! the same token-bucket arithmetic; `tests/native/test_admission.py` drives both with the
//! same datagrams and clock and compares every verdict).
//!
//! Cheapest first: the header's fields (version, exchange type, flags, message id), then
//! the per-source bucket (one per IPv4 address or IPv6 prefix), then -- message 1 only --
//! draining, the global new-exchange budget and half the pending room; message 3 gets the
//! whole pending room and never pays the new-exchange budget.  Memory is bounded: at most
//! `max_sources` buckets; when full, refilled buckets go first, then the oldest half.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use crate::wire::{peek_header_untrusted, EXCHANGE_IKE_RESUME, FLAG_INITIATOR, FLAG_RESPONSE};

const FLAGS_MASK: u8 = FLAG_RESPONSE | FLAG_INITIATOR;

/// Why a datagram is dropped before the engine (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Drop {
    Malformed,
    NotResumption,
    ResponseAtResponder,
    BadMessageId,
    RateLimitedSource,
    Draining,
    RateLimitedNew,
    OverloadNew,
    Overload,
}

impl Drop {
    pub const ALL: [Drop; 9] = [
        Drop::Malformed,
        Drop::NotResumption,
        Drop::ResponseAtResponder,
        Drop::BadMessageId,
        Drop::RateLimitedSource,
        Drop::Draining,
        Drop::RateLimitedNew,
        Drop::OverloadNew,
        Drop::Overload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed => "malformed",
            Drop::NotResumption => "not_resumption",
            Drop::ResponseAtResponder => "response_at_responder",
            Drop::BadMessageId => "bad_message_id",
            Drop::RateLimitedSource => "rate_limited_source",
            Drop::Draining => "draining",
            Drop::RateLimitedNew => "rate_limited_new",
            Drop::OverloadNew => "overload_new",
            Drop::Overload => "overload",
        }
    }
}

/// `[limits]` as the service configures it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub per_source_rate: f64,
    pub per_source_burst: f64,
    pub ipv6_prefix: u8,
    pub max_sources: usize,
    pub new_exchange_rate: f64,
    pub max_pending: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_source_rate: 20.0,
            per_source_burst: 40.0,
            ipv6_prefix: 64,
            max_sources: 65536,
            new_exchange_rate: 0.0,
            max_pending: 4096,
        }
    }
}

/// One token bucket (`ratelimit.TokenBucket`).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: f64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn take(&mut self, now: f64) -> bool {
        let mut tokens = self.tokens + (now - self.last) * self.rate;
        if tokens > self.burst {
            tokens = self.burst;
        }
        self.last = now;
        if tokens < 1.0 {
            self.tokens = tokens;
            return false;
        }
        self.tokens = tokens - 1.0;
        true
    }
}

/// The fairness unit of a source: an IPv4 address, or an IPv6 address's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4(u32),
    V6(u128),
}

/// One bucket per source (`ratelimit.SourceLimiter`): `[tokens, last]` plus the insertion
/// sequence that stands in for a dict's order when the oldest half is forgotten.
pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    max_sources: usize,
    v6_mask: u128,
    buckets: HashMap<SourceKey, (f64, f64, u64)>,
    seq: u64,
}

impl SourceLimiter {
    pub fn new(rate: f64, burst: f64, max_sources: usize, ipv6_prefix: u8) -> Self {
        let p = u32::from(ipv6_prefix.clamp(1, 128));
        let v6_mask = if p >= 128 {
            u128::MAX
        } else {
            !(u128::MAX >> p)
        };
        SourceLimiter {
            rate,
            burst,
            max_sources: max_sources.max(1),
            v6_mask,
            buckets: HashMap::new(),
            seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn key(&self, ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(a) => SourceKey::V4(u32::from(a)),
            // Python sees "::ffff:a.b.c.d" as an IPv6 host like any other
            IpAddr::V6(a) => SourceKey::V6(u128::from(a) & self.v6_mask),
        }
    }

    pub fn allow(&mut self, ip: IpAddr, now: f64) -> bool {
        let key = self.key(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            let mut tokens = b.0 + (now - b.1) * self.rate;
            if tokens > self.burst {
                tokens = self.burst;
            }
            b.1 = now;
            if tokens < 1.0 {
                b.0 = tokens;
                return false;
            }
            b.0 = tokens - 1.0;
            return true;
        }
        if self.buckets.len() >= self.max_sources {
            self.evict(now);
        }
        self.seq += 1;
        self.buckets.insert(key, (self.burst - 1.0, now, self.seq));
        true
    }

    fn evict(&mut self, now: f64) {
        let full_after = self.burst / self.rate;
        self.buckets.retain(|_, b| now - b.1 < full_after);
        if self.buckets.len() >= self.max_sources {
            let mut order: Vec<(u64, SourceKey)> =
                self.buckets.iter().map(|(k, b)| (b.2, *k)).collect();
            order.sort_unstable_by_key(|(s, _)| *s);
            let n = (self.buckets.len() / 2).max(1);
            for (_, k) in order.into_iter().take(n) {
                self.buckets.remove(&k);
            }
        }
    }
}

/// Drop reasons for datagrams the engine should not see (`None`: admit).
pub struct Admission {
    pub sources: SourceLimiter,
    new_exchanges: Option<TokenBucket>,
    max_pending: usize,
    max_pending_new: usize,
    /// set when the service drains: new exchanges are refused, message 3s still served
    pub draining: bool,
}

impl Admission {
    pub fn new(l: &Limits) -> Self {
        let rate = l.new_exchange_rate;
        Admission {
            sources: SourceLimiter::new(
                l.per_source_rate,
                l.per_source_burst,
                l.max_sources,
                l.ipv6_prefix,
            ),
            new_exchanges: (rate > 0.0)
                .then(|| TokenBucket::new(rate, (rate / 10.0).max(1.0), 0.0)),
            max_pending: l.max_pending,
            max_pending_new: l.max_pending / 2,
            draining: false,
        }
    }

    /// `pending`: the engine's outstanding requests, counting those admitted this batch.
    pub fn admit(&mut self, data: &[u8], ip: IpAddr, now: f64, pending: usize) -> Option<Drop> {
        let Ok(h) = peek_header_untrusted(data) else {
            return Some(Drop::Malformed);
        };
        if h.version >> 4 != 2 || h.exchange_type != EXCHANGE_IKE_RESUME {
            return Some(Drop::NotResumption);
        }
        if h.flags & FLAGS_MASK != FLAG_INITIATOR {
            return Some(Drop::ResponseAtResponder);
        }
        if h.message_id > 1 {
            return Some(Drop::BadMessageId);
        }
        if !self.sources.allow(ip, now) {
            return Some(Drop::RateLimitedSource);
        }
        if h.message_id == 0 {
            if self.draining {
                return Some(Drop::Draining);
            }
            if let Some(b) = self.new_exchanges.as_mut() {
                if !b.take(now) {
                    return Some(Drop::RateLimitedNew);
                }
            }
            if pending >= self.max_pending_new {
                return Some(Drop::OverloadNew);
            }
        } else if pending >= self.max_pending {
            return Some(Drop::Overload);
        }
        None
    }
}

/// The key Python's limiter uses for an IPv6 host (for the differential test's report).
pub fn v6_prefix(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let p = u32::from(prefix.clamp(1, 128));
    let mask = if p >= 128 {
        u128::MAX
    } else {
        !(u128::MAX >> p)
    };
    Ipv6Addr::from(u128::from(a) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(mid: u32, flags: u8, version: u8) -> Vec<u8> {
        let mut h = vec![0u8; 16];
        h.extend_from_slice(&[33, version, EXCHANGE_IKE_RESUME, flags]);
        h.extend_from_slice(&mid.to_be_bytes());
        h.extend_from_slice(&28u32.to_be_bytes());
        h
    }

    #[test]
    fn reasons_cheapest_first_like_the_python_test() {
        let mut adm = Admission::new(&Limits {
            per_source_rate: 1.0,
            per_source_burst: 2.0,
            max_pending: 10,
            ..Limits::default()
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = ip("10.0.0.1");
        assert_eq!(adm.admit(b"short", a, 0.0, 0), Some(Drop::Malformed));
        assert_eq!(
            adm.admit(&hdr(0, 8, 0x10), a, 0.0, 0),
            Some(Drop::NotResumption)
        );
        assert_eq!(
            adm.admit(&hdr(0, 0x28, 0x20), a, 0.0, 0),
            Some(Drop::ResponseAtResponder)
        );
        assert_eq!(
            adm.admit(&hdr(2, 8, 0x20), a, 0.0, 0),
            Some(Drop::BadMessageId)
        );
        assert_eq!(adm.admit(&hdr(0, 8, 0x20), a, 0.0, 0), None);
        assert_eq!(adm.admit(&hdr(1, 8, 0x20), a, 0.0, 0), None);
        assert_eq!(
            adm.admit(&hdr(0, 8, 0x20), a, 0.0, 0),
            Some(Drop::RateLimitedSource)
        );
        assert_eq!(
            adm.admit(&hdr(0, 8, 0x20), ip("10.0.0.2"), 0.0, 5),
            Some(Drop::OverloadNew)
        );
        assert_eq!(adm.admit(&hdr(1, 8, 0x20), ip("10.0.0.3"), 0.0, 9), None);
        assert_eq!(
            adm.admit(&hdr(1, 8, 0x20), ip("10.0.0.4"), 0.0, 10),
            Some(Drop::Overload)
        );
        adm.draining = true;
        assert_eq!(
            adm.admit(&hdr(0, 8, 0x20), ip("10.0.0.5"), 0.0, 0),
            Some(Drop::Draining)
        );
        assert_eq!(adm.admit(&hdr(1, 8, 0x20), ip("10.0.0.5"), 0.0, 0), None);
    }

    #[test]
    fn ipv6_prefix_shares_a_bucket_and_memory_is_bounded() {
        let mut l = SourceLimiter::new(1.0, 1.0, 4, 64);
        assert!(l.allow("2001:db8::1".parse().unwrap(), 0.0));
        assert!(!l.allow("2001:db8::2".parse().unwrap(), 0.0));
        for i in 0..100u32 {
            l.allow(IpAddr::from(i.to_be_bytes()), 0.0);
        }
        assert!(l.len() <= 4);
    }
}
