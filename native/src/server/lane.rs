//! A lane: one listening socket, the engine that answers on it, and the thread that runs
//! them (`resume/net/server.py`'s `_recv_loop` + `_service_loop` + `storelink`, in Rust).
//!
//! Per wake-up: the answers other threads posted (durable commits, external lookups),
//! then up to a few batches from the socket -- each: `recvmmsg`, admission per datagram,
//! the engine per admitted datagram, the engine's requests answered (lookups inline from
//! this lane's SQLite connection, accepts to the group committer), `sendmmsg` the replies
//! -- then the engine's timers.  It sleeps in `poll` on the socket and its wake-up socket,
//! never longer than the engine's next deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::admission::Admission;
use super::committer::{CommitJob, CommitQueue};
use super::metrics::{Cache, Commit};
use super::udp::UdpBatch;
use super::{clock, ExternalCommit, Inbound, Outgoing, Shared};
use crate::events::{ResponderEvent, SaPair};
use crate::ordered::OrderedMap;
use crate::responder::Responder;
use crate::store::sqlite::{Accept, InstallRow, Reader};
use crate::store::{Lookup, StoreError};

/// Bound on the latency bookkeeping and the remembered misses (`storelink.MAX_TRACKED`).
const MAX_TRACKED: usize = 65536;
/// Batches read per wake-up before the posted answers and timers get their turn.
const BATCHES_PER_WAKE: usize = 8;
/// Longest sleep: the stop flag and the published snapshot never wait longer.
const MAX_SLEEP_MS: u16 = 100;

pub enum LaneStore {
    Sqlite(Box<Reader>),
    External,
}

pub struct Lane {
    idx: usize,
    /// the bound socket, its NAT-T framing and batch size (the batch buffers and kernel
    /// headers are made on the lane's own thread: they hold raw pointers)
    sock: Option<(std::net::UdpSocket, bool, usize)>,
    wake_rx: UnixDatagram,
    engine: Responder<SocketAddr>,
    admission: Admission,
    store: LaneStore,
    committer: Option<Arc<CommitQueue>>,
    miss_seconds: f64,
    /// the install outbox's node name when the service installs SAs
    install_node: Option<Arc<str>>,
    shared: Arc<Shared>,
    /// handle -> until when it is answered "unknown" without reading the store
    misses: OrderedMap<Box<[u8]>, f64>,
    /// handle -> when its accept was handed to the store (message 3 -> durable commit)
    started: HashMap<Vec<u8>, f64>,
    /// token -> handle of lookups handed to an external store (to remember a miss)
    asked: HashMap<u64, Vec<u8>>,
    out: Vec<(Vec<u8>, SocketAddr)>,
    out_sent: usize,
    inbox: Vec<Inbound>,
}

impl Lane {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        idx: usize,
        sock: std::net::UdpSocket,
        natt: bool,
        batch: usize,
        wake_rx: UnixDatagram,
        engine: Responder<SocketAddr>,
        admission: Admission,
        store: LaneStore,
        miss_seconds: f64,
        install_node: Option<Arc<str>>,
        shared: Arc<Shared>,
    ) -> Self {
        Lane {
            idx,
            sock: Some((sock, natt, batch)),
            wake_rx,
            engine,
            admission,
            store,
            committer: None,
            miss_seconds,
            install_node,
            shared,
            misses: OrderedMap::new(),
            started: HashMap::new(),
            asked: HashMap::new(),
            out: Vec::with_capacity(2 * batch),
            out_sent: 0,
            inbox: Vec::new(),
        }
    }

    pub fn index(&self) -> usize {
        self.idx
    }

    pub fn set_committer(&mut self, q: Arc<CommitQueue>) {
        self.committer = Some(q);
    }

    pub fn run(mut self) {
        let Some((sock, natt, batch)) = self.sock.take() else {
            return;
        };
        let mut udp = UdpBatch::from_socket(sock, natt, batch);
        let shared = Arc::clone(&self.shared);
        loop {
            if shared.stop.load(Ordering::Acquire) {
                let now = clock();
                self.answers(now);
                self.flush(&mut udp, now);
                self.publish(&udp);
                break;
            }
            if shared.inject_panic.swap(false, Ordering::AcqRel) {
                panic!("injected by the panic test hook");
            }
            let (readable, woken) = self.wait(&udp);
            let now = clock();
            if woken {
                let mut b = [0u8; 64];
                while self.wake_rx.recv(&mut b).is_ok() {}
            }
            self.answers(now);
            if readable {
                for _ in 0..BATCHES_PER_WAKE {
                    let n = udp.recv();
                    if n == 0 {
                        break;
                    }
                    let now = clock();
                    self.batch(&udp, n, now);
                    self.flush(&mut udp, now);
                    if n < udp.batch() {
                        break;
                    }
                }
            }
            let now = clock();
            if self.engine.get_timer().is_some_and(|t| t <= now) {
                let _ = self.engine.handle_timer(now);
                self.pump(now);
            }
            self.flush(&mut udp, now);
            self.publish(&udp);
        }
    }

    /// Sleep until the socket is readable (or writable, with replies waiting), a wake-up
    /// is posted, or the engine's next deadline.  (readable, woken)
    fn wait(&mut self, udp: &UdpBatch) -> (bool, bool) {
        let now = clock();
        let ms = match self.engine.get_timer() {
            Some(t) if t <= now => 0,
            Some(t) => ((t - now) * 1000.0).ceil().min(f64::from(MAX_SLEEP_MS)) as u16,
            None => MAX_SLEEP_MS,
        };
        let want_out = self.out_sent < self.out.len();
        let mut sock_ev = PollFlags::POLLIN;
        if want_out {
            sock_ev |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(udp.as_fd(), sock_ev),
            PollFd::new(self.wake_rx.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::from(ms)).is_err() {
            return (false, false); // EINTR: go round
        }
        let r = |f: &PollFd<'_>| f.revents().unwrap_or(PollFlags::empty());
        let s = r(&fds[0]);
        let w = r(&fds[1]);
        (
            s.intersects(PollFlags::POLLIN | PollFlags::POLLERR),
            w.contains(PollFlags::POLLIN),
        )
    }

    /// One received batch through admission and the engine.
    fn batch(&mut self, udp: &UdpBatch, n: usize, now: f64) {
        let sh = &self.shared;
        sh.touch(now);
        if let Some(l) = sh.lanes.get(self.idx) {
            l.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.admission.draining = sh.draining.load(Ordering::Relaxed);
        if let LaneStore::Sqlite(r) = &mut self.store {
            r.batch_start();
        }
        let mut pending = self.engine.pending();
        for (data, addr) in udp.received() {
            if let Some(d) = self.admission.admit(data, addr.ip(), now, pending) {
                sh.counters.drop(d);
                continue;
            }
            // errs only for a bad `now`, which the clock never gives
            let _ = self.engine.receive_datagram(data, &addr, now);
            pending += 1; // at most: the engine may have answered from its caches
        }
        self.pump(now);
        if let LaneStore::Sqlite(r) = &mut self.store {
            r.batch_end();
        }
    }

    /// Answer every request the engine raised (answers may raise more: message 3).
    fn pump(&mut self, now: f64) {
        while let Some(ev) = self.engine.next_event() {
            match ev {
                ResponderEvent::CredentialNeeded { token, handle, .. } => {
                    self.lookup(token, handle, now)
                }
                ResponderEvent::CommitNeeded {
                    token,
                    handle,
                    generation,
                    successor,
                    sa,
                } => {
                    let addr = self.engine.slot_addr(token);
                    self.commit(token, handle, generation, successor, sa, addr, now)
                }
                ResponderEvent::Complete(c) => {
                    // installs start from the durable commit (the committer), not here
                    let t0 = self.started.remove(&c.handle);
                    let lat = t0.map(|t| (now - t).max(0.0));
                    let lineage = c.successor.lineage();
                    self.shared.counters.resumed(lat, c.ke, lineage);
                }
                ResponderEvent::Failed { reason, handle, .. } => {
                    self.shared.counters.failed(reason);
                    if let Some(h) = handle {
                        self.started.remove(&h);
                    }
                }
            }
        }
    }

    fn lookup(&mut self, token: u64, handle: Vec<u8>, now: f64) {
        if !self.misses.is_empty() && self.misses.get(&handle[..]).is_some_and(|t| *t > now) {
            self.shared.counters.cache(Cache::MissRecent);
            let _ = self.engine.provide_credential(token, None, None, now);
            return;
        }
        match &mut self.store {
            LaneStore::Sqlite(reader) => {
                let answer = reader.lookup(&handle, now);
                self.answer_lookup(token, &handle, answer, now);
            }
            LaneStore::External => {
                self.shared
                    .counters
                    .outstanding_lookups
                    .fetch_add(1, Ordering::Relaxed);
                if self.asked.len() > MAX_TRACKED {
                    self.asked.clear(); // answers never came (the engine timed them out)
                }
                self.asked.insert(token, handle.clone());
                self.shared.outgoing.push(Outgoing::Lookup {
                    lane: self.idx,
                    token,
                    handle,
                    now,
                });
            }
        }
    }

    fn answer_lookup(
        &mut self,
        token: u64,
        handle: &[u8],
        answer: Result<Lookup, StoreError>,
        now: f64,
    ) {
        let c = &self.shared.counters;
        let (cred, lt) = match answer {
            Ok(Lookup::Found(b)) => {
                c.cache(Cache::Hit);
                let (cred, lt) = *b;
                (Some(cred), Some(lt))
            }
            Ok(Lookup::Miss) => {
                c.cache(Cache::Miss);
                if self.miss_seconds > 0.0 {
                    if self.misses.len() >= MAX_TRACKED {
                        self.misses.pop_front();
                    }
                    self.misses
                        .insert_last(handle.into(), now + self.miss_seconds);
                }
                (None, None)
            }
            Ok(Lookup::Refused(_)) => {
                c.cache(Cache::Refused);
                (None, None)
            }
            Err(e) => {
                self.shared.store_failed("lookup", &e);
                c.cache(Cache::Error);
                (None, None)
            }
        };
        let _ = self.engine.provide_credential(token, cred, lt, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        token: u64,
        handle: Vec<u8>,
        generation: u32,
        successor: crate::credential::Credential,
        sa: Box<SaPair>,
        addr: Option<SocketAddr>,
        now: f64,
    ) {
        let c = &self.shared.counters;
        if self.started.len() > MAX_TRACKED {
            self.started.clear();
        }
        match &self.store {
            LaneStore::Sqlite(reader) => {
                let Some(q) = &self.committer else {
                    c.commit(Commit::Error);
                    let _ = self.engine.commit_result(token, false, now);
                    return;
                };
                let params_text = reader.memo().text_of(successor.params());
                let install = match &self.install_node {
                    None => None,
                    Some(node) => match InstallRow::new_uid() {
                        Ok(uid) => Some(Box::new(InstallRow {
                            uid,
                            node: Arc::clone(node),
                            sa: *sa,
                        })),
                        Err(e) => {
                            // no outbox row, no commit: a pair that could not be
                            // installed after a crash is never accepted
                            c.commit(Commit::Error);
                            self.shared.store_failed("commit", &e);
                            let _ = self.engine.commit_result(token, false, now);
                            return;
                        }
                    },
                };
                let job = CommitJob {
                    lane: self.idx,
                    token,
                    accept: Accept {
                        handle: handle.clone(),
                        generation,
                        successor,
                        params_text,
                        now,
                        install,
                    },
                    addr: addr.unwrap_or(
                        self.shared
                            .lanes
                            .get(self.idx)
                            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.addr),
                    ),
                };
                if !q.submit(job) {
                    c.commit(Commit::Error);
                    let _ = self.engine.commit_result(token, false, now);
                    return;
                }
            }
            LaneStore::External => {
                self.shared
                    .outgoing
                    .push(Outgoing::Commit(Box::new(ExternalCommit {
                        lane: self.idx,
                        token,
                        handle: handle.clone(),
                        generation,
                        successor,
                        now,
                        sa: self.install_node.as_ref().map(|_| *sa),
                    })));
            }
        }
        c.outstanding_commits.fetch_add(1, Ordering::Relaxed);
        self.started.insert(handle, now);
    }

    /// Answers other threads posted: durable commits, external lookups.
    fn answers(&mut self, now: f64) {
        let Some(ls) = self.shared.lanes.get(self.idx) else {
            return;
        };
        ls.take_inbox(&mut self.inbox);
        if self.inbox.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.inbox);
        for item in items {
            match item {
                Inbound::Commit { token, result } => {
                    let c = &self.shared.counters;
                    c.outstanding_commits.fetch_sub(1, Ordering::Relaxed);
                    let ok = match result {
                        Ok(true) => {
                            c.commit(Commit::Ok);
                            true
                        }
                        Ok(false) => {
                            c.commit(Commit::Conflict);
                            false
                        }
                        Err(e) => {
                            c.commit(Commit::Error);
                            self.shared.store_failed("commit", &e);
                            false
                        }
                    };
                    let _ = self.engine.commit_result(token, ok, now);
                }
                Inbound::Credential { token, answer } => {
                    self.shared
                        .counters
                        .outstanding_lookups
                        .fetch_sub(1, Ordering::Relaxed);
                    let handle = self.asked.remove(&token).unwrap_or_default();
                    self.answer_lookup(token, &handle, answer, now);
                }
            }
        }
        self.pump(now);
    }

    /// Send what the engine produced; keep the rest when the socket buffer is full.
    fn flush(&mut self, udp: &mut UdpBatch, now: f64) {
        if self.out_sent >= self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        }
        self.engine.drain_datagrams(&mut self.out);
        if self.out_sent >= self.out.len() {
            return;
        }
        let rest = self.out.get(self.out_sent..).unwrap_or(&[]);
        let n = udp.send(rest);
        self.out_sent += n;
        if n > 0 {
            self.shared.touch(now);
        }
        if self.out_sent >= self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        }
    }

    fn publish(&mut self, udp: &UdpBatch) {
        let Some(ls) = self.shared.lanes.get(self.idx) else {
            return;
        };
        if let Ok(mut s) = ls.snapshot.lock() {
            s.engine.clone_from(&self.engine.stats);
            s.udp = udp.stats;
            s.send_errors.clone_from(&udp.send_errors);
            s.pending = self.engine.pending();
            s.response_cache = self.engine.response_cache_len();
            s.mlkem_runs = self.engine.mlkem_runs_len();
        }
    }
}
