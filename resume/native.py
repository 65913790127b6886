"""The native core (``resume._native``, Rust) behind the Python core's API.

Why a thin adapter: the Rust engines (``native/``) hold no Python objects, so the
application-facing types (``Credential``, ``SAParams``, the events) are converted here, in
one module, at the edges.  ``NativeResponder`` and ``NativeInitiator`` take and give exactly
what ``resume.responder.Responder`` and ``resume.initiator.Initiator`` do (hardened mode;
paper mode stays on the Python core), so either core can serve an application and the
differential tests drive both with the same inputs.  ``NativeResponder.process`` is the
batch entry point: many datagrams and answers per call, the GIL released for the batch.

Randomness is data, never a callable (the engines run without the GIL): ``SeededRng`` and
``ScriptedRng`` give reproducible draws; ``seeded_rng`` is the same function for the Python
core.  ``None`` means the operating system's generator.  The responder's ML-KEM
encapsulation takes its randomness the same way (``kem=SeededKem(...)``/``ScriptedKem``:
FIPS 203 Encaps_internal with ``m`` drawn as ``SeededRng``/``ScriptedRng`` draw;
``seeded_encapsulation`` is the Python core's twin).

``available()`` tells whether the extension was built (``pip install -e .`` builds it);
``make_responder`` / ``make_initiator`` pick the core: native when it is built and can serve
the call (hardened mode, no rng callable), unless ``IKERESUME_CORE=python`` (or ``native``,
which fails loudly when it cannot) says otherwise.
"""

from __future__ import annotations

import collections
import hashlib
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# Every import of the Python core lives in this block (module names may move; see issue 12).
from resume.credential import Credential, Lineage, ProtocolMode
from resume.errors import DecodeError, LocalProtocolError
from resume.events import (
    Address,
    CommitNeeded,
    CredentialNeeded,
    Event,
    FallbackToFullIKE,
    ResumptionComplete,
    ResumptionFailed,
    SaveSuccessor,
)
from resume.initiator import IKE_PORT, NATT_PORT, Initiator, InitiatorConfig
from resume.kem_testing import check_encapsulation_key, deterministic_encapsulation
from resume.responder import MIN_SERVER_SECRET, Responder, ResponderConfig
from resume.sa import (
    DirectionKeys,
    Encr,
    Integ,
    Lifetimes,
    Mode,
    SAPair,
    SAParams,
    TrafficSelector,
)
from resume.states import InitiatorState

_native: ModuleType | None
try:
    from resume import _native as _loaded
except ImportError as exc:  # not built: the Python core still works
    _native = None
    NATIVE_IMPORT_ERROR: str | None = str(exc)
else:
    _native = _loaded
    NATIVE_IMPORT_ERROR = None
    _loaded._set_error_types(DecodeError, LocalProtocolError)


def available() -> bool:
    """True when ``resume._native`` was built and imports."""
    return _native is not None


def _require() -> Any:
    if _native is None:
        raise LocalProtocolError(
            f"the native core is not built ({NATIVE_IMPORT_ERROR}); run `pip install -e .`"
        )
    return _native


@dataclass(frozen=True)
class SeededRng:
    """Draw i is ``SHA-512(seed | u64(i))[:n]`` (n <= 64): reproducible, for tests/benches."""

    seed: bytes


@dataclass(frozen=True)
class ScriptedRng:
    """Recorded draws replayed in order, each of exactly the size asked for (vectors)."""

    draws: tuple[bytes, ...]


Rng = SeededRng | ScriptedRng | None


@dataclass(frozen=True)
class SeededKem:
    """The responder's ML-KEM encapsulation with ``m`` drawn as ``SeededRng(seed)`` draws."""

    seed: bytes


@dataclass(frozen=True)
class ScriptedKem:
    """The responder's ML-KEM encapsulation with recorded ``m`` values (vectors)."""

    draws: tuple[bytes, ...]


Kem = SeededKem | ScriptedKem | None
#: The Python core's encapsulation: ek -> (ciphertext, shared secret).
Encapsulate = Callable[[bytes], tuple[bytes, bytes]]


def seeded_encapsulation(seed: bytes) -> Encapsulate:
    """The Python core's encapsulation that ``SeededKem(seed)`` gives the native one:
    ``resume.kem_testing``'s, with ``m`` from ``seeded_rng(seed)`` (the arithmetic runs on
    the native ``ml-kem`` crate when the extension is built, a hundred times faster;
    tests/native checks that both give the same bytes)."""
    draw = seeded_rng(seed)
    if _native is None:
        return deterministic_encapsulation(draw)
    fast = _native.mlkem_encapsulate_deterministic

    def encapsulate(ek: bytes) -> tuple[bytes, bytes]:
        check_encapsulation_key(ek)  # the product's check, before any draw
        ct, ss = fast(ek, draw(32))
        return bytes(ct), bytes(ss)

    return encapsulate


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    """The Python core's rng callable that draws what ``SeededRng(seed)`` draws."""
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = hashlib.sha512(seed + counter.to_bytes(8, "big")).digest()[:n]
        counter += 1
        return out

    return rng


def _kem_kwargs(kem: Kem) -> dict[str, Any]:
    if kem is None:
        return {}
    if isinstance(kem, SeededKem):
        return {"kem_seed": bytes(kem.seed)}
    if isinstance(kem, ScriptedKem):
        return {"kem_draws": [bytes(d) for d in kem.draws]}
    raise LocalProtocolError("the native core takes SeededKem, ScriptedKem or None as kem")


def _rng_kwargs(rng: Rng) -> dict[str, Any]:
    if rng is None:
        return {}
    if isinstance(rng, SeededRng):
        return {"rng_seed": bytes(rng.seed)}
    if isinstance(rng, ScriptedRng):
        return {"rng_draws": [bytes(d) for d in rng.draws]}
    raise LocalProtocolError("the native core takes SeededRng, ScriptedRng or None as rng")


# --- conversions ------------------------------------------------------------------------------

_MODE_CODE = {Mode.TRANSPORT: 1, Mode.TUNNEL: 2}
_CODE_MODE = {1: Mode.TRANSPORT, 2: Mode.TUNNEL}
_MEMO_SIZE = 4096
#: id(SAParams) -> (the object, its native twin); native key -> SAParams.  Bounded: cleared
#: together when full (a miss only costs a conversion).
_TO_NATIVE: dict[int, tuple[SAParams, Any]] = {}
_FROM_NATIVE: dict[int, SAParams] = {}


def _ts(t: TrafficSelector) -> tuple[str, str, int, int, int]:
    return (t.start_addr, t.end_addr, t.protocol, t.start_port, t.end_port)


def native_params(params: SAParams) -> Any:
    """The native twin of ``params`` (memoised by identity)."""
    hit = _TO_NATIVE.get(id(params))
    if hit is not None and hit[0] is params:
        return hit[1]
    n = _require().Params(
        _MODE_CODE[params.mode],
        int(params.encr),
        params.encr_key_bits,
        int(params.integ),
        params.initiator_addr,
        params.responder_addr,
        [_ts(t) for t in params.tsi],
        [_ts(t) for t in params.tsr],
        params.natt_initiator_port,
        params.natt_responder_port,
        params.replay_window,
    )
    if len(_TO_NATIVE) >= _MEMO_SIZE:
        _TO_NATIVE.clear()
        _FROM_NATIVE.clear()
    _TO_NATIVE[id(params)] = (params, n)
    _FROM_NATIVE[n.key] = params
    return n


def python_params(n: Any) -> SAParams:
    """The Python ``SAParams`` a native one came from (rebuilt field by field on a miss)."""
    hit = _FROM_NATIVE.get(n.key)
    if hit is not None:
        return hit
    mode, encr, bits, integ, ia, ra, tsi, tsr, ni, nr, rw = n.fields()
    return SAParams(
        mode=_CODE_MODE[mode],
        encr=Encr(encr),
        encr_key_bits=bits,
        integ=Integ(integ),
        initiator_addr=ia,
        responder_addr=ra,
        tsi=tuple(TrafficSelector(*t) for t in tsi),
        tsr=tuple(TrafficSelector(*t) for t in tsr),
        natt_initiator_port=ni,
        natt_responder_port=nr,
        replay_window=rw,
    )


def native_credential(cred: Credential) -> Any:
    """A ``resume._native.NativeCredential`` with the same fields (paper keys are not carried:
    the native engines refuse paper credentials the way the Python core does)."""
    return _require().NativeCredential(
        cred.mode is ProtocolMode.HARDENED,
        cred.handle,
        cred.generation,
        cred.secret,
        cred.id_i,
        cred.id_r,
        native_params(cred.params),
        cred.lineage.value,
    )


def python_credential(n: Any, params: SAParams | None = None) -> Credential:
    """A hardened ``Credential`` from a native one (a successor)."""
    return Credential(
        mode=ProtocolMode.HARDENED,
        handle=n.handle,
        generation=n.generation,
        secret=n.secret,
        id_i=n.id_i,
        id_r=n.id_r,
        params=params if params is not None else python_params(n.params),
        lineage=Lineage(n.lineage),
    )


_LtTuple = tuple[int | None, int | None, int | None, int | None, int | None, int | None]


def _lt(lt: Lifetimes | None) -> _LtTuple | None:
    if lt is None:
        return None
    return (
        lt.soft_seconds,
        lt.hard_seconds,
        lt.soft_bytes,
        lt.hard_bytes,
        lt.soft_packets,
        lt.hard_packets,
    )


def _completion(ev: tuple[Any, ...], role: str, params: SAParams | None) -> ResumptionComplete:
    _kind, handle, generation, succ, addr, i2r, r2i, lt, ke = ev
    successor = python_credential(succ, params)
    sa = SAPair(
        role,
        successor.params,
        DirectionKeys(*i2r),
        DirectionKeys(*r2i),
        Lifetimes(*lt),
    )
    return ResumptionComplete(sa, handle, generation, successor, tuple(addr), ke)


def responder_event(ev: tuple[Any, ...]) -> Event:
    """A Python event from the native responder's tuple."""
    kind = ev[0]
    if kind == "credential":
        return CredentialNeeded(ev[1], ev[2], tuple(ev[3]))
    if kind == "commit":
        return CommitNeeded(ev[1], ev[2], ev[3], python_credential(ev[4]))
    if kind == "complete":
        return _completion(ev, "responder", None)
    return ResumptionFailed(ev[1], ev[2], tuple(ev[3]))


# --- the adapters -------------------------------------------------------------------------------


class NativeResponder:
    """``resume.responder.Responder`` (hardened mode) on the native engine."""

    def __init__(
        self, config: ResponderConfig, server_secret: bytes, rng: Rng = None, kem: Kem = None
    ) -> None:
        if not isinstance(config, ResponderConfig):
            raise LocalProtocolError("config must be a ResponderConfig")
        if config.allow_paper_mode:
            raise LocalProtocolError("paper mode runs on the Python core only")
        if len(server_secret) < MIN_SERVER_SECRET:
            raise LocalProtocolError(f"server secret must be at least {MIN_SERVER_SECRET} bytes")
        self.config = config
        self.core = _require().NativeResponder(
            bytes(server_secret),
            allow_x25519=config.allow_x25519,
            require_x25519=config.require_x25519,
            allow_mlkem=config.allow_mlkem,
            require_mlkem=config.require_mlkem,
            require_pq_lineage=config.require_pq_lineage,
            mlkem_runs_per_tick=config.mlkem_runs_per_tick,
            mlkem_runs_per_handle=config.mlkem_runs_per_handle,
            cookie_tick_seconds=config.cookie_tick_seconds,
            response_cache_size=config.response_cache_size,
            max_pending=config.max_pending,
            lookup_timeout=config.lookup_timeout,
            completed_cache_size=config.completed_cache_size,
            credential_cache_size=config.credential_cache_size,
            default_lifetimes=_lt(config.default_lifetimes),
            **_rng_kwargs(rng),
            **_kem_kwargs(kem),
        )

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        self.core.receive_datagram(bytes(data), addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [(d, (a[0], a[1])) for d, a in self.core.datagrams_to_send()]

    def next_event(self) -> Event | None:
        ev = self.core.next_event()
        return None if ev is None else responder_event(ev)

    def get_timer(self) -> float | None:
        t: float | None = self.core.get_timer()
        return t

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)

    def provide_credential(
        self,
        token: int,
        credential: Credential | None,
        lifetimes: Lifetimes | None,
        now: float,
    ) -> None:
        nc = None if credential is None else native_credential(credential)
        self.core.provide_credential(token, nc, _lt(lifetimes), now)

    def commit_result(self, token: int, ok: bool, now: float) -> None:
        self.core.commit_result(token, bool(ok), now)

    def process(
        self,
        now: float,
        datagrams: Sequence[tuple[bytes, Address]] = (),
        credentials: Sequence[tuple[int, Any, _LtTuple | None]] = (),
        commits: Sequence[tuple[int, bool]] = (),
    ) -> tuple[list[tuple[bytes, tuple[str, int]]], list[tuple[Any, ...]]]:
        """The batch API: answers (native credentials), then datagrams, GIL released; returns
        the datagrams to send and the events as the engine's tuples (``responder_event``
        turns one into a Python event)."""
        out, events = self.core.process(now, list(datagrams), list(credentials), list(commits))
        return out, events

    @property
    def stats(self) -> collections.Counter[str]:
        return collections.Counter(self.core.stats())

    @property
    def pending(self) -> int:
        n: int = self.core.pending
        return n

    def describe(self) -> dict[str, Any]:
        return {
            "stats": dict(self.core.stats()),
            "pending": self.core.pending,
            "response_cache": self.core.response_cache_len,
            "half_open": 0,
            "mlkem_runs": self.core.mlkem_runs_len,
        }


class NativeInitiator:
    """``resume.initiator.Initiator`` (hardened mode) on the native engine.

    The write-ahead of issue 20 (SAVE_SUCCESSOR: message 3 leaves only after
    ``successor_saved``) is kept here, around the engine, until the engine has the state
    itself: when the engine completes on a valid message 2, this adapter takes its
    completion and its message 3, reports ``SaveSuccessor`` and lets nothing reach the
    engine until the application answers (the engine, "done", would otherwise resend
    message 3 for a repeated message 2); then it releases message 3 and the completion,
    or drops them and reports the fallback.
    """

    def __init__(
        self,
        credential: Credential,
        config: InitiatorConfig | None = None,
        rng: Rng = None,
        *,
        previous: Credential | None = None,
        peer: Address | None = None,
        lifetimes: Lifetimes | None = None,
    ) -> None:
        self.config = config if config is not None else InitiatorConfig()
        for cred in (credential, previous):
            if cred is not None and cred.mode is ProtocolMode.PAPER:
                raise LocalProtocolError("paper mode runs on the Python core only")
        if peer is None:
            p = credential.params
            port = NATT_PORT if p.natt_responder_port is not None else IKE_PORT
            peer = (p.responder_addr, port)
        self.peer: Address = peer
        self._cred = credential
        self._previous = previous
        cfg = self.config
        self.core = _require().NativeInitiator(
            native_credential(credential),
            peer,
            previous=None if previous is None else native_credential(previous),
            lifetimes=_lt(lifetimes if lifetimes is not None else cfg.default_lifetimes),
            use_x25519=cfg.use_x25519,
            require_x25519=cfg.require_x25519,
            mlkem=cfg.mlkem,
            initial_rto=cfg.initial_rto,
            max_retransmits=cfg.max_retransmits,
            timeout=cfg.timeout,
            **_rng_kwargs(rng),
        )
        self._events: deque[Event] = deque()
        #: write-ahead: the engine's completion and message 3, held until the save answer
        self._held: tuple[ResumptionComplete, bytes] | None = None
        self._outbox: list[bytes] = []  # datagrams taken from the engine, not yet sent
        self._save_failed = False
        self._extra: collections.Counter[str] = collections.Counter()

    @property
    def credential(self) -> Credential:
        if self.core.used_previous and self._previous is not None:
            return self._previous
        return self._cred

    @property
    def state(self) -> InitiatorState:
        if self._held is not None:
            return InitiatorState.SAVE_SUCCESSOR
        if self._save_failed:
            return InitiatorState.FALLBACK
        return InitiatorState(self.core.state)

    @property
    def stats(self) -> collections.Counter[str]:
        out = collections.Counter(self.core.stats())
        if self._held is not None or self._save_failed:
            out["complete"] -= 1  # counted by the engine at message 2, here at the save
        out.update(self._extra)
        return +out

    def initiate(self, now: float) -> None:
        self.core.initiate(now)

    def successor_saved(self, now: float) -> None:
        """Answer ``SaveSuccessor``: send message 3, report the completion."""
        if self._held is None:
            raise LocalProtocolError(f"internal: successor_saved in {self.state.value}")
        completion, msg3 = self._held
        self._held = None
        self._outbox.append(msg3)
        self._events.append(completion)

    def successor_save_failed(self, now: float) -> None:
        """Answer ``SaveSuccessor``: nothing is sent; fallback ("save_failed")."""
        if self._held is None:
            raise LocalProtocolError(f"internal: save_failed in {self.state.value}")
        self._held = None
        self._save_failed = True
        self._extra["save_failed"] += 1
        self._events.append(FallbackToFullIKE("save_failed"))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if self._held is not None or self._save_failed:
            self._extra["datagrams"] += 1
            self._extra["drop_while_saving" if self._held else "drop_wrong_state"] += 1
            return
        done = self.core.state == InitiatorState.DONE.value
        self.core.receive_datagram(bytes(data), addr, now)
        if not done and self.core.state == InitiatorState.DONE.value:
            self._hold_completion()

    def _hold_completion(self) -> None:
        """The engine completed on message 2: keep its message 3 (the last datagram it
        queued) and its completion back, and ask for the save instead."""
        queued = [d for d, _a in self.core.datagrams_to_send()]
        ev = self.core.next_event()
        if ev is None or ev[0] == "fallback" or not queued:  # pragma: no cover (engine bug)
            raise LocalProtocolError("internal: the engine completed without message 3")
        completion = _completion(ev, "initiator", self.credential.params)
        self._outbox.extend(queued[:-1])
        self._held = (completion, queued[-1])
        c = completion
        self._events.append(SaveSuccessor(c.handle, c.generation, c.successor, c.sa))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        out += [d for d, _a in self.core.datagrams_to_send()]
        return [(d, self.peer) for d in out]

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.popleft()
        ev = self.core.next_event()
        if ev is None:
            return None
        if ev[0] == "fallback":
            return FallbackToFullIKE(ev[1])
        return _completion(ev, "initiator", self.credential.params)

    def get_timer(self) -> float | None:
        t: float | None = self.core.get_timer()
        return t

    def handle_timer(self, now: float) -> None:
        self.core.handle_timer(now)


# --- choosing a core ------------------------------------------------------------------------------

CORE_ENV = "IKERESUME_CORE"


def _use_native(wanted: bool | None, why_not: str | None) -> bool:
    """``wanted``: True/False forces a core, None follows IKERESUME_CORE, then availability."""
    if wanted is None:
        env = os.environ.get(CORE_ENV, "").strip().lower()
        if env not in ("", "native", "python"):
            raise LocalProtocolError(f"{CORE_ENV} must be 'native' or 'python', not {env!r}")
        wanted = {"native": True, "python": False}.get(env)
        if wanted is None:
            return available() and why_not is None
    if wanted and why_not is not None:
        raise LocalProtocolError(f"the native core cannot serve this: {why_not}")
    if wanted:
        _require()
    return wanted


def make_responder(
    config: ResponderConfig,
    server_secret: bytes,
    rng: Callable[[int], bytes] | SeededRng | ScriptedRng | None = None,
    *,
    native: bool | None = None,
    kem: Encapsulate | SeededKem | ScriptedKem | None = None,
) -> Responder | NativeResponder:
    """A responder on the native core when it can serve ``config``, ``rng`` and ``kem``,
    else on the Python core (``native`` True/False forces one)."""
    why_not = None
    if config.allow_paper_mode:
        why_not = "paper mode"
    elif callable(rng):
        why_not = "an rng callable (give SeededRng/ScriptedRng/None)"
    elif callable(kem):
        why_not = "an encapsulation callable (give SeededKem/ScriptedKem/None)"
    if _use_native(native, why_not):
        return NativeResponder(
            config,
            server_secret,
            rng if not callable(rng) else None,
            kem if not callable(kem) else None,
        )
    if isinstance(rng, SeededRng | ScriptedRng) or isinstance(kem, SeededKem | ScriptedKem):
        raise LocalProtocolError(
            "the Python core takes rng and kem callables (see seeded_rng, seeded_encapsulation)"
        )
    return Responder(config, server_secret, rng if rng is not None else os.urandom, encapsulate=kem)


def make_initiator(
    credential: Credential,
    config: InitiatorConfig | None = None,
    rng: Callable[[int], bytes] | SeededRng | ScriptedRng | None = None,
    *,
    previous: Credential | None = None,
    peer: Address | None = None,
    lifetimes: Lifetimes | None = None,
    native: bool | None = None,
) -> Initiator | NativeInitiator:
    """An initiator on the native core when it can serve the call, else on the Python core."""
    why_not = None
    if any(c is not None and c.mode is ProtocolMode.PAPER for c in (credential, previous)):
        why_not = "paper mode"
    elif callable(rng):
        why_not = "an rng callable (give SeededRng/ScriptedRng/None)"
    if _use_native(native, why_not):
        return NativeInitiator(
            credential,
            config,
            rng if not callable(rng) else None,
            previous=previous,
            peer=peer,
            lifetimes=lifetimes,
        )
    if isinstance(rng, SeededRng | ScriptedRng):
        raise LocalProtocolError("the Python core takes an rng callable (see seeded_rng)")
    return Initiator(
        credential,
        config,
        rng if rng is not None else os.urandom,
        previous=previous,
        peer=peer,
        lifetimes=lifetimes,
    )
