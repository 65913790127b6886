//! `resume._native`'s service classes (features `python` + `server`): the responder service
//! core ([`NativeServer`]), the Rust SQLite store on its own ([`NativeSqliteStore`]: the
//! contract tests and the race test's native worker use it), admission on its own
//! ([`NativeAdmission`]: the differential test against `resume/net/admission.py`) and the
//! statements the Rust store runs (`store_sql`).
//!
//! Same rules as the rest of the bindings: every entry point runs inside `guard`
//! (`catch_unwind`), the GIL is released while a call waits or runs a batch, and the
//! service threads never touch a Python object.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use zeroize::Zeroizing;

use super::{
    bytes, guard, lifetimes_from, lifetimes_tuple, lock, stats_py, LifetimesTuple,
    NativeCredential, NativePanic,
};
use crate::credential::Lifetimes;
use crate::events::SaPair;
use crate::responder::ResponderConfig;
use crate::server::admission::{Admission, Drop as DropReason, Limits};
use crate::server::metrics::{CACHE_LABELS, COMMIT_LABELS, FAILURE_REASONS, LATENCY_BUCKETS};
use crate::server::udp::BindOptions;
use crate::server::{
    clock, Committed, Inbound, Outgoing, Server, ServerConfig, SqliteStore, StoreConfig,
};
use crate::store::keys::Keyring;
use crate::store::policy::{Counters, Limit, Policy};
use crate::store::sqlite::{
    Accept, InstallRow, Reader, SqliteOptions, Writer, LOOKUP_SQL, OUTBOX_DELETE_SQL,
    OUTBOX_INSERT_SQL,
};
use crate::store::{Lookup, StoreError};

// --- conversions ------------------------------------------------------------------------------

fn limit(v: &Bound<'_, PyAny>) -> PyResult<Option<Limit>> {
    if v.is_none() {
        return Ok(None);
    }
    // bool is an int in Python: refuse it as the config parser does
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyValueError::new_err(
            "a policy limit is a number, not a boolean",
        ));
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return Ok(Some(Limit::Int(v.extract()?)));
    }
    Ok(Some(Limit::Float(v.extract()?)))
}

/// A policy from a dict of its limits (None, int or float each, as `store.policy.Policy`).
fn policy_from(d: &Bound<'_, PyDict>) -> PyResult<Policy> {
    let get = |k: &str| -> PyResult<Option<Limit>> {
        match d.get_item(k)? {
            Some(v) => limit(&v),
            None => Ok(None),
        }
    };
    Ok(Policy {
        clocked: get("clocked")?,
        established: get("established")?,
        data: get("data")?,
        max_chain_age: get("max_chain_age")?,
        idle: get("idle")?,
        max_resumptions: get("max_resumptions")?,
    })
}

fn keyring_from(keys: Vec<(String, Vec<u8>)>) -> PyResult<Keyring> {
    Keyring::new(
        keys.into_iter()
            .map(|(id, k)| (id, Zeroizing::new(k)))
            .collect(),
    )
    .map_err(PyValueError::new_err)
}

fn sqlite_opts(path: String, synchronous: String, busy_timeout: f64) -> SqliteOptions {
    SqliteOptions {
        path,
        synchronous,
        busy_timeout: Duration::from_secs_f64(busy_timeout.clamp(0.0, 3600.0)),
    }
}

fn host_port(a: &SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

fn lookup_py<'py>(py: Python<'py>, r: Result<Lookup, StoreError>) -> PyResult<Bound<'py, PyTuple>> {
    match r {
        Ok(Lookup::Miss) => PyTuple::new(py, ["miss"]),
        Ok(Lookup::Refused(why)) => PyTuple::new(py, ["refused", why.name()]),
        Ok(Lookup::Found(b)) => {
            let (cred, lt) = *b;
            PyTuple::new(
                py,
                [
                    "found".into_pyobject(py)?.into_any(),
                    Bound::new(py, NativeCredential(cred))?.into_any(),
                    lifetimes_tuple(&lt).into_pyobject(py)?.into_any(),
                ],
            )
        }
        Err(e) => PyTuple::new(py, ["error", e.kind(), e.message()]),
    }
}

fn direction_py<'py>(
    py: Python<'py>,
    d: &crate::keyschedule::DirectionKeys,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            d.spi.into_pyobject(py)?.into_any(),
            bytes(py, &d.encr_key).into_any(),
            bytes(py, &d.integ_key).into_any(),
        ],
    )
}

/// An SA pair as (i_to_r, r_to_i, lifetimes), each direction (spi, encr key, integ key).
fn sa_py<'py>(py: Python<'py>, sa: &SaPair) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            direction_py(py, &sa.i_to_r)?.into_any(),
            direction_py(py, &sa.r_to_i)?.into_any(),
            lifetimes_tuple(&sa.lifetimes).into_pyobject(py)?.into_any(),
        ],
    )
}

/// The SA pair of `sa_py`, from Python (the contract test's outbox rows).
#[allow(clippy::type_complexity)]
fn sa_from(
    t: (
        (u32, Vec<u8>, Vec<u8>),
        (u32, Vec<u8>, Vec<u8>),
        Bound<'_, PyAny>,
    ),
) -> PyResult<SaPair> {
    let dir = |(spi, e, i): (u32, Vec<u8>, Vec<u8>)| crate::keyschedule::DirectionKeys {
        spi,
        encr_key: Zeroizing::new(e),
        integ_key: Zeroizing::new(i),
    };
    let lt: [Option<u64>; 6] = t.2.extract()?;
    Ok(SaPair {
        initiator_side: false,
        i_to_r: dir(t.0),
        r_to_i: dir(t.1),
        lifetimes: Lifetimes {
            soft_seconds: lt[0],
            hard_seconds: lt[1],
            soft_bytes: lt[2],
            hard_bytes: lt[3],
            soft_packets: lt[4],
            hard_packets: lt[5],
        },
    })
}

/// ("committed", uid, handle, generation, successor, addr, i_to_r, r_to_i, lifetimes)
fn committed_py<'py>(py: Python<'py>, c: &Committed) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            "committed".into_pyobject(py)?.into_any(),
            c.uid.as_str().into_pyobject(py)?.into_any(),
            bytes(py, &c.handle).into_any(),
            c.generation.into_pyobject(py)?.into_any(),
            Bound::new(py, NativeCredential(c.successor.clone()))?.into_any(),
            host_port(&c.addr).into_pyobject(py)?.into_any(),
            direction_py(py, &c.sa.i_to_r)?.into_any(),
            direction_py(py, &c.sa.r_to_i)?.into_any(),
            lifetimes_tuple(&c.sa.lifetimes)
                .into_pyobject(py)?
                .into_any(),
        ],
    )
}

fn outgoing_py<'py>(py: Python<'py>, o: Outgoing) -> PyResult<Bound<'py, PyTuple>> {
    match o {
        Outgoing::Committed(c) => committed_py(py, &c),
        Outgoing::Lookup {
            lane,
            token,
            handle,
            now,
        } => PyTuple::new(
            py,
            [
                "lookup".into_pyobject(py)?.into_any(),
                lane.into_pyobject(py)?.into_any(),
                token.into_pyobject(py)?.into_any(),
                bytes(py, &handle).into_any(),
                now.into_pyobject(py)?.into_any(),
            ],
        ),
        Outgoing::Commit(c) => PyTuple::new(
            py,
            [
                "commit".into_pyobject(py)?.into_any(),
                c.lane.into_pyobject(py)?.into_any(),
                c.token.into_pyobject(py)?.into_any(),
                bytes(py, &c.handle).into_any(),
                c.generation.into_pyobject(py)?.into_any(),
                Bound::new(py, NativeCredential(c.successor))?.into_any(),
                c.now.into_pyobject(py)?.into_any(),
                match &c.sa {
                    Some(sa) => sa_py(py, sa)?.into_any(),
                    None => py.None().into_bound(py),
                },
            ],
        ),
        Outgoing::StoreFailed { op, error } => {
            PyTuple::new(py, ["store_failed", op, error.as_str()])
        }
        Outgoing::StoreRecovered => PyTuple::new(py, ["store_recovered"]),
    }
}

fn store_error(kind: &str, message: String) -> StoreError {
    match kind {
        "corrupt" => StoreError::Corrupt(message),
        "key" => StoreError::Key(message),
        _ => StoreError::Unavailable(message),
    }
}

// --- the service ------------------------------------------------------------------------------

/// The responder service core (see `native/src/server/mod.rs`).
#[pyclass(module = "resume._native")]
pub struct NativeServer(Mutex<Server>);

fn server_failure(s: &Server) -> Option<String> {
    s.shared.failure.lock().ok().and_then(|f| f.clone())
}

#[pymethods]
impl NativeServer {
    /// Bind every address and open the store (nothing runs before `start`).  `sqlite`:
    /// None for an external store (Python answers lookups and accepts), else a dict with
    /// path, synchronous, busy_timeout, keys [(id, key)], policy {limit: None|int|float},
    /// group_commit_max, checkpoint_interval, probe_interval.
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (listen, server_secret, *, natt=false, reuse_port=false, buffer_bytes=0, recv_batch=64, allow_x25519=true, require_x25519=false, allow_mlkem=true, require_mlkem=false, require_pq_lineage=false, mlkem_runs_per_tick=65536, mlkem_runs_per_handle=4, cookie_tick_seconds=10.0, response_cache_size=4096, max_pending=1024, lookup_timeout=2.0, completed_cache_size=65536, credential_cache_size=0, per_source_rate=20.0, per_source_burst=40.0, ipv6_prefix=64, max_sources=65536, new_exchange_rate=0.0, limits_max_pending=4096, miss_reuse_seconds=0.0, sqlite=None, install_node=None))]
    fn new(
        py: Python<'_>,
        listen: Vec<(String, u16)>,
        server_secret: Vec<u8>,
        natt: bool,
        reuse_port: bool,
        buffer_bytes: usize,
        recv_batch: usize,
        allow_x25519: bool,
        require_x25519: bool,
        allow_mlkem: bool,
        require_mlkem: bool,
        require_pq_lineage: bool,
        mlkem_runs_per_tick: usize,
        mlkem_runs_per_handle: usize,
        cookie_tick_seconds: f64,
        response_cache_size: usize,
        max_pending: usize,
        lookup_timeout: f64,
        completed_cache_size: usize,
        credential_cache_size: usize,
        per_source_rate: f64,
        per_source_burst: f64,
        ipv6_prefix: u8,
        max_sources: usize,
        new_exchange_rate: f64,
        limits_max_pending: usize,
        miss_reuse_seconds: f64,
        sqlite: Option<Bound<'_, PyDict>>,
        install_node: Option<String>,
    ) -> PyResult<Self> {
        let mut addrs = Vec::new();
        for (host, port) in listen {
            let bare = host.split_once('%').map_or(host.as_str(), |(a, _)| a);
            let ip: IpAddr = bare
                .parse()
                .map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
            addrs.push(SocketAddr::new(ip, port));
        }
        let store = match sqlite {
            None => StoreConfig::External,
            Some(d) => {
                let req = |k: &str| -> PyResult<Bound<'_, PyAny>> {
                    d.get_item(k)?
                        .ok_or_else(|| PyValueError::new_err(format!("sqlite: missing {k:?}")))
                };
                let policy_d = req("policy")?;
                let policy = policy_from(policy_d.cast::<PyDict>()?)?;
                let keys: Vec<(String, Vec<u8>)> = req("keys")?.extract()?;
                StoreConfig::Sqlite(Box::new(SqliteStore {
                    opts: sqlite_opts(
                        req("path")?.extract()?,
                        req("synchronous")?.extract()?,
                        req("busy_timeout")?.extract()?,
                    ),
                    keyring: Arc::new(keyring_from(keys)?),
                    policy,
                    group_commit_max: req("group_commit_max")?.extract()?,
                    checkpoint_interval: Duration::from_secs_f64(
                        req("checkpoint_interval")?
                            .extract::<f64>()?
                            .clamp(0.01, 3600.0),
                    ),
                    probe_interval: Duration::from_secs_f64(
                        req("probe_interval")?.extract::<f64>()?.clamp(0.01, 3600.0),
                    ),
                }))
            }
        };
        let cfg = ServerConfig {
            listen: addrs,
            bind: BindOptions {
                natt,
                reuse_port,
                buffer_bytes,
                batch: recv_batch,
            },
            server_secret: Zeroizing::new(server_secret),
            responder: ResponderConfig {
                allow_x25519,
                require_x25519,
                allow_mlkem,
                require_mlkem,
                require_pq_lineage,
                mlkem_runs_per_tick,
                mlkem_runs_per_handle,
                cookie_tick_seconds,
                response_cache_size,
                max_pending,
                lookup_timeout,
                completed_cache_size,
                credential_cache_size,
                default_lifetimes: Lifetimes::default(),
            },
            limits: Limits {
                per_source_rate,
                per_source_burst,
                ipv6_prefix,
                max_sources,
                new_exchange_rate,
                max_pending: limits_max_pending,
            },
            miss_reuse_seconds,
            store,
            install_node: install_node.map(Arc::from),
        };
        let server = py
            .detach(|| guard(|| Server::bind(cfg)))?
            .map_err(PyOSError::new_err)?;
        Ok(NativeServer(Mutex::new(server)))
    }

    /// The bound addresses, as (host, port).
    fn addresses(&self) -> PyResult<Vec<(String, u16)>> {
        Ok(lock(&self.0)?.addrs.iter().map(host_port).collect())
    }

    /// The sockets' file descriptors (Python dups them for socket options and names).
    fn filenos(&self) -> PyResult<Vec<i32>> {
        Ok(lock(&self.0)?.fds.clone())
    }

    fn lane_names(&self) -> PyResult<Vec<String>> {
        Ok(lock(&self.0)?
            .shared
            .lanes
            .iter()
            .map(|l| l.name.clone())
            .collect())
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let m = &self.0;
        py.detach(|| guard(|| lock(m).map(|mut s| s.start())))??
            .map_err(PyOSError::new_err)
    }

    /// Refuse new exchanges (message 1); message 3s are still served.
    fn drain(&self) -> PyResult<()> {
        lock(&self.0)?
            .shared
            .draining
            .store(true, Ordering::Release);
        Ok(())
    }

    /// Stop every thread (queued accepts are committed first); blocks, GIL released.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let m = &self.0;
        py.detach(|| guard(|| lock(m).map(|mut s| s.stop())))??;
        Ok(())
    }

    /// Up to `max` queued items for Python, waiting up to `timeout` s (GIL released).
    #[pyo3(signature = (timeout, max=4096))]
    fn wait_events<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        max: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let shared = Arc::clone(&lock(&self.0)?.shared);
        let t = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        let items = py.detach(|| guard(|| shared.outgoing.wait(t, max)))?;
        let out = items
            .into_iter()
            .map(|o| outgoing_py(py, o))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, out)
    }

    /// External store answers: (lane, token, status, credential, lifetimes, message) with
    /// status "found" | "miss" | "refused" | "corrupt" | "key" | "unavailable".
    #[allow(clippy::type_complexity)]
    fn answer_lookups(
        &self,
        items: Vec<(
            usize,
            u64,
            String,
            Option<PyRef<'_, NativeCredential>>,
            Option<LifetimesTuple>,
            String,
        )>,
    ) -> PyResult<()> {
        let s = lock(&self.0)?;
        let mut by_lane: Vec<Vec<Inbound>> = s.shared.lanes.iter().map(|_| Vec::new()).collect();
        for (lane, token, status, cred, lt, msg) in items {
            let answer = match (status.as_str(), cred) {
                ("found", Some(c)) => Ok(Lookup::Found(Box::new((
                    c.0.clone(),
                    lt.map(lifetimes_from).unwrap_or_default(),
                )))),
                ("miss", _) => Ok(Lookup::Miss),
                ("refused", _) => Ok(Lookup::Refused(crate::store::policy::Refusal::Clocked)),
                (kind, _) => Err(store_error(kind, msg)),
            };
            if let Some(v) = by_lane.get_mut(lane) {
                v.push(Inbound::Credential { token, answer });
            }
        }
        for (l, items) in s.shared.lanes.iter().zip(by_lane) {
            if !items.is_empty() {
                l.post(items);
            }
        }
        Ok(())
    }

    /// External store answers: (lane, token, won) with won None when the commit failed.
    fn answer_commits(&self, items: Vec<(usize, u64, Option<bool>, String)>) -> PyResult<()> {
        let s = lock(&self.0)?;
        let mut by_lane: Vec<Vec<Inbound>> = s.shared.lanes.iter().map(|_| Vec::new()).collect();
        for (lane, token, won, msg) in items {
            let result = won.ok_or(StoreError::Unavailable(msg));
            if let Some(v) = by_lane.get_mut(lane) {
                v.push(Inbound::Commit { token, result });
            }
        }
        if !by_lane.iter().all(Vec::is_empty) {
            s.shared
                .counters
                .commit_batches
                .fetch_add(1, Ordering::Relaxed);
        }
        for (l, items) in s.shared.lanes.iter().zip(by_lane) {
            if !items.is_empty() {
                l.post(items);
            }
        }
        Ok(())
    }

    /// Install-outbox rows whose install finished: deleted with the group committer's next
    /// transaction (nobody waits; a row a crash keeps is re-installed at start-up).  False
    /// when there is no Rust committer (an external store) or it has stopped.
    fn forget_installs(&self, uids: Vec<String>) -> PyResult<bool> {
        let s = lock(&self.0)?;
        Ok(s.committer().is_some_and(|q| q.forget(uids)))
    }

    /// External store health (Python probes it).
    fn set_store_ok(&self, ok: bool) -> PyResult<()> {
        lock(&self.0)?.shared.store_ok.store(ok, Ordering::Release);
        Ok(())
    }

    #[getter]
    fn store_ok(&self) -> PyResult<bool> {
        Ok(lock(&self.0)?.shared.store_ok.load(Ordering::Acquire))
    }

    #[getter]
    fn pending(&self) -> PyResult<usize> {
        let s = lock(&self.0)?;
        Ok(s.shared
            .lanes
            .iter()
            .map(|l| l.snapshot.lock().map(|x| x.pending).unwrap_or(0))
            .sum())
    }

    /// Accepts and lookups handed to a store and not answered yet.
    #[getter]
    fn outstanding(&self) -> PyResult<i64> {
        let c = &lock(&self.0)?.shared.counters;
        Ok(c.outstanding_commits.load(Ordering::Relaxed)
            + c.outstanding_lookups.load(Ordering::Relaxed))
    }

    #[getter]
    fn outstanding_commits(&self) -> PyResult<i64> {
        Ok(lock(&self.0)?
            .shared
            .counters
            .outstanding_commits
            .load(Ordering::Relaxed))
    }

    /// Seconds since a datagram was last received or sent.
    fn idle_seconds(&self) -> PyResult<f64> {
        Ok(lock(&self.0)?.shared.idle_seconds(clock()))
    }

    /// The first panic of a service thread (the service is then stopped), or None.
    #[getter]
    fn failure(&self) -> PyResult<Option<String>> {
        Ok(server_failure(&*lock(&self.0)?))
    }

    #[getter]
    fn running(&self) -> PyResult<bool> {
        Ok(lock(&self.0)?.running())
    }

    fn set_latency_sampling(&self, on: bool) -> PyResult<()> {
        lock(&self.0)?
            .shared
            .counters
            .sampling
            .store(on, Ordering::Relaxed);
        Ok(())
    }

    fn take_latency_samples(&self) -> PyResult<Vec<f64>> {
        let s = lock(&self.0)?;
        let mut g = s
            .shared
            .counters
            .samples
            .lock()
            .map_err(|_| NativePanic::new_err("latency samples poisoned"))?;
        Ok(std::mem::take(&mut *g))
    }

    /// Test hook: the next lane iteration panics (the catch must hold).
    fn _inject_panic(&self) -> PyResult<()> {
        let s = lock(&self.0)?;
        s.shared.inject_panic.store(true, Ordering::Release);
        for l in &s.shared.lanes {
            l.wake();
        }
        Ok(())
    }

    /// Every counter, for `/metrics` (names and labels of `resume/net/metrics.py`).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = lock(&self.0)?;
        let sh = &s.shared;
        let c = &sh.counters;
        let ld = |o: &std::sync::atomic::AtomicU64| o.load(Ordering::Relaxed);
        let d = PyDict::new(py);
        let drops = PyDict::new(py);
        for r in DropReason::ALL {
            let v = c.drops.get(r as usize).map_or(0, ld);
            if v > 0 {
                drops.set_item(r.name(), v)?;
            }
        }
        d.set_item("drops", drops)?;
        let ex = PyDict::new(py);
        ex.set_item("resumed", ld(&c.resumed))?;
        for (name, v) in FAILURE_REASONS.iter().zip(&c.failed) {
            if ld(v) > 0 {
                ex.set_item(*name, ld(v))?;
            }
        }
        d.set_item("exchanges", ex)?;
        let cache = PyDict::new(py);
        for (name, v) in CACHE_LABELS.iter().zip(&c.cache) {
            if ld(v) > 0 {
                cache.set_item(*name, ld(v))?;
            }
        }
        d.set_item("cache", cache)?;
        let commits = PyDict::new(py);
        for (name, v) in COMMIT_LABELS.iter().zip(&c.commits) {
            if ld(v) > 0 {
                commits.set_item(*name, ld(v))?;
            }
        }
        d.set_item("commits", commits)?;
        d.set_item("commit_batches", ld(&c.commit_batches))?;
        d.set_item("forgotten", ld(&c.forgotten))?;
        d.set_item("resumptions", c.resumptions())?;
        let counts: Vec<u64> = c.latency.counts.iter().map(ld).collect();
        d.set_item(
            "latency",
            (
                LATENCY_BUCKETS.to_vec(),
                counts,
                ld(&c.latency.sum_ns) as f64 / 1e9,
            ),
        )?;
        d.set_item(
            "outstanding_commits",
            c.outstanding_commits.load(Ordering::Relaxed),
        )?;
        d.set_item(
            "outstanding_lookups",
            c.outstanding_lookups.load(Ordering::Relaxed),
        )?;
        d.set_item("store_ok", sh.store_ok.load(Ordering::Acquire))?;
        let lanes = PyList::empty(py);
        for l in &sh.lanes {
            let snap = l
                .snapshot
                .lock()
                .map_err(|_| NativePanic::new_err("lane snapshot poisoned"))?
                .clone();
            let ld_ = PyDict::new(py);
            ld_.set_item("name", &l.name)?;
            ld_.set_item("received", l.received.load(Ordering::Relaxed))?;
            ld_.set_item("engine", stats_py(py, &snap.engine)?)?;
            ld_.set_item("pending", snap.pending)?;
            ld_.set_item("response_cache", snap.response_cache)?;
            ld_.set_item("mlkem_runs", snap.mlkem_runs)?;
            let u = PyDict::new(py);
            let st = snap.udp;
            u.set_item("received", st.received)?;
            u.set_item("sent", st.sent)?;
            for (k, v) in [
                ("natt_not_ike", st.natt_not_ike),
                ("natt_keepalive", st.natt_keepalive),
                ("socket_error", st.socket_error),
            ] {
                if v > 0 {
                    u.set_item(k, v)?;
                }
            }
            for (k, v) in &snap.send_errors {
                u.set_item(*k, *v)?;
            }
            ld_.set_item("udp", u)?;
            lanes.append(ld_)?;
        }
        d.set_item("lanes", lanes)?;
        Ok(d)
    }
}

// --- the store on its own ----------------------------------------------------------------------

/// The Rust SQLite store outside a service: lookups and group commits on the calling
/// thread (GIL released).  For the contract tests and the race test's native worker.
#[pyclass(module = "resume._native")]
pub struct NativeSqliteStore {
    reader: Mutex<Reader>,
    writer: Mutex<Writer>,
}

#[pymethods]
impl NativeSqliteStore {
    #[new]
    #[pyo3(signature = (path, keys, policy, *, synchronous="FULL".to_owned(), busy_timeout=5.0))]
    fn new(
        py: Python<'_>,
        path: String,
        keys: Vec<(String, Vec<u8>)>,
        policy: Bound<'_, PyDict>,
        synchronous: String,
        busy_timeout: f64,
    ) -> PyResult<Self> {
        let opts = sqlite_opts(path, synchronous, busy_timeout);
        let kr = Arc::new(keyring_from(keys)?);
        let policy = policy_from(&policy)?;
        let (reader, writer) = py
            .detach(|| {
                guard(|| -> Result<_, StoreError> {
                    let mut r = Reader::new(opts.clone(), Arc::clone(&kr), policy);
                    r.open()?;
                    let mut w = Writer::new(opts, kr, &policy);
                    w.open()?;
                    Ok((r, w))
                })
            })?
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(NativeSqliteStore {
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        })
    }

    /// ("found", NativeCredential, lifetimes) | ("miss",) | ("refused", reason) |
    /// ("error", kind, message)
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        handle: Vec<u8>,
        now: f64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let m = &self.reader;
        let r = py.detach(|| guard(|| lock(m).map(|mut r| r.lookup(&handle, now))))??;
        lookup_py(py, r)
    }

    /// Several lookups in one read transaction (as a lane does per received batch).
    fn lookup_batch<'py>(
        &self,
        py: Python<'py>,
        handles: Vec<Vec<u8>>,
        now: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let m = &self.reader;
        let rs = py.detach(|| {
            guard(|| {
                lock(m).map(|mut r| {
                    r.batch_start();
                    let out: Vec<_> = handles.iter().map(|h| r.lookup(h, now)).collect();
                    r.batch_end();
                    out
                })
            })
        })??;
        let items = rs
            .into_iter()
            .map(|r| lookup_py(py, r))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// One transaction: [(handle, generation, successor, params_text | None, now,
    /// install | None)] -> [won], with install = (uid, node, (i_to_r, r_to_i, lifetimes)),
    /// and the install-outbox rows `forget` deleted in it; raises OSError ("kind: message")
    /// when nothing was committed.
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (reqs, forget=Vec::new()))]
    fn commit_many(
        &self,
        py: Python<'_>,
        reqs: Vec<(
            Vec<u8>,
            u32,
            PyRef<'_, NativeCredential>,
            Option<String>,
            f64,
            Option<(String, String, Bound<'_, PyTuple>)>,
        )>,
        forget: Vec<String>,
    ) -> PyResult<Vec<bool>> {
        let accepts: Vec<Accept> = {
            let r = lock(&self.reader)?;
            let mut out = Vec::with_capacity(reqs.len());
            for (handle, generation, succ, text, now, install) in reqs {
                let install = match install {
                    None => None,
                    Some((uid, node, sa)) => Some(Box::new(InstallRow {
                        uid,
                        node: Arc::from(node),
                        sa: sa_from(sa.extract()?)?,
                    })),
                };
                out.push(Accept {
                    handle,
                    generation,
                    params_text: match text {
                        Some(t) => Arc::from(t),
                        None => r.memo().text_of(succ.0.params()),
                    },
                    successor: succ.0.clone(),
                    now,
                    install,
                });
            }
            out
        };
        let m = &self.writer;
        py.detach(|| guard(|| lock(m).map(|mut w| w.commit(&accepts, &forget))))??
            .map_err(|e| PyOSError::new_err(format!("{}: {}", e.kind(), e.message())))
    }

    /// The install outbox's statements: (insert, delete).
    #[getter]
    fn outbox_sql(&self) -> (&'static str, &'static str) {
        (OUTBOX_INSERT_SQL, OUTBOX_DELETE_SQL)
    }

    #[getter]
    fn ratchet_sql(&self) -> PyResult<String> {
        Ok(lock(&self.writer)?.ratchet_sql().to_owned())
    }
}

/// The statements the Rust store runs for `policy` (the contract test compares them with
/// the Python store's): {"lookup": ..., "ratchet": ...}.
#[pyfunction]
pub fn store_sql<'py>(py: Python<'py>, policy: Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let p = policy_from(&policy)?;
    let w = Writer::new(
        sqlite_opts(String::new(), "FULL".into(), 0.0),
        Arc::new(keyring_from(vec![("k".into(), vec![0u8; 32])])?),
        &p,
    );
    let d = PyDict::new(py);
    d.set_item("lookup", LOOKUP_SQL)?;
    d.set_item("ratchet", w.ratchet_sql())?;
    Ok(d)
}

/// `Policy.check` and `Policy.sa_lifetimes` in Rust: (refusal name | None, lifetimes).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn policy_check(
    policy: Bound<'_, PyDict>,
    full_ike_at: f64,
    last_used_at: f64,
    established_s: f64,
    bytes_total: i64,
    resumptions: i64,
    now: f64,
) -> PyResult<(Option<&'static str>, LifetimesTuple)> {
    let p = policy_from(&policy)?;
    let c = Counters {
        full_ike_at,
        last_used_at,
        established_s,
        bytes_total,
        resumptions,
    };
    guard(|| {
        (
            p.check(&c, now).map(|r| r.name()),
            lifetimes_tuple(&p.sa_lifetimes(&c, now)),
        )
    })
}

/// Admission on its own (the differential test drives it beside the Python one).
#[pyclass(module = "resume._native")]
pub struct NativeAdmission(Mutex<Admission>);

#[pymethods]
impl NativeAdmission {
    #[new]
    #[pyo3(signature = (per_source_rate, per_source_burst, ipv6_prefix=64, max_sources=65536, new_exchange_rate=0.0, max_pending=4096))]
    fn new(
        per_source_rate: f64,
        per_source_burst: f64,
        ipv6_prefix: u8,
        max_sources: usize,
        new_exchange_rate: f64,
        max_pending: usize,
    ) -> Self {
        NativeAdmission(Mutex::new(Admission::new(&Limits {
            per_source_rate,
            per_source_burst,
            ipv6_prefix,
            max_sources,
            new_exchange_rate,
            max_pending,
        })))
    }

    /// The drop reason, or None to admit.
    fn admit(
        &self,
        data: &[u8],
        host: &str,
        now: f64,
        pending: usize,
    ) -> PyResult<Option<&'static str>> {
        let bare = host.split_once('%').map_or(host, |(a, _)| a);
        let ip: IpAddr = bare
            .parse()
            .map_err(|_| PyValueError::new_err(format!("{host:?} is not an IP address")))?;
        let mut a = lock(&self.0)?;
        guard(|| a.admit(data, ip, now, pending).map(DropReason::name))
    }

    #[setter]
    fn set_draining(&self, on: bool) -> PyResult<()> {
        lock(&self.0)?.draining = on;
        Ok(())
    }

    #[getter]
    fn sources(&self) -> PyResult<usize> {
        Ok(lock(&self.0)?.sources.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeServer>()?;
    m.add_class::<NativeSqliteStore>()?;
    m.add_class::<NativeAdmission>()?;
    m.add_function(wrap_pyfunction!(store_sql, m)?)?;
    m.add_function(wrap_pyfunction!(policy_check, m)?)?;
    Ok(())
}
