//! `resume._native`: the pyo3 bindings (feature `python`).
//!
//! Rules this module keeps:
//! * Every entry point runs its Rust work inside [`guard`], a `catch_unwind` that turns a
//!   panic into the Python exception `NativePanic` (a `RuntimeError`); the engine behind a
//!   `Mutex` is then poisoned and refuses further calls.  The code is written not to panic;
//!   the guard is the second wall (tests call `_panic_probe` to prove it holds).
//! * The batch entry points (`Responder.process`) convert every input to Rust data first,
//!   then release the GIL (`Python::detach`) for the whole batch, then build the Python
//!   outputs: no Python object is touched per datagram while the engine runs.
//! * Decoding errors raise the application's `DecodeError` and API misuse its
//!   `LocalProtocolError` (registered once by `resume/native.py` through
//!   `_set_error_types`; `ValueError`/`RuntimeError` until then).

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple, PyType};

use crate::credential::{
    parse_ip, Credential, Lifetimes, Lineage, ProtocolMode, SaParams, TrafficSelector,
};
use crate::events::{Completion, InitiatorEvent, LocalError, ResponderEvent};
use crate::initiator::{Initiator, InitiatorConfig, MlKemPolicy};
use crate::keyschedule::{self as ks, MlKemKey, PeerAddr, X25519Key};
use crate::messages::{self as msg, Request, Response, ResumeSa};
use crate::responder::{Responder, ResponderConfig};
use crate::rng::RandomSource;
use crate::stats::Stats;
use crate::wire::{self, DecodeError, Header};

#[cfg(feature = "server")]
#[path = "python_server.rs"]
mod server;

create_exception!(
    _native,
    NativePanic,
    PyRuntimeError,
    "A panic inside the native core (a bug): the object that raised it is unusable."
);

static ERROR_TYPES: Mutex<Option<(Py<PyType>, Py<PyType>)>> = Mutex::new(None);

fn error_types(py: Python<'_>) -> Option<(Bound<'_, PyType>, Bound<'_, PyType>)> {
    let g = ERROR_TYPES.lock().ok()?;
    g.as_ref()
        .map(|(d, l)| (d.bind(py).clone(), l.bind(py).clone()))
}

fn decode_err(py: Python<'_>, e: DecodeError) -> PyErr {
    match error_types(py) {
        Some((d, _)) => PyErr::from_type(d, e.0),
        None => PyValueError::new_err(e.0),
    }
}

fn local_err(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    let m: String = msg.into();
    match error_types(py) {
        Some((_, l)) => PyErr::from_type(l, m),
        None => PyRuntimeError::new_err(m),
    }
}

fn from_local(py: Python<'_>, e: LocalError) -> PyErr {
    local_err(py, e.0)
}

/// Register the application's exception types (called once by `resume/native.py`).
#[pyfunction]
fn _set_error_types(
    decode_error: Bound<'_, PyType>,
    local_error: Bound<'_, PyType>,
) -> PyResult<()> {
    let mut g = ERROR_TYPES
        .lock()
        .map_err(|_| PyRuntimeError::new_err("error type registry poisoned"))?;
    *g = Some((decode_error.unbind(), local_error.unbind()));
    Ok(())
}

/// Run `f`, turning a panic into `NativePanic`.
fn guard<T>(f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        NativePanic::new_err(format!("panic in the native core: {what}"))
    })
}

fn lock<'a, T>(m: &'a Mutex<T>) -> PyResult<MutexGuard<'a, T>> {
    m.lock().map_err(|_| {
        NativePanic::new_err("this object is unusable: an earlier call panicked inside it")
    })
}

/// Deliberately panics inside the guard (tests prove the panic becomes `NativePanic`).
#[pyfunction]
fn _panic_probe(inside_detach: bool, py: Python<'_>) -> PyResult<()> {
    if inside_detach {
        py.detach(|| guard(|| panic!("probe")))
    } else {
        guard(|| panic!("probe"))
    }
}

// --- addresses --------------------------------------------------------------------------------

/// A peer address as Python gives it: `(host, port)`.  Equality and hashing are on the
/// original host string (as the Python core's dict keys are); the packed IP is what the
/// responder binds into its values.
#[derive(Clone, Debug)]
pub struct PyAddr {
    host: Arc<str>,
    port: u16,
    ip: IpAddr,
}

impl PartialEq for PyAddr {
    fn eq(&self, o: &Self) -> bool {
        self.port == o.port && self.host == o.host
    }
}
impl Eq for PyAddr {}
impl std::hash::Hash for PyAddr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.host.hash(h);
        self.port.hash(h);
    }
}

impl PeerAddr for PyAddr {
    fn write_addr_bytes(&self, out: &mut Vec<u8>) {
        ks::write_ip_port(&self.ip, self.port, out);
    }
}

fn to_addr(v: &Bound<'_, PyAny>) -> PyResult<PyAddr> {
    let (host, port): (String, u16) = v.extract()?;
    let ip = parse_ip(&host).map_err(|e| PyValueError::new_err(e.0))?;
    Ok(PyAddr {
        host: host.into(),
        port,
        ip,
    })
}

fn addr_py<'py>(py: Python<'py>, a: &PyAddr) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            a.host.as_ref().into_pyobject(py)?.into_any(),
            a.port.into_pyobject(py)?.into_any(),
        ],
    )
}

fn bytes<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, b)
}

// --- data classes -----------------------------------------------------------------------------

type TsTuple = (String, String, u8, u16, u16);

/// SA parameters (`resume.sa.SAParams` without its Python methods).
#[pyclass(module = "resume._native", frozen)]
pub struct Params(Arc<SaParams>);

fn ts_from(t: TsTuple) -> PyResult<TrafficSelector> {
    TrafficSelector::new(&t.0, &t.1, t.2, t.3, t.4).map_err(|e| PyValueError::new_err(e.0))
}

fn ts_tuple(t: &TrafficSelector) -> TsTuple {
    (
        t.start_addr.clone(),
        t.end_addr.clone(),
        t.protocol,
        t.start_port,
        t.end_port,
    )
}

#[pymethods]
impl Params {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (mode, encr, encr_key_bits, integ, initiator_addr, responder_addr, tsi, tsr, natt_initiator_port=None, natt_responder_port=None, replay_window=128))]
    fn new(
        mode: u8,
        encr: u16,
        encr_key_bits: u16,
        integ: u16,
        initiator_addr: &str,
        responder_addr: &str,
        tsi: Vec<TsTuple>,
        tsr: Vec<TsTuple>,
        natt_initiator_port: Option<u16>,
        natt_responder_port: Option<u16>,
        replay_window: u32,
    ) -> PyResult<Self> {
        let tsi = tsi.into_iter().map(ts_from).collect::<PyResult<Vec<_>>>()?;
        let tsr = tsr.into_iter().map(ts_from).collect::<PyResult<Vec<_>>>()?;
        guard(|| {
            SaParams::new(
                mode,
                encr,
                encr_key_bits,
                integ,
                initiator_addr,
                responder_addr,
                tsi,
                tsr,
                natt_initiator_port,
                natt_responder_port,
                replay_window,
            )
        })?
        .map(|p| Params(Arc::new(p)))
        .map_err(|e| PyValueError::new_err(e.0))
    }

    fn params_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.params_bytes())
    }

    fn digest<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.digest())
    }

    /// Identity of the shared Rust value (stable while any credential holds it): lets the
    /// Python glue map it back to the Python object it was made from.
    #[getter]
    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    #[getter]
    fn keymat_len(&self) -> usize {
        self.0.keymat_len()
    }

    /// Every field, for rebuilding the Python object:
    /// (mode, encr, bits, integ, initiator_addr, responder_addr, tsi, tsr, natt_i, natt_r, replay_window).
    #[allow(clippy::type_complexity)]
    fn fields(
        &self,
    ) -> (
        u8,
        u16,
        u16,
        u16,
        String,
        String,
        Vec<TsTuple>,
        Vec<TsTuple>,
        Option<u16>,
        Option<u16>,
        u32,
    ) {
        let p = &self.0;
        (
            p.mode,
            p.encr,
            p.encr_key_bits,
            p.integ,
            p.initiator_addr.clone(),
            p.responder_addr.clone(),
            p.tsi.iter().map(ts_tuple).collect(),
            p.tsr.iter().map(ts_tuple).collect(),
            p.natt_initiator_port,
            p.natt_responder_port,
            p.replay_window,
        )
    }
}

/// One generation of a credential, owned by Rust (the secret is wiped when dropped).
#[pyclass(module = "resume._native", frozen)]
pub struct NativeCredential(Credential);

#[pymethods]
impl NativeCredential {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (hardened, handle, generation, secret, id_i, id_r, params, lineage="unknown"))]
    fn new(
        hardened: bool,
        handle: Vec<u8>,
        generation: u32,
        secret: Vec<u8>,
        id_i: Vec<u8>,
        id_r: Vec<u8>,
        params: &Params,
        lineage: &str,
    ) -> PyResult<Self> {
        let mode = if hardened {
            ProtocolMode::Hardened
        } else {
            ProtocolMode::Paper
        };
        let lineage = Lineage::from_name(lineage)
            .ok_or_else(|| PyValueError::new_err(format!("unknown lineage {lineage:?}")))?;
        Credential::new(
            mode,
            handle,
            generation,
            secret,
            id_i,
            id_r,
            Arc::clone(&params.0),
        )
        .map(|c| NativeCredential(c.with_lineage(lineage)))
        .map_err(|e| PyValueError::new_err(e.0))
    }

    #[getter]
    fn lineage(&self) -> &'static str {
        self.0.lineage().name()
    }

    #[getter]
    fn hardened(&self) -> bool {
        self.0.mode() == ProtocolMode::Hardened
    }
    #[getter]
    fn handle<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.handle())
    }
    #[getter]
    fn generation(&self) -> u32 {
        self.0.generation()
    }
    #[getter]
    fn secret<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.secret())
    }
    #[getter]
    fn id_i<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.id_i())
    }
    #[getter]
    fn id_r<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.id_r())
    }
    #[getter]
    fn params(&self) -> Params {
        Params(Arc::clone(self.0.params()))
    }
    fn __repr__(&self) -> String {
        format!(
            "NativeCredential(generation={}, <secret>)",
            self.0.generation()
        )
    }
}

type LifetimesTuple = (
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

fn lifetimes_from(t: LifetimesTuple) -> Lifetimes {
    Lifetimes {
        soft_seconds: t.0,
        hard_seconds: t.1,
        soft_bytes: t.2,
        hard_bytes: t.3,
        soft_packets: t.4,
        hard_packets: t.5,
    }
}

fn lifetimes_tuple(l: &Lifetimes) -> LifetimesTuple {
    (
        l.soft_seconds,
        l.hard_seconds,
        l.soft_bytes,
        l.hard_bytes,
        l.soft_packets,
        l.hard_packets,
    )
}

fn rng_from(seed: Option<Vec<u8>>, draws: Option<Vec<Vec<u8>>>) -> PyResult<RandomSource> {
    match (seed, draws) {
        (None, None) => Ok(RandomSource::Os),
        (Some(seed), None) => Ok(RandomSource::Seeded { seed, counter: 0 }),
        (None, Some(d)) => Ok(RandomSource::Scripted(d.into())),
        _ => Err(PyValueError::new_err(
            "give rng_seed or rng_draws, not both",
        )),
    }
}

fn completion_py<'py>(py: Python<'py>, c: &Completion<PyAddr>) -> PyResult<Bound<'py, PyTuple>> {
    let sa = &c.sa;
    let dir = |d: &ks::DirectionKeys| -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                d.spi.into_pyobject(py)?.into_any(),
                bytes(py, &d.encr_key).into_any(),
                bytes(py, &d.integ_key).into_any(),
            ],
        )
    };
    PyTuple::new(
        py,
        [
            "complete".into_pyobject(py)?.into_any(),
            bytes(py, &c.handle).into_any(),
            c.generation.into_pyobject(py)?.into_any(),
            Bound::new(py, NativeCredential(c.successor.clone()))?.into_any(),
            addr_py(py, &c.addr)?.into_any(),
            dir(&sa.i_to_r)?.into_any(),
            dir(&sa.r_to_i)?.into_any(),
            lifetimes_tuple(&sa.lifetimes).into_pyobject(py)?.into_any(),
            c.ke.into_pyobject(py)?.into_any(),
        ],
    )
}

fn responder_event_py<'py>(
    py: Python<'py>,
    e: &ResponderEvent<PyAddr>,
) -> PyResult<Bound<'py, PyTuple>> {
    match e {
        ResponderEvent::CredentialNeeded {
            token,
            handle,
            addr,
        } => PyTuple::new(
            py,
            [
                "credential".into_pyobject(py)?.into_any(),
                token.into_pyobject(py)?.into_any(),
                bytes(py, handle).into_any(),
                addr_py(py, addr)?.into_any(),
            ],
        ),
        ResponderEvent::CommitNeeded {
            token,
            handle,
            generation,
            successor,
            ..
        } => PyTuple::new(
            py,
            [
                "commit".into_pyobject(py)?.into_any(),
                token.into_pyobject(py)?.into_any(),
                bytes(py, handle).into_any(),
                generation.into_pyobject(py)?.into_any(),
                Bound::new(py, NativeCredential(successor.clone()))?.into_any(),
            ],
        ),
        ResponderEvent::Complete(c) => completion_py(py, c),
        ResponderEvent::Failed {
            reason,
            handle,
            addr,
        } => PyTuple::new(
            py,
            [
                "failed".into_pyobject(py)?.into_any(),
                reason.into_pyobject(py)?.into_any(),
                match handle {
                    Some(h) => bytes(py, h).into_any(),
                    None => py.None().into_bound(py),
                },
                addr_py(py, addr)?.into_any(),
            ],
        ),
    }
}

fn stats_py<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in s.nonzero() {
        d.set_item(k, v)?;
    }
    Ok(d)
}

fn datagrams_py<'py>(py: Python<'py>, out: &[(Vec<u8>, PyAddr)]) -> PyResult<Bound<'py, PyList>> {
    let items = out
        .iter()
        .map(|(d, a)| PyTuple::new(py, [bytes(py, d).into_any(), addr_py(py, a)?.into_any()]))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

// --- responder --------------------------------------------------------------------------------

/// The hardened-mode responder engine (see `native/src/responder.rs`).
#[pyclass(module = "resume._native")]
pub struct NativeResponder(Mutex<Responder<PyAddr>>);

enum Answer {
    Credential(u64, Option<Box<Credential>>, Option<Lifetimes>),
    Commit(u64, bool),
}

#[pymethods]
impl NativeResponder {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (server_secret, *, allow_x25519=true, require_x25519=false, allow_mlkem=true, require_mlkem=false, require_pq_lineage=false, mlkem_runs_per_tick=65536, mlkem_runs_per_handle=4, cookie_tick_seconds=10.0, response_cache_size=4096, max_pending=1024, lookup_timeout=2.0, completed_cache_size=65536, credential_cache_size=0, default_lifetimes=None, rng_seed=None, rng_draws=None, kem_seed=None, kem_draws=None))]
    fn new(
        py: Python<'_>,
        server_secret: Vec<u8>,
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
        default_lifetimes: Option<LifetimesTuple>,
        rng_seed: Option<Vec<u8>>,
        rng_draws: Option<Vec<Vec<u8>>>,
        kem_seed: Option<Vec<u8>>,
        kem_draws: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Self> {
        let cfg = ResponderConfig {
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
            default_lifetimes: default_lifetimes.map(lifetimes_from).unwrap_or_default(),
        };
        let rng = rng_from(rng_seed, rng_draws)?;
        let kem = rng_from(kem_seed, kem_draws)?;
        guard(|| Responder::new(cfg, &server_secret, rng).map(|r| r.with_kem_source(kem)))?
            .map(|r| NativeResponder(Mutex::new(r)))
            .map_err(|e| from_local(py, e))
    }

    /// One batch: answers (`credentials`: (token, NativeCredential | None, lifetimes | None),
    /// `commits`: (token, ok)) first, then `datagrams` ((bytes, (host, port))), all at `now`
    /// with the GIL released.  Returns (datagrams to send, events).  A misused token raises
    /// LocalProtocolError after the batch ran (the rest of the batch is still processed).
    #[pyo3(signature = (now, datagrams=None, credentials=None, commits=None))]
    fn process<'py>(
        &self,
        py: Python<'py>,
        now: f64,
        datagrams: Option<Bound<'py, PyList>>,
        credentials: Option<Bound<'py, PyList>>,
        commits: Option<Bound<'py, PyList>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let mut answers = Vec::new();
        if let Some(cs) = credentials {
            for item in cs.iter() {
                let (token, cred, lt): (
                    u64,
                    Option<PyRef<'_, NativeCredential>>,
                    Option<LifetimesTuple>,
                ) = item.extract()?;
                answers.push(Answer::Credential(
                    token,
                    cred.map(|c| Box::new(c.0.clone())),
                    lt.map(lifetimes_from),
                ));
            }
        }
        if let Some(cs) = commits {
            for item in cs.iter() {
                let (token, ok): (u64, bool) = item.extract()?;
                answers.push(Answer::Commit(token, ok));
            }
        }
        let mut input = Vec::new();
        if let Some(ds) = datagrams {
            input.reserve(ds.len());
            for item in ds.iter() {
                let (data, addr): (Vec<u8>, Bound<'_, PyAny>) = item.extract()?;
                input.push((data, to_addr(&addr)?));
            }
        }
        let engine = &self.0;
        let (out, events, errors) = py
            .detach(|| {
                guard(|| -> Result<_, String> {
                    let mut r = engine.lock().map_err(|_| "poisoned".to_owned())?;
                    let mut errors: Vec<String> = Vec::new();
                    for a in answers {
                        let res = match a {
                            Answer::Credential(t, c, l) => {
                                r.provide_credential(t, c.map(|b| *b), l, now)
                            }
                            Answer::Commit(t, ok) => r.commit_result(t, ok, now),
                        };
                        if let Err(e) = res {
                            errors.push(e.0);
                        }
                    }
                    for (data, addr) in &input {
                        if let Err(e) = r.receive_datagram(data, addr, now) {
                            errors.push(e.0);
                            break;
                        }
                    }
                    let mut out = Vec::new();
                    r.drain_datagrams(&mut out);
                    let mut events = Vec::new();
                    r.drain_events(&mut events);
                    Ok((out, events, errors))
                })
            })?
            .map_err(|_| {
                NativePanic::new_err("this object is unusable: an earlier call panicked inside it")
            })?;
        let out_py = datagrams_py(py, &out)?;
        let ev = events
            .iter()
            .map(|e| responder_event_py(py, e))
            .collect::<PyResult<Vec<_>>>()?;
        let ev_py = PyList::new(py, ev)?;
        if let Some(first) = errors.into_iter().next() {
            // the outputs of the batch are kept for the next call: nothing is lost
            let mut r = lock(engine)?;
            for (d, a) in out.into_iter().rev() {
                r.requeue_datagram(d, a);
            }
            r.requeue_events(events);
            return Err(local_err(py, first));
        }
        Ok((out_py, ev_py))
    }

    fn receive_datagram(
        &self,
        py: Python<'_>,
        data: &[u8],
        addr: Bound<'_, PyAny>,
        now: f64,
    ) -> PyResult<()> {
        let a = to_addr(&addr)?;
        let mut r = lock(&self.0)?;
        guard(|| r.receive_datagram(data, &a, now))?.map_err(|e| from_local(py, e))
    }

    fn datagrams_to_send<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = guard(|| lock(&self.0).map(|mut r| r.datagrams_to_send()))??;
        datagrams_py(py, &out)
    }

    fn next_event<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let e = guard(|| lock(&self.0).map(|mut r| r.next_event()))??;
        e.map(|e| responder_event_py(py, &e)).transpose()
    }

    fn get_timer(&self) -> PyResult<Option<f64>> {
        guard(|| lock(&self.0).map(|mut r| r.get_timer()))?
    }

    fn handle_timer(&self, py: Python<'_>, now: f64) -> PyResult<()> {
        let mut r = lock(&self.0)?;
        guard(|| r.handle_timer(now))?.map_err(|e| from_local(py, e))
    }

    #[pyo3(signature = (token, credential, lifetimes, now))]
    fn provide_credential(
        &self,
        py: Python<'_>,
        token: u64,
        credential: Option<PyRef<'_, NativeCredential>>,
        lifetimes: Option<LifetimesTuple>,
        now: f64,
    ) -> PyResult<()> {
        let cred = credential.map(|c| c.0.clone());
        let mut r = lock(&self.0)?;
        guard(|| r.provide_credential(token, cred, lifetimes.map(lifetimes_from), now))?
            .map_err(|e| from_local(py, e))
    }

    fn commit_result(&self, py: Python<'_>, token: u64, ok: bool, now: f64) -> PyResult<()> {
        let mut r = lock(&self.0)?;
        guard(|| r.commit_result(token, ok, now))?.map_err(|e| from_local(py, e))
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = lock(&self.0)?.stats.clone();
        stats_py(py, &s)
    }

    #[getter]
    fn pending(&self) -> PyResult<usize> {
        Ok(lock(&self.0)?.pending())
    }

    #[getter]
    fn response_cache_len(&self) -> PyResult<usize> {
        Ok(lock(&self.0)?.response_cache_len())
    }

    #[getter]
    fn mlkem_runs_len(&self) -> PyResult<usize> {
        Ok(lock(&self.0)?.mlkem_runs_len())
    }
}

// --- initiator --------------------------------------------------------------------------------

/// One hardened-mode resumption attempt (see `native/src/initiator.rs`).
#[pyclass(module = "resume._native")]
pub struct NativeInitiator(Mutex<Initiator<PyAddr>>);

fn initiator_event_py<'py>(
    py: Python<'py>,
    e: &InitiatorEvent<PyAddr>,
) -> PyResult<Bound<'py, PyTuple>> {
    match e {
        InitiatorEvent::Complete(c) => completion_py(py, c),
        InitiatorEvent::Fallback(reason) => PyTuple::new(
            py,
            [
                "fallback".into_pyobject(py)?.into_any(),
                reason.into_pyobject(py)?.into_any(),
            ],
        ),
    }
}

#[pymethods]
impl NativeInitiator {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (credential, peer, *, previous=None, lifetimes=None, use_x25519=true, require_x25519=false, mlkem="off", initial_rto=0.5, max_retransmits=3, timeout=4.0, rng_seed=None, rng_draws=None))]
    fn new(
        py: Python<'_>,
        credential: PyRef<'_, NativeCredential>,
        peer: Bound<'_, PyAny>,
        previous: Option<PyRef<'_, NativeCredential>>,
        lifetimes: Option<LifetimesTuple>,
        use_x25519: bool,
        require_x25519: bool,
        mlkem: &str,
        initial_rto: f64,
        max_retransmits: u32,
        timeout: f64,
        rng_seed: Option<Vec<u8>>,
        rng_draws: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Self> {
        let mlkem = MlKemPolicy::from_name(mlkem)
            .ok_or_else(|| local_err(py, "mlkem must be one of off, offer, require"))?;
        let cfg = InitiatorConfig {
            use_x25519,
            require_x25519,
            mlkem,
            initial_rto,
            max_retransmits,
            timeout,
            default_lifetimes: Lifetimes::default(),
        };
        let peer = to_addr(&peer)?;
        let rng = rng_from(rng_seed, rng_draws)?;
        let cred = credential.0.clone();
        let prev = previous.map(|p| p.0.clone());
        guard(|| Initiator::new(cred, cfg, rng, prev, peer, lifetimes.map(lifetimes_from)))?
            .map(|i| NativeInitiator(Mutex::new(i)))
            .map_err(|e| from_local(py, e))
    }

    fn initiate(&self, py: Python<'_>, now: f64) -> PyResult<()> {
        let mut i = lock(&self.0)?;
        guard(|| i.initiate(now))?.map_err(|e| from_local(py, e))
    }

    /// Feed one datagram (the peer address is not used: an attempt has one peer).
    #[pyo3(signature = (data, addr, now))]
    fn receive_datagram(&self, data: &[u8], addr: Bound<'_, PyAny>, now: f64) -> PyResult<()> {
        let _ = addr;
        let mut i = lock(&self.0)?;
        guard(|| i.receive_datagram(data, now))
    }

    /// Several datagrams at `now` with the GIL released; returns (datagrams, events).
    fn process<'py>(
        &self,
        py: Python<'py>,
        now: f64,
        datagrams: Vec<Vec<u8>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let engine = &self.0;
        let (out, events) = py.detach(|| {
            guard(|| -> PyResult<_> {
                let mut i = lock(engine)?;
                for d in &datagrams {
                    i.receive_datagram(d, now);
                }
                let out = i.datagrams_to_send();
                let mut events = Vec::new();
                while let Some(e) = i.next_event() {
                    events.push(e);
                }
                Ok((out, events))
            })
        })??;
        let ev = events
            .iter()
            .map(|e| initiator_event_py(py, e))
            .collect::<PyResult<Vec<_>>>()?;
        Ok((datagrams_py(py, &out)?, PyList::new(py, ev)?))
    }

    fn datagrams_to_send<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = guard(|| lock(&self.0).map(|mut i| i.datagrams_to_send()))??;
        datagrams_py(py, &out)
    }

    fn next_event<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let e = guard(|| lock(&self.0).map(|mut i| i.next_event()))??;
        e.map(|e| initiator_event_py(py, &e)).transpose()
    }

    fn get_timer(&self) -> PyResult<Option<f64>> {
        Ok(lock(&self.0)?.get_timer())
    }

    fn handle_timer(&self, now: f64) -> PyResult<()> {
        let mut i = lock(&self.0)?;
        guard(|| i.handle_timer(now))
    }

    #[getter]
    fn state(&self) -> PyResult<&'static str> {
        Ok(lock(&self.0)?.state().name())
    }

    #[getter]
    fn used_previous(&self) -> PyResult<bool> {
        Ok(lock(&self.0)?.used_previous())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = lock(&self.0)?.stats.clone();
        stats_py(py, &s)
    }
}

// --- codec and key schedule functions (differential tests, fuzzing) ----------------------------

fn header_py<'py>(py: Python<'py>, h: &Header) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            bytes(py, &h.spi_i).into_any(),
            bytes(py, &h.spi_r).into_any(),
            h.next_payload.into_pyobject(py)?.into_any(),
            h.version.into_pyobject(py)?.into_any(),
            h.exchange_type.into_pyobject(py)?.into_any(),
            h.flags.into_pyobject(py)?.into_any(),
            h.message_id.into_pyobject(py)?.into_any(),
            h.length.into_pyobject(py)?.into_any(),
        ],
    )
}

type SaTuple = (u32, u16, u16, u16, u8);

fn sa_tuple(sa: &ResumeSa) -> SaTuple {
    (sa.spi, sa.encr, sa.key_bits, sa.integ, sa.mode)
}

fn sa_from(t: SaTuple) -> ResumeSa {
    ResumeSa {
        spi: t.0,
        encr: t.1,
        key_bits: t.2,
        integ: t.3,
        mode: t.4,
    }
}

fn opt_bytes<'py>(py: Python<'py>, b: Option<&[u8]>) -> Bound<'py, PyAny> {
    match b {
        Some(b) => bytes(py, b).into_any(),
        None => py.None().into_bound(py),
    }
}

fn init_py<'py>(py: Python<'py>, m: &msg::HardenedInit<'_>) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            "hardened_init".into_pyobject(py)?.into_any(),
            header_py(py, &m.header)?.into_any(),
            bytes(py, m.handle).into_any(),
            sa_tuple(&m.sa).into_pyobject(py)?.into_any(),
            bytes(py, m.nonce).into_any(),
            opt_bytes(py, m.ke.as_ref().map(|k| &k[..])),
            opt_bytes(py, m.mlkem),
            bytes(py, &ks::compact_init(m)).into_any(),
        ],
    )
}

/// Message 1 or 3 as a tuple (kind, header, fields...); DecodeError for anything else.
#[pyfunction]
fn parse_request<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let r = guard(|| msg::parse_request_untrusted(data))?.map_err(|e| decode_err(py, e))?;
    match &r {
        Request::HardenedInit(m) => init_py(py, m),
        Request::HardenedAuth(m) => PyTuple::new(
            py,
            [
                "hardened_auth".into_pyobject(py)?.into_any(),
                header_py(py, &m.header)?.into_any(),
                init_py(py, &m.init)?.into_any(),
                bytes(py, m.mac).into_any(),
            ],
        ),
        Request::PaperInit(m) => PyTuple::new(
            py,
            [
                "paper_init".into_pyobject(py)?.into_any(),
                header_py(py, &m.header)?.into_any(),
                bytes(py, &m.id_i).into_any(),
                bytes(py, m.nonce).into_any(),
            ],
        ),
        Request::PaperAuth(m) => PyTuple::new(
            py,
            [
                "paper_auth".into_pyobject(py)?.into_any(),
                header_py(py, &m.header)?.into_any(),
                bytes(py, &m.id_i).into_any(),
                bytes(py, m.mac).into_any(),
            ],
        ),
    }
}

/// Message 2 or a NACK as a tuple (kind, header, fields...); DecodeError for anything else.
#[pyfunction]
fn parse_response<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let r = guard(|| msg::parse_response_untrusted(data))?.map_err(|e| decode_err(py, e))?;
    match &r {
        Response::HardenedResp(m) => PyTuple::new(
            py,
            [
                "hardened_resp".into_pyobject(py)?.into_any(),
                header_py(py, &m.header)?.into_any(),
                sa_tuple(&m.sa).into_pyobject(py)?.into_any(),
                bytes(py, m.nonce).into_any(),
                opt_bytes(py, m.ke.as_ref().map(|k| &k[..])),
                opt_bytes(py, m.mlkem),
                bytes(py, m.mac).into_any(),
                bytes(py, &ks::compact_resp(m)).into_any(),
            ],
        ),
        Response::PaperResp(m) => PyTuple::new(
            py,
            [
                "paper_resp".into_pyobject(py)?.into_any(),
                header_py(py, &m.header)?.into_any(),
                bytes(py, &m.id_r).into_any(),
                bytes(py, m.nonce).into_any(),
                bytes(py, m.mac).into_any(),
            ],
        ),
        Response::Nack(m) => PyTuple::new(
            py,
            [
                "nack".into_pyobject(py)?.into_any(),
                header_py(py, &m.header)?.into_any(),
            ],
        ),
    }
}

#[pyfunction]
fn peek_header<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let h = guard(|| wire::peek_header_untrusted(data))?.map_err(|e| decode_err(py, e))?;
    header_py(py, &h)
}

#[pyfunction]
fn peek_handle<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let h = guard(|| wire::peek_handle_untrusted(data).map(<[u8]>::to_vec))?
        .map_err(|e| decode_err(py, e))?;
    Ok(bytes(py, &h))
}

/// (header, [(type, critical, body), ...]) like `resume.wire.decode_message_untrusted`.
#[pyfunction]
fn decode_message<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let m = guard(|| wire::decode_message_untrusted(data))?.map_err(|e| decode_err(py, e))?;
    let payloads = m
        .payloads
        .iter()
        .map(|(t, c, b)| {
            PyTuple::new(
                py,
                [
                    t.into_pyobject(py)?.into_any(),
                    c.into_pyobject(py)?.to_owned().into_any(),
                    bytes(py, b).into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyTuple::new(
        py,
        [
            header_py(py, &m.header)?.into_any(),
            PyList::new(py, payloads)?.into_any(),
        ],
    )
}

#[pyfunction]
fn strip_non_esp_marker<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let b = guard(|| wire::strip_non_esp_marker_untrusted(data).map(<[u8]>::to_vec))?
        .map_err(|e| decode_err(py, e))?;
    Ok(bytes(py, &b))
}

#[pyfunction]
fn add_non_esp_marker<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, &wire::add_non_esp_marker(data))
}

#[pyfunction]
fn decode_sa(py: Python<'_>, body: &[u8]) -> PyResult<SaTuple> {
    guard(|| msg::decode_sa_untrusted(body))?
        .map(|s| sa_tuple(&s))
        .map_err(|e| decode_err(py, e))
}

#[pyfunction]
fn decode_id<'py>(py: Python<'py>, body: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let b = guard(|| msg::decode_id_untrusted(body))?.map_err(|e| decode_err(py, e))?;
    Ok(bytes(py, &b))
}

/// (method, data) of a KE payload body.
#[pyfunction]
fn decode_ke<'py>(py: Python<'py>, body: &[u8]) -> PyResult<(u16, Bound<'py, PyBytes>)> {
    let (m, d) = guard(|| msg::decode_ke_untrusted(body).map(|(m, d)| (m, d.to_vec())))?
        .map_err(|e| decode_err(py, e))?;
    Ok((m, bytes(py, &d)))
}

fn arr<const N: usize>(b: &[u8], what: &str) -> PyResult<[u8; N]> {
    b.try_into()
        .map_err(|_| PyValueError::new_err(format!("{what} must be {N} bytes")))
}

#[pyfunction]
#[pyo3(signature = (spi_i, handle, sa, nonce, ke=None, mlkem=None))]
fn build_hardened_init<'py>(
    py: Python<'py>,
    spi_i: &[u8],
    handle: &[u8],
    sa: SaTuple,
    nonce: &[u8],
    ke: Option<&[u8]>,
    mlkem: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let spi = arr::<8>(spi_i, "spi_i")?;
    let ke = ke.map(|k| arr::<32>(k, "ke")).transpose()?;
    let m =
        guard(|| msg::build_hardened_init(&spi, handle, &sa_from(sa), nonce, ke.as_ref(), mlkem))?
            .map_err(|e| PyValueError::new_err(e.0))?;
    Ok(bytes(py, &m))
}

#[pyfunction]
#[pyo3(signature = (spi_i, spi_r, sa, nonce, ke=None, mlkem=None))]
fn build_hardened_resp_prefix<'py>(
    py: Python<'py>,
    spi_i: &[u8],
    spi_r: &[u8],
    sa: SaTuple,
    nonce: &[u8],
    ke: Option<&[u8]>,
    mlkem: Option<&[u8]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let (a, b) = (arr::<8>(spi_i, "spi_i")?, arr::<8>(spi_r, "spi_r")?);
    let ke = ke.map(|k| arr::<32>(k, "ke")).transpose()?;
    let m =
        guard(|| msg::build_hardened_resp_prefix(&a, &b, &sa_from(sa), nonce, ke.as_ref(), mlkem))?
            .map_err(|e| PyValueError::new_err(e.0))?;
    Ok(bytes(py, &m))
}

/// compact(m) of a hardened message 1 or 2 (a message without ML-KEM comes back as it is);
/// DecodeError for anything else.
#[pyfunction]
fn compact_message<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let out = guard(|| match msg::parse_request_untrusted(data) {
        Ok(Request::HardenedInit(m)) => Ok(ks::compact_init(&m).into_owned()),
        _ => match msg::parse_response_untrusted(data) {
            Ok(Response::HardenedResp(m)) => Ok(ks::compact_resp(&m).into_owned()),
            _ => Err(DecodeError("not a hardened message 1 or 2")),
        },
    })?
    .map_err(|e| decode_err(py, e))?;
    Ok(bytes(py, &out))
}

/// The ML-KEM-768 encapsulation key of a 64-byte seed `d | z`.
#[pyfunction]
fn mlkem_public<'py>(py: Python<'py>, seed: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let s = arr::<64>(seed, "seed")?;
    let k =
        guard(|| MlKemKey::from_seed(&s))?.map_err(|_| PyValueError::new_err("bad ML-KEM seed"))?;
    Ok(bytes(py, k.encapsulation_key()))
}

/// FIPS 203 ML-KEM.Encaps_internal(ek, m): (ciphertext, shared secret); an unusable key is
/// a DecodeError.
#[pyfunction]
fn mlkem_encapsulate_deterministic<'py>(
    py: Python<'py>,
    ek: &[u8],
    m: &[u8],
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let m = arr::<32>(m, "m")?;
    let (ct, ss) = guard(|| ks::mlkem_encapsulate_deterministic(ek, &m))?
        .map_err(|_| decode_err(py, DecodeError("unusable ML-KEM-768 encapsulation key")))?;
    Ok((bytes(py, &ct), bytes(py, &ss[..])))
}

/// The shared secret of `ct` for the key of a 64-byte seed (aws-lc's decapsulation).
#[pyfunction]
fn mlkem_decapsulate<'py>(
    py: Python<'py>,
    seed: &[u8],
    ct: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let s = arr::<64>(seed, "seed")?;
    let ss = guard(|| MlKemKey::from_seed(&s).and_then(|k| k.decapsulate(ct)))?
        .map_err(|_| PyValueError::new_err("bad ML-KEM seed or ciphertext length"))?;
    Ok(bytes(py, &ss[..]))
}

/// The FIPS 203 input check of an encapsulation key (length and modulus).
#[pyfunction]
fn mlkem_ek_valid(ek: &[u8]) -> PyResult<bool> {
    guard(|| ks::mlkem_ek_valid(ek))
}

#[pyfunction]
fn build_hardened_auth_prefix<'py>(
    py: Python<'py>,
    spi_i: &[u8],
    spi_r: &[u8],
    msg1: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let (a, b) = (arr::<8>(spi_i, "spi_i")?, arr::<8>(spi_r, "spi_r")?);
    let m = guard(|| msg::build_hardened_auth_prefix(&a, &b, msg1))?
        .map_err(|e| PyValueError::new_err(e.0))?;
    Ok(bytes(py, &m))
}

#[pyfunction]
fn build_nack<'py>(
    py: Python<'py>,
    spi_i: &[u8],
    spi_r: &[u8],
    message_id: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let (a, b) = (arr::<8>(spi_i, "spi_i")?, arr::<8>(spi_r, "spi_r")?);
    Ok(bytes(py, &msg::build_nack(&a, &b, message_id)))
}

#[pyfunction]
fn hmac_sha256<'py>(py: Python<'py>, key: &[u8], data: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, &ks::hmac_sha256(key, &[data]))
}

#[pyfunction]
fn hkdf_extract<'py>(py: Python<'py>, salt: &[u8], ikm: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, &ks::hkdf_extract(salt, &[ikm])[..])
}

#[pyfunction]
fn hkdf_expand<'py>(
    py: Python<'py>,
    prk: &[u8],
    info: &[u8],
    length: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    if length == 0 || length > 255 * 32 {
        return Err(PyValueError::new_err(format!(
            "HKDF-Expand cannot produce {length} bytes"
        )));
    }
    Ok(bytes(py, &ks::hkdf_expand(prk, &[info], length)))
}

/// The responder's 64-byte PRF output V for (server secret, tick, (host, port), message 1).
#[pyfunction]
fn responder_prf<'py>(
    py: Python<'py>,
    server_secret: &[u8],
    tick: u64,
    addr: Bound<'py, PyAny>,
    msg1: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let a = to_addr(&addr)?;
    let v = guard(|| ks::ResponderPrf::new(server_secret).prf(tick, &a, msg1))?;
    Ok(bytes(py, &v))
}

/// Every key of one hardened run: (prk, ctx, mac_i, mac_r, keymat, successor, handle').
#[pyfunction]
#[allow(clippy::type_complexity)]
#[pyo3(signature = (credential, nonce_i, nonce_r, dh, spi_i2r, spi_r2i, ss=b"".as_slice()))]
fn run_keys(
    credential: PyRef<'_, NativeCredential>,
    nonce_i: &[u8],
    nonce_r: &[u8],
    dh: &[u8],
    spi_i2r: u32,
    spi_r2i: u32,
    ss: &[u8],
) -> PyResult<(
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
)> {
    let cred = &credential.0;
    guard(|| {
        let mut rs = ks::RunSecrets::new(cred, nonce_i, nonce_r, dh, ss);
        let keymat = rs.keymat(spi_i2r, spi_r2i, 2 * cred.params().keymat_len());
        let succ = rs.successor_secret();
        (
            rs.prk().to_vec(),
            rs.ctx().to_vec(),
            rs.mac_i().to_vec(),
            rs.mac_r().to_vec(),
            keymat.to_vec(),
            succ.to_vec(),
            ks::handle_for(&succ[..]).to_vec(),
        )
    })
}

type DirTuple = (u32, Vec<u8>, Vec<u8>);

/// Generation 0 from CHILD_SA keys: (S_0, handle_0).
#[pyfunction]
fn bootstrap(
    params: &Params,
    i_to_r: DirTuple,
    r_to_i: DirTuple,
    id_i: &[u8],
    id_r: &[u8],
) -> PyResult<(Vec<u8>, Vec<u8>)> {
    let dk = |t: DirTuple| ks::DirectionKeys {
        spi: t.0,
        encr_key: zeroize::Zeroizing::new(t.1),
        integ_key: zeroize::Zeroizing::new(t.2),
    };
    let (a, b) = (dk(i_to_r), dk(r_to_i));
    guard(|| {
        let (s, h) = ks::bootstrap_secret(&params.0, &a, &b, id_i, id_r);
        (s.to_vec(), h.to_vec())
    })
}

#[pyfunction]
fn mac_msg2<'py>(py: Python<'py>, key: &[u8], msg1: &[u8], prefix: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, &ks::mac_msg2(key, msg1, prefix))
}

#[pyfunction]
fn mac_msg3<'py>(
    py: Python<'py>,
    key: &[u8],
    msg1: &[u8],
    msg2: &[u8],
    prefix: &[u8],
) -> Bound<'py, PyBytes> {
    bytes(py, &ks::mac_msg3(key, msg1, msg2, prefix))
}

#[pyfunction]
fn x25519_public<'py>(py: Python<'py>, private: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let p = arr::<32>(private, "private key")?;
    let k = X25519Key::from_private(&p).map_err(|_| PyValueError::new_err("bad X25519 key"))?;
    Ok(bytes(py, k.public()))
}

/// X25519 shared secret; an unusable share (all-zero result) is a DecodeError.
#[pyfunction]
fn x25519_shared<'py>(
    py: Python<'py>,
    private: &[u8],
    peer: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let p = arr::<32>(private, "private key")?;
    let q = arr::<32>(peer, "peer share")?;
    let k = X25519Key::from_private(&p).map_err(|_| PyValueError::new_err("bad X25519 key"))?;
    let s = k
        .shared_untrusted(&q)
        .map_err(|_| decode_err(py, DecodeError("unusable X25519 share")))?;
    Ok(bytes(py, &s[..]))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativePanic", m.py().get_type::<NativePanic>())?;
    m.add_class::<Params>()?;
    m.add_class::<NativeCredential>()?;
    m.add_class::<NativeResponder>()?;
    m.add_class::<NativeInitiator>()?;
    m.add_function(wrap_pyfunction!(_set_error_types, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_probe, m)?)?;
    for f in [
        wrap_pyfunction!(parse_request, m)?,
        wrap_pyfunction!(parse_response, m)?,
        wrap_pyfunction!(peek_header, m)?,
        wrap_pyfunction!(peek_handle, m)?,
        wrap_pyfunction!(decode_message, m)?,
        wrap_pyfunction!(strip_non_esp_marker, m)?,
        wrap_pyfunction!(add_non_esp_marker, m)?,
        wrap_pyfunction!(decode_sa, m)?,
        wrap_pyfunction!(decode_id, m)?,
        wrap_pyfunction!(decode_ke, m)?,
        wrap_pyfunction!(build_hardened_init, m)?,
        wrap_pyfunction!(build_hardened_resp_prefix, m)?,
        wrap_pyfunction!(build_hardened_auth_prefix, m)?,
        wrap_pyfunction!(build_nack, m)?,
        wrap_pyfunction!(hmac_sha256, m)?,
        wrap_pyfunction!(hkdf_extract, m)?,
        wrap_pyfunction!(hkdf_expand, m)?,
        wrap_pyfunction!(responder_prf, m)?,
        wrap_pyfunction!(run_keys, m)?,
        wrap_pyfunction!(bootstrap, m)?,
        wrap_pyfunction!(mac_msg2, m)?,
        wrap_pyfunction!(mac_msg3, m)?,
        wrap_pyfunction!(x25519_public, m)?,
        wrap_pyfunction!(x25519_shared, m)?,
        wrap_pyfunction!(compact_message, m)?,
        wrap_pyfunction!(mlkem_public, m)?,
        wrap_pyfunction!(mlkem_encapsulate_deterministic, m)?,
        wrap_pyfunction!(mlkem_decapsulate, m)?,
        wrap_pyfunction!(mlkem_ek_valid, m)?,
    ] {
        m.add_function(f)?;
    }
    m.add("ESP_SPI_MIN", msg::MIN_ESP_SPI)?;
    #[cfg(feature = "server")]
    server::register(m)?;
    Ok(())
}
