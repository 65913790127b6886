//! The hardened-mode responder: one sans-I/O engine serving every peer, stateless until
//! message 3.  Same semantics as `resume/responder.py` (the reference; differential tests
//! keep both byte-identical): tick keys kept for the current and previous tick then erased,
//! response cache, cookie (SPIr) checked in constant time before any lookup, replay memory
//! of completed and committing handles, optional credential cache, `max_pending`, lookup
//! timeout, one NACK for every refusal, the same stats counters and events.
//!
//! ML-KEM-768 (spec 5.6): message 3 does not echo the encapsulation key, so each message 2
//! built with ML-KEM keeps `N_R -> [(SS, SHA-256(ct))]` in its tick (bounded per tick and
//! per handle, never evicted, erased with the tick's X25519 key); a full table NACKs new
//! ML-KEM messages 1.
//!
//! No I/O, no clock, no Python: datagrams and `now` go in, datagrams and events come out.
//! `A` is the peer address type (a `SocketAddr` for a Rust UDP loop; the binding's own
//! host/port type for Python), so a later phase can drive this engine from recvmmsg.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::Equivalent;
use zeroize::Zeroizing;

use crate::credential::{Credential, Lifetimes, ProtocolMode};
use crate::events::{check_now, ke_mode, Completion, LocalError, ResponderEvent, SaPair};
use crate::keyschedule::{
    compact_init, handle_for, mac_msg2, mac_msg3, macs_equal, mlkem_encapsulate, sha256,
    split_keymat, PeerAddr, ResponderPrf, ResponderValues, RunSecrets, Secret32, X25519Key,
};
use crate::messages::{
    build_hardened_resp_prefix, nack_for, parse_request_untrusted, HardenedAuth, HardenedInit,
    Request, ResumeSa, MAC_LEN,
};
use crate::ordered::OrderedMap;
use crate::rng::RandomSource;
use crate::stats::{Stat, Stats};

pub const MIN_SERVER_SECRET: usize = 32;
/// Defaults of the ML-KEM bounds (spec 5.6), as `resume.responder`'s.
pub const MLKEM_RUNS_PER_TICK: usize = 65_536;
pub const MLKEM_RUNS_PER_HANDLE: usize = 4;

/// Responder policy knobs (hardened mode only: paper mode stays in the Python core).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponderConfig {
    pub allow_x25519: bool,
    pub require_x25519: bool,
    pub allow_mlkem: bool,
    pub require_mlkem: bool,
    /// Refuse a credential whose chain is not post-quantum (spec 12.3).
    pub require_pq_lineage: bool,
    pub mlkem_runs_per_tick: usize,
    pub mlkem_runs_per_handle: usize,
    pub cookie_tick_seconds: f64,
    pub response_cache_size: usize,
    pub max_pending: usize,
    pub lookup_timeout: f64,
    pub completed_cache_size: usize,
    pub credential_cache_size: usize,
    pub default_lifetimes: Lifetimes,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        ResponderConfig {
            allow_x25519: true,
            require_x25519: false,
            allow_mlkem: true,
            require_mlkem: false,
            require_pq_lineage: false,
            mlkem_runs_per_tick: MLKEM_RUNS_PER_TICK,
            mlkem_runs_per_handle: MLKEM_RUNS_PER_HANDLE,
            cookie_tick_seconds: 10.0,
            response_cache_size: 4096,
            max_pending: 1024,
            lookup_timeout: 2.0,
            completed_cache_size: 65536,
            credential_cache_size: 0,
            default_lifetimes: Lifetimes::default(),
        }
    }
}

impl ResponderConfig {
    pub fn validate(&self) -> Result<(), LocalError> {
        let err = |m: &str| Err(LocalError(m.to_owned()));
        if self.require_x25519 && !self.allow_x25519 {
            return err("require_x25519 needs allow_x25519");
        }
        if self.require_mlkem && !self.allow_mlkem {
            return err("require_mlkem needs allow_mlkem");
        }
        if !(self.cookie_tick_seconds.is_finite() && self.cookie_tick_seconds > 0.0) {
            return err("cookie_tick_seconds must be positive");
        }
        if !(self.lookup_timeout.is_finite() && self.lookup_timeout > 0.0) {
            return err("lookup_timeout must be positive");
        }
        if self.response_cache_size < 1 {
            return err("response_cache_size must be at least 1");
        }
        if self.max_pending < 1 {
            return err("max_pending must be at least 1");
        }
        if self.completed_cache_size < 1 {
            return err("completed_cache_size must be at least 1");
        }
        if self.mlkem_runs_per_tick < 1 {
            return err("mlkem_runs_per_tick must be at least 1");
        }
        if self.mlkem_runs_per_handle < 1 {
            return err("mlkem_runs_per_handle must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    AwaitCredential1,
    AwaitCredential3,
    AwaitCommit,
}

struct Commit {
    sa: SaPair,
    generation: u32,
    successor: Credential,
    ke: &'static str,
}

/// One outstanding request to the application (the only per-peer state).
struct Slot<A> {
    state: SlotState,
    /// The request datagram (message 1 or 3), parsed again when answered.
    raw: Vec<u8>,
    addr: A,
    handle: Vec<u8>,
    deadline: f64,
    values: ResponderValues,
    tick: u64,
    /// compact(message 1) when it differs from `raw` (an ML-KEM key in message 1).
    compact: Option<Vec<u8>>,
    /// compact(message 2) as sent, from the response cache (message 3 then needs not
    /// rebuild it), and the SHA-256 of its ML-KEM ciphertext.
    msg2: Option<Arc<[u8]>>,
    ct_digest: Option<[u8; 32]>,
    commit: Option<Box<Commit>>,
}

/// (address, message 1) -> message 2 as sent, expiry, tick, values (all public).
#[derive(Clone, PartialEq, Eq)]
struct CacheKey<A> {
    addr: A,
    m1: Box<[u8]>,
}

impl<A: Hash> Hash for CacheKey<A> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.addr.hash(h);
        self.m1[..].hash(h);
    }
}

struct CacheKeyRef<'a, A> {
    addr: &'a A,
    m1: &'a [u8],
}

impl<A: Hash> Hash for CacheKeyRef<'_, A> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.addr.hash(h);
        self.m1.hash(h);
    }
}

impl<A: Eq> Equivalent<CacheKey<A>> for CacheKeyRef<'_, A> {
    fn equivalent(&self, key: &CacheKey<A>) -> bool {
        *self.addr == key.addr && *self.m1 == key.m1[..]
    }
}

/// A verified cookie: the values, the tick of message 1, compact(message 2) and its
/// ciphertext's SHA-256 if still cached.
type Cookie = (ResponderValues, u64, Option<Arc<[u8]>>, Option<[u8; 32]>);

struct CachedResponse {
    msg2: Arc<[u8]>,
    expires: f64,
    tick: u64,
    values: ResponderValues,
    /// compact(message 2) (the same bytes as `msg2` without ML-KEM)
    compact: Arc<[u8]>,
    ct_digest: Option<[u8; 32]>,
}

/// A run kept from message 1 for message 3 (X25519 only), erased with its tick key; `ss`
/// is the ML-KEM secret its `rs` includes (empty without ML-KEM).
struct KeptRun {
    dh: Secret32,
    cred: Credential,
    nonce_r: [u8; 32],
    rs: RunSecrets,
    ss: Zeroizing<Vec<u8>>,
}

/// One ML-KEM candidate of a message 2: (shared secret, SHA-256(ciphertext)).
type MlkemRun = (Secret32, [u8; 32]);
/// What message 3 tries: (ML-KEM shared secret or empty, SHA-256 of the ciphertext).
type Candidate = (Zeroizing<Vec<u8>>, Option<[u8; 32]>);

/// The ML-KEM runs of one tick (see the module documentation).
#[derive(Default)]
struct MlkemTick {
    runs: HashMap<[u8; 32], Vec<MlkemRun>>,
    per_handle: HashMap<Box<[u8]>, usize>,
    total: usize,
}

/// The hardened-mode responder engine.
pub struct Responder<A: PeerAddr> {
    config: ResponderConfig,
    prf: ResponderPrf,
    rng: RandomSource,
    /// Where ML-KEM encapsulation's randomness comes from (`Os`: aws-lc's own).
    kem_rng: RandomSource,
    mlkem_ticks: HashMap<u64, MlkemTick>,
    tick_keys: Vec<(u64, X25519Key)>,
    tick_runs: HashMap<u64, HashMap<Box<[u8]>, KeptRun>>,
    erase_at: f64,
    slots: OrderedMap<u64, Slot<A>>,
    next_token: u64,
    events: VecDeque<ResponderEvent<A>>,
    outbox: Vec<(Vec<u8>, A)>,
    response_cache: OrderedMap<CacheKey<A>, CachedResponse>,
    completed: OrderedMap<Box<[u8]>, ()>,
    committing: hashbrown::HashSet<Box<[u8]>>,
    /// successors' handles of the commits in flight (`states.SlotTable._committing_next`)
    committing_next: hashbrown::HashSet<Box<[u8]>>,
    cred_cache: OrderedMap<Box<[u8]>, (Credential, Lifetimes, f64)>,
    pub stats: Stats,
}

impl<A: PeerAddr> Responder<A> {
    pub fn new(
        config: ResponderConfig,
        server_secret: &[u8],
        rng: RandomSource,
    ) -> Result<Self, LocalError> {
        config.validate()?;
        if server_secret.len() < MIN_SERVER_SECRET {
            return Err(LocalError(format!(
                "server secret must be at least {MIN_SERVER_SECRET} bytes"
            )));
        }
        Ok(Responder {
            config,
            prf: ResponderPrf::new(server_secret),
            rng,
            kem_rng: RandomSource::Os,
            mlkem_ticks: HashMap::new(),
            tick_keys: Vec::with_capacity(3),
            tick_runs: HashMap::new(),
            erase_at: f64::INFINITY,
            slots: OrderedMap::new(),
            next_token: 1,
            events: VecDeque::new(),
            outbox: Vec::new(),
            response_cache: OrderedMap::new(),
            completed: OrderedMap::new(),
            committing: hashbrown::HashSet::new(),
            committing_next: hashbrown::HashSet::new(),
            cred_cache: OrderedMap::new(),
            stats: Stats::default(),
        })
    }

    /// The encapsulation's randomness: `Os` (the default) or, for vectors and differential
    /// tests, `Seeded`/`Scripted` draws of FIPS 203's `m` (as `resume.kem_testing`).
    pub fn with_kem_source(mut self, kem: RandomSource) -> Self {
        self.kem_rng = kem;
        self
    }

    pub fn config(&self) -> &ResponderConfig {
        &self.config
    }

    // --- application-facing API -----------------------------------------------------------

    /// Feed one UDP payload (non-ESP marker already stripped).  Never fails for any `data`:
    /// garbage is dropped and counted and changes no state.  Errs only on a bad `now`.
    pub fn receive_datagram(&mut self, data: &[u8], addr: &A, now: f64) -> Result<(), LocalError> {
        self.stats.inc(Stat::Datagrams);
        check_now(now)?;
        if now >= self.erase_at {
            self.erase_tick_keys(now);
        }
        let Ok(req) = parse_request_untrusted(data) else {
            self.stats.inc(Stat::DropMalformed);
            return Ok(());
        };
        match req {
            Request::HardenedInit(init) => self.on_hardened_init(&init, addr, now),
            Request::HardenedAuth(auth) => self.on_hardened_auth(&auth, addr, now),
            Request::PaperInit(_) | Request::PaperAuth(_) => {
                self.nack(req.header(), addr, "paper_disabled", None);
            }
        }
        Ok(())
    }

    pub fn datagrams_to_send(&mut self) -> Vec<(Vec<u8>, A)> {
        std::mem::take(&mut self.outbox)
    }

    /// Drain the outbox into `out` (keeps the caller's allocation).
    pub fn drain_datagrams(&mut self, out: &mut Vec<(Vec<u8>, A)>) {
        out.append(&mut self.outbox);
    }

    /// Put drained outputs back in front of anything queued since (a caller that could not
    /// deliver them keeps them for its next call: nothing the engine produced is lost).
    pub fn requeue_datagram(&mut self, data: Vec<u8>, addr: A) {
        self.outbox.insert(0, (data, addr));
    }

    pub fn requeue_events(&mut self, events: Vec<ResponderEvent<A>>) {
        for e in events.into_iter().rev() {
            self.events.push_front(e);
        }
    }

    pub fn next_event(&mut self) -> Option<ResponderEvent<A>> {
        self.events.pop_front()
    }

    pub fn drain_events(&mut self, out: &mut Vec<ResponderEvent<A>>) {
        out.extend(self.events.drain(..));
    }

    /// Earliest deadline: the oldest outstanding request or the erasure of a tick key.
    pub fn get_timer(&mut self) -> Option<f64> {
        let mut t = if self.tick_keys.is_empty() && self.mlkem_ticks.is_empty() {
            None
        } else {
            Some(self.erase_at)
        };
        if let Some((_, slot)) = self.slots.front() {
            t = Some(t.map_or(slot.deadline, |x: f64| x.min(slot.deadline)));
        }
        t
    }

    /// Expire requests the application did not answer in time and erase tick keys no
    /// message 3 can use any more.
    pub fn handle_timer(&mut self, now: f64) -> Result<(), LocalError> {
        check_now(now)?;
        self.erase_tick_keys(now);
        while let Some((_, slot)) = self.slots.front() {
            if slot.deadline > now {
                break;
            }
            let Some((_, slot)) = self.slots.pop_front() else {
                break;
            };
            let stat = match slot.state {
                SlotState::AwaitCredential1 => Stat::ExpiredAwaitCredential1,
                SlotState::AwaitCredential3 => Stat::ExpiredAwaitCredential3,
                SlotState::AwaitCommit => {
                    self.commit_ended(&slot);
                    Stat::ExpiredAwaitCommit
                }
            };
            self.stats.inc(stat);
        }
        Ok(())
    }

    /// Answer `CredentialNeeded`.  `None` => the one NACK (fail closed).
    pub fn provide_credential(
        &mut self,
        token: u64,
        credential: Option<Credential>,
        lifetimes: Option<Lifetimes>,
        now: f64,
    ) -> Result<(), LocalError> {
        check_now(now)?;
        if let (Some(c), Some(slot)) = (&credential, self.slots.get(&token)) {
            // a misuse leaves the slot untouched (its place in the deadline order too)
            if slot.state != SlotState::AwaitCommit && c.handle() != &slot.handle[..] {
                return Err(LocalError(
                    "credential handle differs from the requested handle".into(),
                ));
            }
        }
        let Some(slot) = self.take_slot(token, false, "provide_credential")? else {
            return Ok(());
        };
        let lt = lifetimes.unwrap_or(self.config.default_lifetimes);
        let Some(cred) = credential else {
            if slot.state == SlotState::AwaitCredential1 && self.being_committed(&slot.handle) {
                // the handle's commit started after this message 1 was read: not
                // "unknown", only "not yet" -- the peer retransmits (resume/responder.py)
                self.stats.inc(Stat::DropCommitting);
                return Ok(());
            }
            self.refuse(&slot, "unknown_or_refused");
            return Ok(());
        };
        match slot.state {
            SlotState::AwaitCredential1 => self.answer_hardened_init(slot, cred, lt),
            _ => self.answer_hardened_auth(token, slot, cred, lt, now),
        }
        Ok(())
    }

    /// Answer `CommitNeeded`: `ok` is the outcome of the compare-and-set.
    pub fn commit_result(&mut self, token: u64, ok: bool, now: f64) -> Result<(), LocalError> {
        check_now(now)?;
        let Some(mut slot) = self.take_slot(token, true, "commit_result")? else {
            return Ok(());
        };
        self.commit_ended(&slot);
        let commit = slot.commit.take();
        let Some(commit) = commit.filter(|_| ok) else {
            self.stats.inc(Stat::CommitFailed);
            self.refuse(&slot, "commit_failed");
            return Ok(());
        };
        self.completed
            .insert(slot.handle.clone().into_boxed_slice(), ());
        while self.completed.len() > self.config.completed_cache_size {
            self.completed.pop_front();
        }
        self.stats.inc(Stat::Complete);
        let c = *commit;
        self.events
            .push_back(ResponderEvent::Complete(Box::new(Completion {
                sa: c.sa,
                handle: slot.handle,
                generation: c.generation,
                successor: c.successor,
                addr: slot.addr,
                ke: c.ke,
            })));
        Ok(())
    }

    /// The peer of an outstanding request (None once answered or expired).
    pub fn slot_addr(&self, token: u64) -> Option<A> {
        self.slots.get(&token).map(|s| s.addr.clone())
    }

    /// Outstanding requests to the application.
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// Table sizes (no secrets) for metrics.
    pub fn response_cache_len(&self) -> usize {
        self.response_cache.len()
    }

    /// ML-KEM candidates kept for messages 3 (spec 5.6).
    pub fn mlkem_runs_len(&self) -> usize {
        self.mlkem_ticks
            .values()
            .flat_map(|t| t.runs.values())
            .map(Vec::len)
            .sum()
    }

    // --- helpers ----------------------------------------------------------------------------

    fn tick(&self, now: f64) -> u64 {
        // now was checked finite and >= 0; `as` saturates beyond u64 (far future)
        (now / self.config.cookie_tick_seconds).floor() as u64
    }

    fn tick_end(&self, tick: u64) -> f64 {
        (tick.saturating_add(2)) as f64 * self.config.cookie_tick_seconds
    }

    fn erase_tick_keys(&mut self, now: f64) {
        let t = self.tick(now);
        self.forget_tick_keys_before(t.saturating_sub(1));
    }

    /// Erase X25519 keys (and the runs computed with them) and ML-KEM runs of ticks
    /// before `tick`.
    fn forget_tick_keys_before(&mut self, tick: u64) {
        let runs = &mut self.tick_runs;
        self.tick_keys.retain(|(t, _)| {
            let keep = *t >= tick;
            if !keep {
                runs.remove(t);
            }
            keep
        });
        self.mlkem_ticks.retain(|t, _| *t >= tick);
        let oldest = self
            .tick_keys
            .iter()
            .map(|(t, _)| *t)
            .chain(self.mlkem_ticks.keys().copied())
            .min();
        self.erase_at = match oldest {
            Some(t) => self.tick_end(t),
            None => f64::INFINITY,
        };
    }

    fn take_slot(
        &mut self,
        token: u64,
        commit: bool,
        what: &str,
    ) -> Result<Option<Slot<A>>, LocalError> {
        let Some(slot) = self.slots.get(&token) else {
            if token > 0 && token < self.next_token {
                self.stats.inc(Stat::LateAnswer);
                return Ok(None);
            }
            return Err(LocalError(format!(
                "{what}: token {token} was never issued"
            )));
        };
        let accepted = if commit {
            slot.state == SlotState::AwaitCommit
        } else {
            slot.state != SlotState::AwaitCommit
        };
        if !accepted {
            let s = match slot.state {
                SlotState::AwaitCredential1 => "await_credential_1",
                SlotState::AwaitCredential3 => "await_credential_3",
                SlotState::AwaitCommit => "await_commit",
            };
            return Err(LocalError(format!("{what}: token {token} is in state {s}")));
        }
        Ok(self.slots.remove(&token))
    }

    /// A token for one more pending exchange, or None (counted) when max_pending is full.
    fn take_token(&mut self) -> Option<u64> {
        if self.slots.len() >= self.config.max_pending {
            self.stats.inc(Stat::DropOverload);
            return None;
        }
        let t = self.next_token;
        self.next_token += 1;
        Some(t)
    }

    fn ask_credential(&mut self, slot: Slot<A>, counter: Stat) {
        if let Some(token) = self.take_token() {
            self.stats.inc(counter);
            self.events.push_back(ResponderEvent::CredentialNeeded {
                token,
                handle: slot.handle.clone(),
                addr: slot.addr.clone(),
            });
            self.slots.insert(token, slot);
        }
    }

    /// The one NACK: same bytes for every reason (a function of the request header).
    fn nack(
        &mut self,
        header: &crate::wire::Header,
        addr: &A,
        reason: &'static str,
        handle: Option<Vec<u8>>,
    ) {
        self.outbox.push((nack_for(header), addr.clone()));
        self.stats.inc(Stat::Nack);
        self.stats.inc(Stat::nack_reason(reason));
        self.events.push_back(ResponderEvent::Failed {
            reason,
            handle,
            addr: addr.clone(),
        });
    }

    fn refuse(&mut self, slot: &Slot<A>, reason: &'static str) {
        match crate::wire::peek_header_untrusted(&slot.raw) {
            Ok(h) => self.nack(&h, &slot.addr, reason, Some(slot.handle.clone())),
            Err(_) => self.stats.inc(Stat::DropMalformed), // unreachable: it parsed before
        }
    }

    fn cache_response(&mut self, key: CacheKey<A>, entry: CachedResponse) {
        self.response_cache.insert(key, entry);
        if self.response_cache.len() > self.config.response_cache_size {
            self.response_cache.pop_front();
        }
    }

    fn cached_response(&mut self, addr: &A, m1: &[u8], now: f64) -> bool {
        let key = CacheKeyRef { addr, m1 };
        let Some(hit) = self.response_cache.get(&key) else {
            return false;
        };
        if now >= hit.expires {
            self.response_cache.remove(&key);
            return false;
        }
        let msg2 = hit.msg2.to_vec();
        self.stats.inc(Stat::RetransmitAnswered);
        self.outbox.push((msg2, addr.clone()));
        true
    }

    fn tick_key(&mut self, tick: u64, create: bool) -> Option<usize> {
        if let Some(i) = self.tick_keys.iter().position(|(t, _)| *t == tick) {
            return Some(i);
        }
        if !create {
            return None;
        }
        let mut b = Zeroizing::new([0u8; 32]);
        self.rng.fill(&mut b[..]).ok()?;
        let key = X25519Key::from_private(&b).ok()?;
        self.tick_keys.push((tick, key));
        self.forget_tick_keys_before(tick.saturating_sub(1));
        self.tick_keys.iter().position(|(t, _)| *t == tick)
    }

    /// Whether one more ML-KEM run may be kept for `handle` in `tick`.
    fn mlkem_room(&self, tick: u64, handle: &[u8]) -> bool {
        self.mlkem_ticks.get(&tick).is_none_or(|t| {
            t.total < self.config.mlkem_runs_per_tick
                && t.per_handle.get(handle).copied().unwrap_or(0)
                    < self.config.mlkem_runs_per_handle
        })
    }

    fn keep_mlkem(&mut self, tick: u64, handle: &[u8], nonce_r: [u8; 32], run: MlkemRun) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.mlkem_ticks.entry(tick) {
            e.insert(MlkemTick::default());
            self.forget_tick_keys_before(tick.saturating_sub(1));
        }
        if let Some(t) = self.mlkem_ticks.get_mut(&tick) {
            t.runs.entry(nonce_r).or_default().push(run);
            *t.per_handle.entry(handle.into()).or_default() += 1;
            t.total += 1;
        }
    }

    /// Message 1: the run's secrets, our X25519 share and the ML-KEM ciphertext.
    /// Err(reason) to refuse with; the caller checked the ML-KEM bounds.
    #[allow(clippy::type_complexity)]
    fn first_run(
        &mut self,
        init: &HardenedInit<'_>,
        compact1: &[u8],
        cred: &Credential,
        values: &ResponderValues,
        tick: u64,
    ) -> Result<(RunSecrets, Option<[u8; 32]>, Option<(Vec<u8>, [u8; 32])>), &'static str> {
        let mut dh: Option<Secret32> = None;
        let mut ke_r = None;
        let x25519 = init.ke.filter(|_| self.config.allow_x25519);
        if let Some(ke_i) = x25519 {
            let idx = self.tick_key(tick, true).ok_or("internal")?;
            let (_, key) = self.tick_keys.get(idx).ok_or("internal")?;
            ke_r = Some(*key.public());
            dh = Some(key.shared_untrusted(&ke_i).map_err(|_| "bad_key_share")?);
        }
        let mut ss = Zeroizing::new(Vec::new());
        let mut ct = None;
        if let Some(ek) = init.mlkem.filter(|_| self.config.allow_mlkem) {
            let (c, s) = mlkem_encapsulate(ek, &mut self.kem_rng).map_err(|_| "bad_key_share")?;
            let digest = sha256(&[&c]);
            ss.extend_from_slice(&s[..]);
            self.keep_mlkem(tick, init.handle, values.nonce_r, (s, digest));
            ct = Some((c, digest));
        }
        let dh_bytes: &[u8] = dh.as_ref().map_or(&[], |d| &d[..]);
        let rs = RunSecrets::new(cred, init.nonce, &values.nonce_r, dh_bytes, &ss);
        if let Some(dh) = dh {
            // keep for message 3 (bounded per tick): one X25519 and Extract saved
            let cap = self.config.response_cache_size;
            let runs = self.tick_runs.entry(tick).or_default();
            if runs.len() < cap {
                let kept = KeptRun {
                    dh,
                    cred: cred.clone(),
                    nonce_r: values.nonce_r,
                    rs: rs.clone(),
                    ss,
                };
                runs.insert(compact1.into(), kept);
            }
        }
        Ok((rs, ke_r, ct))
    }

    /// Message 3: the X25519 secret, our share and the run kept from message 1 (when the
    /// same credential and address computed it).  Err(reason) to refuse with.
    #[allow(clippy::type_complexity)]
    fn dh_again(
        &mut self,
        init: &HardenedInit<'_>,
        compact1: &[u8],
        cred: &Credential,
        values: &ResponderValues,
        tick: u64,
    ) -> Result<(Zeroizing<Vec<u8>>, Option<[u8; 32]>, Option<KeptRun>), &'static str> {
        let Some(ke_i) = init.ke.filter(|_| self.config.allow_x25519) else {
            return Ok((Zeroizing::new(Vec::new()), None, None));
        };
        let idx = self.tick_key(tick, false).ok_or("stale_or_forged_cookie")?;
        let (_, key) = self.tick_keys.get(idx).ok_or("internal")?;
        let ke_r = *key.public();
        let kept = self.tick_runs.entry(tick).or_default().remove(compact1);
        match kept {
            None => {
                let dh = key.shared_untrusted(&ke_i).map_err(|_| "bad_key_share")?;
                Ok((Zeroizing::new(dh.to_vec()), Some(ke_r), None))
            }
            Some(k) if k.cred == *cred && macs_equal(&k.nonce_r, &values.nonce_r) => {
                Ok((Zeroizing::new(k.dh.to_vec()), Some(ke_r), Some(k)))
            }
            // another credential record or address: the shared secret still holds
            Some(k) => Ok((Zeroizing::new(k.dh.to_vec()), Some(ke_r), None)),
        }
    }

    /// Message 2 and compact(message 2) (`mlkem`: the ciphertext; `digest`: its SHA-256
    /// when only that is known).  MAC_2 covers the compact forms.
    #[allow(clippy::too_many_arguments)]
    fn msg2(
        init: &HardenedInit<'_>,
        compact1: &[u8],
        values: &ResponderValues,
        rs: &mut RunSecrets,
        ke_r: Option<&[u8; 32]>,
        mlkem: Option<&[u8]>,
        digest: Option<[u8; 32]>,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let sa = ResumeSa {
            spi: values.esp_spi,
            ..init.sa
        };
        let digest = digest.or_else(|| mlkem.map(|c| sha256(&[c])));
        let mut compact = build_hardened_resp_prefix(
            &init.header.spi_i,
            &values.spi_r,
            &sa,
            &values.nonce_r,
            ke_r,
            digest.as_ref().map(|d| &d[..]),
        )
        .ok()?;
        let mac = mac_msg2(&rs.mac_r()[..], compact1, &compact);
        compact.extend_from_slice(&mac);
        let Some(ct) = mlkem else {
            return Some((compact.clone(), compact));
        };
        let mut full = build_hardened_resp_prefix(
            &init.header.spi_i,
            &values.spi_r,
            &sa,
            &values.nonce_r,
            ke_r,
            Some(ct),
        )
        .ok()?;
        full.extend_from_slice(&mac);
        Some((full, compact))
    }

    fn credential_problem(
        init: &HardenedInit<'_>,
        cred: &Credential,
        require_pq_lineage: bool,
    ) -> Option<&'static str> {
        if cred.mode() != ProtocolMode::Hardened {
            return Some("mode_mismatch");
        }
        if init.sa.algorithms() != cred.params().wire() {
            return Some("params_mismatch");
        }
        if require_pq_lineage && !cred.lineage().is_pq() {
            return Some("lineage");
        }
        None
    }

    // --- hardened mode ------------------------------------------------------------------------

    fn on_hardened_init(&mut self, req: &HardenedInit<'_>, addr: &A, now: f64) {
        let compact1 = compact_init(req);
        if self.cached_response(addr, &compact1, now) {
            return;
        }
        if self.being_committed(req.handle) {
            // a commit in flight consumes or creates this handle: answered now, the
            // store's view would be stale (resume/responder.py, _on_hardened_init)
            self.stats.inc(Stat::DropCommitting);
            return;
        }
        let required_missing = if req.ke.is_none() && self.config.require_x25519 {
            Some("x25519_required")
        } else if req.mlkem.is_none() && self.config.require_mlkem {
            Some("mlkem_required")
        } else {
            None
        };
        if let Some(reason) = required_missing {
            self.nack(&req.header, addr, reason, Some(req.handle.to_vec()));
            return;
        }
        let tick = self.tick(now);
        let values = self.prf.values(tick, addr, &compact1);
        let slot = Slot {
            state: SlotState::AwaitCredential1,
            raw: req.raw.to_vec(),
            addr: addr.clone(),
            handle: req.handle.to_vec(),
            deadline: now + self.config.lookup_timeout,
            values,
            tick,
            compact: (req.mlkem_at != 0).then(|| compact1.into_owned()),
            msg2: None,
            ct_digest: None,
            commit: None,
        };
        self.ask_credential(slot, Stat::Msg1);
    }

    fn answer_hardened_init(&mut self, slot: Slot<A>, cred: Credential, lt: Lifetimes) {
        let Ok(Request::HardenedInit(req)) = parse_request_untrusted(&slot.raw) else {
            self.refuse(&slot, "internal");
            return;
        };
        let require_pq = self.config.require_pq_lineage;
        if let Some(problem) = Self::credential_problem(&req, &cred, require_pq) {
            self.refuse(&slot, problem);
            return;
        }
        let mlkem = req.mlkem.is_some() && self.config.allow_mlkem;
        if mlkem && !self.mlkem_room(slot.tick, req.handle) {
            self.refuse(&slot, "mlkem_busy");
            return;
        }
        let compact1: &[u8] = slot.compact.as_deref().unwrap_or(req.raw);
        let values = slot.values;
        let (mut rs, ke_r, ct) = match self.first_run(&req, compact1, &cred, &values, slot.tick) {
            Ok(r) => r,
            Err(reason) => {
                self.refuse(&slot, reason);
                return;
            }
        };
        let built = Self::msg2(
            &req,
            compact1,
            &values,
            &mut rs,
            ke_r.as_ref(),
            ct.as_ref().map(|(c, _)| &c[..]),
            ct.as_ref().map(|(_, d)| *d),
        );
        let Some((msg2, compact2)) = built else {
            self.refuse(&slot, "internal");
            return;
        };
        self.stats.inc(Stat::Msg2);
        let ct_digest = ct.as_ref().map(|(_, d)| *d);
        let msg2: Arc<[u8]> = msg2.into();
        let compact2: Arc<[u8]> = if ct.is_some() {
            compact2.into()
        } else {
            Arc::clone(&msg2)
        };
        self.outbox.push((msg2.to_vec(), slot.addr.clone()));
        let expires = self.tick_end(slot.tick);
        let key = CacheKey {
            addr: slot.addr.clone(),
            m1: compact1.into(),
        };
        self.cache_response(
            key,
            CachedResponse {
                msg2,
                expires,
                tick: slot.tick,
                values,
                compact: compact2,
                ct_digest,
            },
        );
        if self.config.credential_cache_size > 0 {
            self.cred_cache
                .insert_last(req.handle.into(), (cred, lt, expires));
            while self.cred_cache.len() > self.config.credential_cache_size {
                self.cred_cache.pop_front();
            }
        }
    }

    /// Check the cookie (SPIr) of a message 3: the values, the tick of message 1 and, when
    /// still cached, message 2 as sent.  Constant-time compare either way.
    fn cookie(&mut self, req: &HardenedAuth<'_>, addr: &A, now: f64) -> Option<Cookie> {
        let init = &req.init; // the echo: its own compact form
        let tick = self.tick(now);
        if let Some(hit) = self.response_cache.get(&CacheKeyRef { addr, m1: init.raw }) {
            if tick.saturating_sub(1) <= hit.tick
                && hit.tick <= tick
                && macs_equal(&hit.values.spi_r, &req.header.spi_r)
            {
                let r = (
                    hit.values,
                    hit.tick,
                    Some(Arc::clone(&hit.compact)),
                    hit.ct_digest,
                );
                self.stats.inc(Stat::Msg3CachedMsg2);
                return Some(r);
            }
        }
        for t in [Some(tick), tick.checked_sub(1)].into_iter().flatten() {
            let v = self.prf.values(t, addr, init.raw);
            if macs_equal(&v.spi_r, &req.header.spi_r) {
                return Some((v, t, None, None));
            }
        }
        None
    }

    /// A commit in flight consumes `handle` or creates it (its successor).
    fn being_committed(&self, handle: &[u8]) -> bool {
        self.committing.contains(handle) || self.committing_next.contains(handle)
    }

    /// The commit of `slot` (AwaitCommit) is over: answered or expired.
    fn commit_ended(&mut self, slot: &Slot<A>) {
        self.committing.remove(&slot.handle[..]);
        if let Some(c) = &slot.commit {
            self.committing_next.remove(c.successor.handle());
        }
    }

    fn replayed(&self, handle: &[u8]) -> bool {
        self.completed.contains_key(handle) || self.committing.contains(handle)
    }

    fn on_hardened_auth(&mut self, req: &HardenedAuth<'_>, addr: &A, now: f64) {
        let handle = req.init.handle;
        if self.replayed(handle) {
            self.stats.inc(Stat::DropReplayedMsg3);
            return;
        }
        let Some((values, tick, msg2, ct_digest)) = self.cookie(req, addr, now) else {
            self.nack(
                &req.header,
                addr,
                "stale_or_forged_cookie",
                Some(handle.to_vec()),
            );
            return;
        };
        let slot = Slot {
            state: SlotState::AwaitCredential3,
            raw: req.raw.to_vec(),
            addr: addr.clone(),
            handle: handle.to_vec(),
            deadline: now + self.config.lookup_timeout,
            values,
            tick,
            compact: None,
            msg2,
            ct_digest,
            commit: None,
        };
        let cached = if self.cred_cache.is_empty() {
            None
        } else {
            self.cred_cache.remove(handle)
        };
        if let Some((cred, lt, expires)) = cached {
            if now < expires {
                if let Some(token) = self.take_token() {
                    self.stats.inc(Stat::Msg3);
                    self.stats.inc(Stat::CredentialCacheHit);
                    self.answer_hardened_auth(token, slot, cred, lt, now);
                }
                return;
            }
        }
        self.ask_credential(slot, Stat::Msg3);
    }

    fn answer_hardened_auth(
        &mut self,
        token: u64,
        mut slot: Slot<A>,
        cred: Credential,
        lt: Lifetimes,
        now: f64,
    ) {
        let outcome = match parse_request_untrusted(&slot.raw) {
            Ok(Request::HardenedAuth(req)) => self.verify_auth(&req, &slot, &cred, lt),
            _ => Err(Some("internal")),
        };
        match outcome {
            Err(Some(reason)) => self.refuse(&slot, reason),
            Err(None) => self.stats.inc(Stat::DropReplayedMsg3),
            Ok(commit) => {
                slot.state = SlotState::AwaitCommit;
                slot.deadline = now + self.config.lookup_timeout;
                let (handle, generation) = (slot.handle.clone(), commit.generation);
                let successor = commit.successor.clone();
                let sa = Box::new(commit.sa.clone());
                self.committing_next.insert(successor.handle().into());
                slot.commit = Some(commit);
                self.slots.insert(token, slot);
                self.committing.insert(handle.clone().into_boxed_slice());
                self.stats.inc(Stat::CommitRequested);
                self.events.push_back(ResponderEvent::CommitNeeded {
                    token,
                    handle,
                    generation,
                    successor,
                    sa,
                });
            }
        }
    }

    /// MAC_3 against the credential; Ok(commit data), Err(Some(reason)) to NACK, Err(None)
    /// for a replay to drop silently.
    fn verify_auth(
        &mut self,
        req: &HardenedAuth<'_>,
        slot: &Slot<A>,
        cred: &Credential,
        lt: Lifetimes,
    ) -> Result<Box<Commit>, Option<&'static str>> {
        let init = &req.init;
        let compact1 = init.raw; // the echo is compact(message 1)
        if let Some(problem) = Self::credential_problem(init, cred, self.config.require_pq_lineage)
        {
            return Err(Some(problem));
        }
        if self.replayed(init.handle) {
            return Err(None);
        }
        let values = slot.values;
        let mlkem = init.mlkem.is_some() && self.config.allow_mlkem;
        let mut candidates: Vec<Candidate> = vec![(Zeroizing::new(Vec::new()), None)];
        if mlkem {
            let found = self
                .mlkem_ticks
                .get(&slot.tick)
                .and_then(|t| t.runs.get(&values.nonce_r));
            let chosen: Vec<Candidate> = found
                .into_iter()
                .flatten()
                .map(|(s, d)| (Zeroizing::new(s.to_vec()), Some(*d)))
                .collect();
            if chosen.is_empty() {
                return Err(Some("mlkem_state_missing"));
            }
            candidates = chosen;
        }
        let (dh, ke_r, kept) = self
            .dh_again(init, compact1, cred, &values, slot.tick)
            .map_err(Some)?;
        let prefix = req
            .raw
            .get(..req.raw.len().saturating_sub(MAC_LEN))
            .unwrap_or(&[]);
        let mut verified = None;
        for (ss, digest) in &candidates {
            let mut rs = match &kept {
                Some(k) if macs_equal(&k.ss, ss) => k.rs.clone(),
                _ => RunSecrets::new(cred, init.nonce, &values.nonce_r, &dh, ss),
            };
            // the cached message 2 is the last one sent for this message 1; a candidate of
            // an earlier one (its cache entry was evicted meanwhile) is rebuilt
            let rebuilt;
            let compact2: &[u8] = match &slot.msg2 {
                Some(m) if *digest == slot.ct_digest => m,
                _ => {
                    rebuilt = Self::msg2(
                        init,
                        compact1,
                        &values,
                        &mut rs,
                        ke_r.as_ref(),
                        None,
                        *digest,
                    )
                    .ok_or(Some("internal"))?
                    .1;
                    &rebuilt
                }
            };
            let expected = mac_msg3(&rs.mac_i()[..], compact1, compact2, prefix);
            if macs_equal(&expected, req.mac) {
                verified = Some(rs);
                break;
            }
        }
        let Some(rs) = verified else {
            return Err(Some("bad_mac"));
        };
        if mlkem {
            // verified: its shared secret is no longer needed
            if let Some(t) = self.mlkem_ticks.get_mut(&slot.tick) {
                t.runs.remove(&values.nonce_r);
            }
        }
        let params = cred.params();
        let keymat = rs.keymat(values.esp_spi, init.sa.spi, 2 * params.keymat_len());
        let (i_to_r, r_to_i) = split_keymat(params, &keymat, values.esp_spi, init.sa.spi);
        let secret = rs.successor_secret();
        let successor = cred
            .successor(&secret, &handle_for(&secret[..]), mlkem)
            .ok_or(Some("internal"))?;
        Ok(Box::new(Commit {
            sa: SaPair {
                initiator_side: false,
                i_to_r,
                r_to_i,
                lifetimes: lt,
            },
            generation: cred.generation(),
            successor,
            ke: ke_mode(ke_r.is_some(), mlkem),
        }))
    }
}
