//! The responder service core (issue 13, phase 2): sockets, admission, the engine, the
//! store and timers on Rust threads, with no Python object touched per datagram.
//!
//! Threads:
//! * one **lane** per listening socket ([`lane`]): `poll` on the socket and a wake-up
//!   socket, `recvmmsg` a batch, admission ([`admission`]), the engine, lookups answered
//!   inline from its own SQLite connection ([`crate::store::sqlite::Reader`]), accepts
//!   handed to the group committer, `sendmmsg` the replies, the engine's timers;
//! * the **group committer** ([`committer`]): many accepts, one transaction, one fsync;
//!   each accept is answered to its lane only once its transaction is durable, and only
//!   then does the engine complete the resumption;
//! * a **maintenance** thread: WAL checkpoints and the store health probe.
//!
//! Python ([`crate::python`]'s `NativeServer`, `resume/net/native_service.py`) keeps the
//! configuration, metrics rendering, health, drain and shutdown; it hears from these
//! threads through [`Shared::outgoing`], a queue it drains in batches with the GIL released
//! while it waits: completions to install (when the service installs SAs), store health
//! changes, and -- with an external store (PostgreSQL through the Python store) -- the
//! lookups and accepts to answer, which come back through each lane's inbox.
//!
//! No thread's panic crosses into Python: each runs inside `catch_unwind`, a panic is
//! recorded ([`Shared::failure`]) and the service reports it and stops.

pub mod admission;
pub mod committer;
pub mod lane;
pub mod metrics;
pub mod udp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::credential::Credential;
use crate::events::SaPair;
use crate::responder::{Responder, ResponderConfig};
use crate::rng::RandomSource;
use crate::stats::Stats;
use crate::store::keys::Keyring;
use crate::store::policy::Policy;
use crate::store::sqlite::{Reader, SqliteOptions, Writer};
use crate::store::{Lookup, StoreError};

use admission::{Admission, Limits};
use committer::CommitQueue;
use metrics::Counters;
use udp::{BindOptions, UdpStats};

/// POSIX time in seconds (what Python's `time.time()` gives the Python service).
pub fn clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where credentials come from and accepts go.
pub enum StoreConfig {
    /// SQLite in Rust: lookups inline on each lane, accepts group-committed here.
    Sqlite(Box<SqliteStore>),
    /// Python answers lookups and accepts (PostgreSQL through the Python store, in batches).
    External,
}

pub struct SqliteStore {
    pub opts: SqliteOptions,
    pub keyring: Arc<Keyring>,
    pub policy: Policy,
    pub group_commit_max: usize,
    pub checkpoint_interval: Duration,
    pub probe_interval: Duration,
}

pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub bind: BindOptions,
    pub server_secret: Zeroizing<Vec<u8>>,
    pub responder: ResponderConfig,
    pub limits: Limits,
    /// A handle the store did not know is answered "unknown" from memory this long.
    pub miss_reuse_seconds: f64,
    pub store: StoreConfig,
    /// When the service installs SAs (or runs hooks): this node's name in the install
    /// outbox.  Each accept then commits its SA pair with the ratchet and the pair goes to
    /// Python once durable ([`Outgoing::Committed`]).  None: nothing is installed.
    pub install_node: Option<Arc<str>>,
}

/// Answers coming back to a lane from other threads.
pub enum Inbound {
    /// The durable outcome of an accept (Err: the transaction did not commit).
    Commit {
        token: u64,
        result: Result<bool, StoreError>,
    },
    /// An external store's answer to a lookup.
    Credential {
        token: u64,
        answer: Result<Lookup, StoreError>,
    },
}

/// What Python hears (drained in batches by `NativeServer.wait_events`).
pub enum Outgoing {
    /// An accept whose commit (with its install-outbox row `uid`) is durable: install the
    /// pair, then `forget_installs([uid])`.
    Committed(Box<Committed>),
    /// External store: look `handle` up and answer through `answer_lookups`.
    Lookup {
        lane: usize,
        token: u64,
        handle: Vec<u8>,
        now: f64,
    },
    /// External store: run this compare-and-set and answer through `answer_commits`.
    Commit(Box<ExternalCommit>),
    StoreFailed {
        op: &'static str,
        error: String,
    },
    StoreRecovered,
}

/// A durable accept's pair to install (its install-outbox row is `uid`).
pub struct Committed {
    pub uid: String,
    pub sa: SaPair,
    pub handle: Vec<u8>,
    pub generation: u32,
    pub successor: Credential,
    pub addr: SocketAddr,
}

pub struct ExternalCommit {
    pub lane: usize,
    pub token: u64,
    pub handle: Vec<u8>,
    pub generation: u32,
    pub successor: Credential,
    pub now: f64,
    /// the SA pair, when the service installs (Python commits it into the outbox)
    pub sa: Option<SaPair>,
}

/// A lane's state other threads may read or post to.
pub struct LaneShared {
    pub name: String,
    pub addr: SocketAddr,
    inbox: Mutex<Vec<Inbound>>,
    waker: UnixDatagram,
    pub received: AtomicU64,
    pub snapshot: Mutex<LaneSnapshot>,
}

/// Published by a lane after every batch (for metrics and tests).
#[derive(Clone, Default)]
pub struct LaneSnapshot {
    pub engine: Stats,
    pub udp: UdpStats,
    pub send_errors: Vec<(&'static str, u64)>,
    pub pending: usize,
    pub response_cache: usize,
    /// ML-KEM runs kept for message 3s (`mlkem_runs` of `describe()`)
    pub mlkem_runs: usize,
}

impl LaneShared {
    /// Queue answers and wake the lane (one byte on its wake-up socket).
    pub fn post(&self, items: impl IntoIterator<Item = Inbound>) {
        if let Ok(mut q) = self.inbox.lock() {
            q.extend(items);
        }
        self.wake();
    }

    pub fn wake(&self) {
        // a full buffer already holds a wake-up: nothing is lost by EAGAIN
        let _ = self.waker.send(&[1]);
    }

    pub(crate) fn take_inbox(&self, into: &mut Vec<Inbound>) {
        if let Ok(mut q) = self.inbox.lock() {
            std::mem::swap(&mut *q, into);
        }
    }
}

/// The Python-bound queue.
#[derive(Default)]
pub struct OutQueue {
    q: Mutex<VecDeque<Outgoing>>,
    cv: Condvar,
}

impl OutQueue {
    pub fn push(&self, item: Outgoing) {
        if let Ok(mut q) = self.q.lock() {
            q.push_back(item);
        }
        self.cv.notify_one();
    }

    /// Everything queued, waiting up to `timeout` for the first item.
    pub fn wait(&self, timeout: Duration, max: usize) -> Vec<Outgoing> {
        let Ok(mut q) = self.q.lock() else {
            return Vec::new();
        };
        if q.is_empty() {
            match self.cv.wait_timeout(q, timeout) {
                Ok((g, _)) => q = g,
                Err(_) => return Vec::new(),
            }
        }
        let n = q.len().min(max.max(1));
        q.drain(..n).collect()
    }

    pub fn notify(&self) {
        self.cv.notify_all();
    }
}

/// State every thread of one server shares.
pub struct Shared {
    pub counters: Counters,
    pub lanes: Vec<LaneShared>,
    pub outgoing: OutQueue,
    pub stop: AtomicBool,
    pub draining: AtomicBool,
    pub store_ok: AtomicBool,
    /// f64 bits of the last time a datagram was received or sent
    pub last_activity: AtomicU64,
    /// the first panic of any thread (the service is then broken and says so)
    pub failure: Mutex<Option<String>>,
    /// a test hook: the next lane iteration panics (proves the catch)
    pub inject_panic: AtomicBool,
}

impl Shared {
    pub fn store_failed(&self, op: &'static str, e: &StoreError) {
        if self.store_ok.swap(false, Ordering::AcqRel) {
            self.outgoing.push(Outgoing::StoreFailed {
                op,
                error: e.message().to_owned(),
            });
        }
    }

    pub fn store_recovered(&self) {
        if !self.store_ok.swap(true, Ordering::AcqRel) {
            self.outgoing.push(Outgoing::StoreRecovered);
        }
    }

    pub fn touch(&self, now: f64) {
        self.last_activity.store(now.to_bits(), Ordering::Relaxed);
    }

    pub fn idle_seconds(&self, now: f64) -> f64 {
        now - f64::from_bits(self.last_activity.load(Ordering::Relaxed))
    }

    fn record_failure(&self, what: String) {
        if let Ok(mut f) = self.failure.lock() {
            if f.is_none() {
                *f = Some(what);
            }
        }
        self.stop.store(true, Ordering::Release);
        for l in &self.lanes {
            l.wake();
        }
        self.outgoing.notify();
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Run a thread body; a panic is recorded, never propagated.
fn guarded(shared: Arc<Shared>, name: &'static str, body: impl FnOnce() + Send + 'static) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(body)) {
        shared.record_failure(format!("{name} thread panicked: {}", panic_text(&*p)));
    }
}

/// A bound, not yet running server.
pub struct Server {
    pub shared: Arc<Shared>,
    pending_lanes: Vec<lane::Lane>,
    committer: Option<Arc<CommitQueue>>,
    writer: Option<Writer>,
    sqlite: Option<(SqliteOptions, Duration, Duration, usize)>,
    threads: Vec<JoinHandle<()>>,
    maintenance_stop: Arc<(Mutex<bool>, Condvar)>,
    pub addrs: Vec<SocketAddr>,
    pub fds: Vec<i32>,
}

impl Server {
    /// Bind every address and open the store; nothing runs until [`Server::start`].
    pub fn bind(cfg: ServerConfig) -> Result<Server, String> {
        cfg.responder.validate().map_err(|e| e.0)?;
        let mut udps = Vec::new();
        for a in &cfg.listen {
            let u = udp::bind(*a, &cfg.bind).map_err(|e| format!("cannot bind {a}: {e}"))?;
            udps.push(u);
        }
        let mut lanes_shared = Vec::new();
        let mut wake_rx = Vec::new();
        let mut addrs = Vec::new();
        let mut fds = Vec::new();
        for u in &udps {
            let addr = u.local_addr().map_err(|e| e.to_string())?;
            let (tx, rx) = UnixDatagram::pair().map_err(|e| e.to_string())?;
            tx.set_nonblocking(true).map_err(|e| e.to_string())?;
            rx.set_nonblocking(true).map_err(|e| e.to_string())?;
            let name = match addr {
                SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            };
            lanes_shared.push(LaneShared {
                name,
                addr,
                inbox: Mutex::new(Vec::new()),
                waker: tx,
                received: AtomicU64::new(0),
                snapshot: Mutex::new(LaneSnapshot::default()),
            });
            wake_rx.push(rx);
            addrs.push(addr);
            fds.push(u.as_raw_fd());
        }
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            lanes: lanes_shared,
            outgoing: OutQueue::default(),
            stop: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            store_ok: AtomicBool::new(true),
            last_activity: AtomicU64::new(0f64.to_bits()),
            failure: Mutex::new(None),
            inject_panic: AtomicBool::new(false),
        });
        let (mut committer, mut writer, mut sqlite) = (None, None, None);
        let mut pending_lanes = Vec::new();
        for (idx, (udp, rx)) in udps.into_iter().zip(wake_rx).enumerate() {
            let store = match &cfg.store {
                StoreConfig::Sqlite(sc) => {
                    let mut r = Reader::new(sc.opts.clone(), Arc::clone(&sc.keyring), sc.policy);
                    // a store that fails now is not fatal: lookups fail closed (NACK) and
                    // retry, the probe reports the recovery
                    if let Err(e) = r.open() {
                        shared.store_failed("open", &e);
                    }
                    lane::LaneStore::Sqlite(Box::new(r))
                }
                StoreConfig::External => lane::LaneStore::External,
            };
            let engine =
                Responder::new(cfg.responder.clone(), &cfg.server_secret, RandomSource::Os)
                    .map_err(|e| e.0)?;
            pending_lanes.push(lane::Lane::new(
                idx,
                udp,
                cfg.bind.natt,
                cfg.bind.batch,
                rx,
                engine,
                Admission::new(&cfg.limits),
                store,
                cfg.miss_reuse_seconds,
                cfg.install_node.clone(),
                Arc::clone(&shared),
            ));
        }
        if let StoreConfig::Sqlite(sc) = &cfg.store {
            let mut w = Writer::new(sc.opts.clone(), Arc::clone(&sc.keyring), &sc.policy);
            if let Err(e) = w.open() {
                shared.store_failed("open", &e);
            }
            writer = Some(w);
            let q = Arc::new(CommitQueue::default());
            for l in &mut pending_lanes {
                l.set_committer(Arc::clone(&q));
            }
            committer = Some(q);
            sqlite = Some((
                sc.opts.clone(),
                sc.checkpoint_interval,
                sc.probe_interval,
                sc.group_commit_max,
            ));
        }
        Ok(Server {
            shared,
            pending_lanes,
            committer,
            writer,
            sqlite,
            threads: Vec::new(),
            maintenance_stop: Arc::new((Mutex::new(false), Condvar::new())),
            addrs,
            fds,
        })
    }

    /// Start the threads (once).
    pub fn start(&mut self) -> Result<(), String> {
        if let (Some(q), Some(w), Some((opts, ckpt, probe, max))) = (
            self.committer.clone(),
            self.writer.take(),
            self.sqlite.clone(),
        ) {
            let sh = Arc::clone(&self.shared);
            let sh2 = Arc::clone(&sh);
            self.threads.push(
                std::thread::Builder::new()
                    .name("ikr-group-commit".into())
                    .spawn(move || {
                        guarded(sh2, "group commit", move || {
                            committer::run(sh, q, w, max);
                        })
                    })
                    .map_err(|e| e.to_string())?,
            );
            let sh = Arc::clone(&self.shared);
            let sh2 = Arc::clone(&sh);
            let stop = Arc::clone(&self.maintenance_stop);
            self.threads.push(
                std::thread::Builder::new()
                    .name("ikr-maintenance".into())
                    .spawn(move || {
                        guarded(sh2, "maintenance", move || {
                            committer::maintenance(sh, opts, ckpt, probe, stop);
                        })
                    })
                    .map_err(|e| e.to_string())?,
            );
        }
        for l in self.pending_lanes.drain(..) {
            let sh = Arc::clone(&self.shared);
            self.threads.push(
                std::thread::Builder::new()
                    .name(format!("ikr-lane-{}", l.index()))
                    .spawn(move || guarded(sh, "lane", move || l.run()))
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(())
    }

    /// Stop: lanes finish their current batch and exit, then queued accepts are committed
    /// (durably) and the committer exits.  Idempotent; blocks until every thread joined.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for l in &self.shared.lanes {
            l.wake();
        }
        // lanes first (they may still hand accepts over), then the committer
        let mut rest = Vec::new();
        for t in self.threads.drain(..) {
            if t.thread().name().is_some_and(|n| n.starts_with("ikr-lane")) {
                let _ = t.join();
            } else {
                rest.push(t);
            }
        }
        if let Some(q) = &self.committer {
            q.close();
        }
        {
            let (m, cv) = &*self.maintenance_stop;
            if let Ok(mut g) = m.lock() {
                *g = true;
            }
            cv.notify_all();
        }
        for t in rest {
            let _ = t.join();
        }
        self.pending_lanes.clear();
        self.shared.outgoing.notify();
    }

    /// The Rust group committer's queue (None with an external store).
    pub fn committer(&self) -> Option<&CommitQueue> {
        self.committer.as_deref()
    }

    pub fn running(&self) -> bool {
        !self.threads.is_empty()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
