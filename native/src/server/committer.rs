//! Group commit (the Rust twin of `store/committer.py`): many accepts, one transaction.
//!
//! A durable commit costs an fsync whatever it carries, so one thread owns the writes:
//! while one transaction is being made durable, new accepts queue up and the next
//! transaction takes all of them (up to `group_commit_max`).  No accept is answered before
//! the transaction holding its row has committed; if the commit fails, every accept of that
//! batch is answered with the error (the engine NACKs, the peer runs a full IKE).  Nothing
//! waits artificially to fill a batch.
//!
//! The maintenance thread runs WAL checkpoints (PASSIVE then RESTART, as
//! `_Checkpointer` does: never inside a commit) and the health probe that brings the
//! service back to ready after a store outage.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Committed, Inbound, Outgoing, Shared};
use crate::store::sqlite::{Accept, Maintenance, SqliteOptions, Writer};
use crate::store::StoreError;

/// One accept and where its answer goes.
pub struct CommitJob {
    pub lane: usize,
    pub token: u64,
    pub accept: Accept,
    /// the peer (reported with the pair to install)
    pub addr: SocketAddr,
}

#[derive(Default)]
struct QueueInner {
    jobs: VecDeque<CommitJob>,
    /// install-outbox rows to delete (installed)
    forget: Vec<String>,
    closed: bool,
}

/// The committer's queue: lanes push, the committer thread takes batches.
#[derive(Default)]
pub struct CommitQueue {
    inner: Mutex<QueueInner>,
    cv: Condvar,
}

impl CommitQueue {
    /// Queue an accept; false (the accept is dropped) when the committer has stopped.
    pub fn submit(&self, job: CommitJob) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        if g.closed {
            return false;
        }
        let was_empty = g.jobs.is_empty();
        g.jobs.push_back(job);
        drop(g);
        if was_empty {
            self.cv.notify_one();
        }
        true
    }

    /// Delete these install-outbox rows with the next transaction (false: stopped).
    pub fn forget(&self, uids: Vec<String>) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return false;
        };
        if g.closed {
            return false;
        }
        let was_empty = g.jobs.is_empty() && g.forget.is_empty();
        g.forget.extend(uids);
        drop(g);
        if was_empty {
            self.cv.notify_one();
        }
        true
    }

    /// Accept nothing more; the thread commits what is queued, then exits.
    pub fn close(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.closed = true;
        }
        self.cv.notify_all();
    }

    /// The next batch and the rows to forget (blocks); None once closed and empty.
    fn take(&self, max: usize) -> Option<(Vec<CommitJob>, Vec<String>)> {
        let mut g = self.inner.lock().ok()?;
        while g.jobs.is_empty() && g.forget.is_empty() && !g.closed {
            g = self.cv.wait(g).ok()?;
        }
        if g.jobs.is_empty() && g.forget.is_empty() {
            return None;
        }
        let n = g.jobs.len().min(max.max(1));
        let forget = std::mem::take(&mut g.forget);
        Some((g.jobs.drain(..n).collect(), forget))
    }
}

/// The committer thread's body.
pub fn run(shared: Arc<Shared>, queue: Arc<CommitQueue>, mut writer: Writer, max_batch: usize) {
    let mut by_lane: Vec<Vec<Inbound>> = shared.lanes.iter().map(|_| Vec::new()).collect();
    while let Some((batch, forget)) = queue.take(max_batch) {
        let t_dbg = Instant::now();
        let r_dbg = writer.commit_iter(batch.iter().map(|j| &j.accept), &forget);
        if std::env::var_os("IKR_DEBUG_COMMIT").is_some() {
            eprintln!(
                "commit rows={} forget={} ms={:.2}",
                batch.len(),
                forget.len(),
                t_dbg.elapsed().as_secs_f64() * 1e3
            );
        }
        shared
            .counters
            .forgotten
            .store(writer.forgotten, Ordering::Relaxed);
        if batch.is_empty() {
            // deletions alone: on failure the rows stay and are re-installed
            // (idempotently) at the next start-up
            continue;
        }
        let results: Vec<Result<bool, StoreError>> = match r_dbg {
            Ok(won) => {
                shared
                    .counters
                    .commit_batches
                    .fetch_add(1, Ordering::Relaxed);
                won.into_iter().map(Ok).collect()
            }
            Err(e) => {
                shared.store_failed("commit", &e);
                batch.iter().map(|_| Err(e.clone())).collect()
            }
        };
        for (job, result) in batch.into_iter().zip(results) {
            let CommitJob {
                lane,
                token,
                accept,
                addr,
            } = job;
            if let (Ok(true), Some(row)) = (&result, accept.install) {
                shared
                    .outgoing
                    .push(Outgoing::Committed(Box::new(Committed {
                        uid: row.uid,
                        sa: row.sa,
                        handle: accept.handle,
                        generation: accept.generation,
                        successor: accept.successor,
                        addr,
                    })));
            }
            if let Some(v) = by_lane.get_mut(lane) {
                v.push(Inbound::Commit { token, result });
            }
        }
        for (lane, items) in shared.lanes.iter().zip(by_lane.iter_mut()) {
            if !items.is_empty() {
                lane.post(items.drain(..));
            }
        }
    }
}

/// The maintenance thread's body: checkpoints every `ckpt`, a probe every `probe`.
pub fn maintenance(
    shared: Arc<Shared>,
    opts: SqliteOptions,
    ckpt: Duration,
    probe: Duration,
    stop: Arc<(Mutex<bool>, Condvar)>,
) {
    let mut m = Maintenance::new(opts);
    let mut next_probe = Instant::now() + probe;
    let tick = ckpt.min(probe).max(Duration::from_millis(10));
    loop {
        {
            let (lock, cv) = &*stop;
            let Ok(g) = lock.lock() else {
                return;
            };
            if *g {
                break;
            }
            let Ok((g, _)) = cv.wait_timeout(g, tick) else {
                return;
            };
            if *g {
                break;
            }
        }
        let _ = m.checkpoint(); // busy: the next round retries
        if Instant::now() >= next_probe {
            next_probe = Instant::now() + probe;
            match m.probe() {
                Ok(()) => shared.store_recovered(),
                Err(e) => shared.store_failed("probe", &e),
            }
        }
    }
    let _ = m.checkpoint();
}
