//! The cache policy as the store enforces it (mirrors `store/policy.py`'s `Policy.check` and
//! `Policy.sa_lifetimes`, and `store/repository.py`'s `ratchet_policy_guard`).
//!
//! Python hands the limits over with their Python types: an `int` limit is bound to SQL as
//! an integer and compared as one, a `float` as a double -- the same values the Python store
//! binds, so the guarded compare-and-set is the same statement with the same arguments.
//! `tests/native/test_store_contract.py` runs the hypothesis property "the SQL guard equals
//! `Policy.check`" against this guard and this check.

use crate::credential::Lifetimes;

/// A policy limit as Python holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Int(i64),
    Float(f64),
}

/// `x >= lim` for a float `x`, exactly as Python compares a float with an int or a float.
fn f_ge(x: f64, lim: Limit) -> bool {
    match lim {
        Limit::Float(l) => x >= l,
        Limit::Int(l) => {
            if x.is_nan() {
                return false;
            }
            // exact: compare the integer with the float's floor/ceil, never a rounded copy
            if x >= 9_223_372_036_854_775_808.0 {
                return true;
            }
            if x < -9_223_372_036_854_775_808.0 {
                return false;
            }
            let f = x.floor();
            // x >= l  <=>  floor(x) >= l  (l integral)
            (f as i64) >= l
        }
    }
}

/// `n >= lim` for an integer counter.
fn i_ge(n: i64, lim: Limit) -> bool {
    match lim {
        Limit::Int(l) => n >= l,
        Limit::Float(l) => {
            if l.is_nan() {
                return false;
            }
            if l >= 9_223_372_036_854_775_808.0 {
                return false;
            }
            if l <= -9_223_372_036_854_775_808.0 {
                return true;
            }
            // n >= l  <=>  n >= ceil(l)  (n integral)
            n >= (l.ceil() as i64)
        }
    }
}

fn as_f64(l: Limit) -> f64 {
    match l {
        Limit::Int(i) => i as f64,
        Limit::Float(f) => f,
    }
}

/// Why a policy refuses a resumption (`store.policy.Refusal` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Clocked,
    Established,
    Data,
    ChainAge,
    Idle,
    Resumptions,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Clocked => "clocked",
            Refusal::Established => "established",
            Refusal::Data => "data",
            Refusal::ChainAge => "chain_age",
            Refusal::Idle => "idle",
            Refusal::Resumptions => "resumptions",
        }
    }
}

/// A record's accounting since its full IKE (`store.policy.Counters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    pub full_ike_at: f64,
    pub last_used_at: f64,
    pub established_s: f64,
    pub bytes_total: i64,
    pub resumptions: i64,
}

/// `store.policy.Policy` without `capacity` (an insertion rule, not a check of one record).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Policy {
    pub clocked: Option<Limit>,
    pub established: Option<Limit>,
    pub data: Option<Limit>,
    pub max_chain_age: Option<Limit>,
    pub idle: Option<Limit>,
    pub max_resumptions: Option<Limit>,
}

/// One value a guard term binds: `now` (a double) or a limit with its Python type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardArg {
    Now,
    Limit(Limit),
}

impl Policy {
    /// `Policy.check`: the first refusal in the same order, with the same arithmetic.
    pub fn check(&self, c: &Counters, now: f64) -> Option<Refusal> {
        let age = now - c.full_ike_at;
        if let Some(l) = self.max_chain_age {
            if f_ge(age, l) {
                return Some(Refusal::ChainAge);
            }
        }
        if let Some(l) = self.clocked {
            if f_ge(age, l) {
                return Some(Refusal::Clocked);
            }
        }
        if let Some(l) = self.established {
            if f_ge(c.established_s, l) {
                return Some(Refusal::Established);
            }
        }
        if let Some(l) = self.data {
            if i_ge(c.bytes_total, l) {
                return Some(Refusal::Data);
            }
        }
        if let Some(l) = self.idle {
            if f_ge(now - c.last_used_at, l) {
                return Some(Refusal::Idle);
            }
        }
        if let Some(l) = self.max_resumptions {
            if i_ge(c.resumptions, l) {
                return Some(Refusal::Resumptions);
            }
        }
        None
    }

    /// `Policy.sa_lifetimes(c, now)` (soft limits at 90% of the hard ones).
    pub fn sa_lifetimes(&self, c: &Counters, now: f64) -> Lifetimes {
        const SOFT: f64 = 0.9;
        let mut secs: Vec<f64> = Vec::with_capacity(3);
        for l in [self.max_chain_age, self.clocked].into_iter().flatten() {
            secs.push(c.full_ike_at + as_f64(l) - now);
        }
        if let Some(l) = self.established {
            secs.push(as_f64(l) - c.established_s);
        }
        // Python: max(1, int(min(secs))): int() truncates toward zero
        let hard_s = secs
            .iter()
            .copied()
            .reduce(f64::min)
            .map(|m| (m.trunc() as i64).max(1));
        let hard_b: Option<i64> = self.data.map(|l| match l {
            Limit::Int(d) => d.saturating_sub(c.bytes_total).max(1),
            Limit::Float(d) => ((d - c.bytes_total as f64).max(1.0)) as i64,
        });
        let soft = |h: i64| ((h as f64 * SOFT).trunc() as i64).max(1);
        let u = |v: i64| u64::try_from(v).unwrap_or(1);
        Lifetimes {
            soft_seconds: hard_s.map(|h| u(soft(h))),
            hard_seconds: hard_s.map(u),
            soft_bytes: hard_b.map(|h| u(soft(h))),
            hard_bytes: hard_b.map(u),
            soft_packets: None,
            hard_packets: None,
        }
    }

    /// `ratchet_policy_guard`: the extra WHERE terms (" AND ..." each) and what each `?`
    /// binds, in order.  Empty when no limit is set.
    pub fn guard(&self) -> (String, Vec<GuardArg>) {
        let mut sql = String::new();
        let mut args = Vec::new();
        let ages: Vec<Limit> = [self.max_chain_age, self.clocked]
            .into_iter()
            .flatten()
            .collect();
        // Python's min() keeps the first of two equal values (and its type)
        let mut min_age: Option<Limit> = None;
        for l in ages {
            min_age = Some(match min_age {
                Some(m) if as_f64(l) >= as_f64(m) => m,
                _ => l,
            });
        }
        if let Some(m) = min_age {
            sql.push_str(" AND ? - full_ike_at < ?");
            args.push(GuardArg::Now);
            args.push(GuardArg::Limit(m));
        }
        for (column, lim) in [
            ("established_s", self.established),
            ("bytes_total", self.data),
            ("resumptions", self.max_resumptions),
        ] {
            if let Some(l) = lim {
                sql.push_str(&format!(" AND {column} < ?"));
                args.push(GuardArg::Limit(l));
            }
        }
        if let Some(l) = self.idle {
            sql.push_str(" AND ? - last_used_at < ?");
            args.push(GuardArg::Now);
            args.push(GuardArg::Limit(l));
        }
        (sql, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_int_float_comparisons_are_exact() {
        assert!(f_ge(10.0, Limit::Int(10)));
        assert!(!f_ge(9.999, Limit::Int(10)));
        assert!(f_ge(10.5, Limit::Int(10)));
        assert!(i_ge(10, Limit::Float(9.5)));
        assert!(!i_ge(9, Limit::Float(9.5)));
        assert!(i_ge(10, Limit::Float(10.0)));
        assert!(!f_ge(f64::NAN, Limit::Int(0)));
    }

    #[test]
    fn order_of_refusals_and_lifetimes() {
        let p = Policy {
            clocked: Some(Limit::Float(100.0)),
            max_chain_age: Some(Limit::Float(50.0)),
            data: Some(Limit::Int(1000)),
            ..Policy::default()
        };
        let c = Counters {
            full_ike_at: 0.0,
            last_used_at: 0.0,
            established_s: 0.0,
            bytes_total: 2000,
            resumptions: 0,
        };
        assert_eq!(p.check(&c, 60.0), Some(Refusal::ChainAge));
        assert_eq!(p.check(&c, 10.0), Some(Refusal::Data));
        let lt = p.sa_lifetimes(
            &Counters {
                bytes_total: 0,
                ..c
            },
            10.0,
        );
        assert_eq!(lt.hard_seconds, Some(40));
        assert_eq!(lt.soft_seconds, Some(36));
        assert_eq!(lt.hard_bytes, Some(1000));
        assert_eq!(lt.soft_bytes, Some(900));
        let (sql, args) = p.guard();
        assert_eq!(sql, " AND ? - full_ike_at < ? AND bytes_total < ?");
        assert_eq!(
            args,
            vec![
                GuardArg::Now,
                GuardArg::Limit(Limit::Float(50.0)),
                GuardArg::Limit(Limit::Int(1000))
            ]
        );
    }
}
