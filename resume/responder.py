"""The responder: one sans-I/O object serving every peer, stateless until message 3.

Why stateless: a message 1 costs the responder one credential lookup and a few HMACs, and
leaves no per-peer secret behind once message 2 is sent.  N_R, the responder's IKE SPI and
its inbound ESP SPI are recomputed from (server secret, time tick, peer address, message 1);
its X25519 key is one random key per tick.  Message 3 echoes message 1, and the responder
IKE SPI in its header acts as the cookie that proves the peer saw our message 2 at that
address in the current or previous tick.

Hot path: the bounded response cache, which answers retransmitted messages 1, also serves
message 3: while it still holds message 2 for (address, message 1) -- exactly as long as
the cookie is valid -- message 3 takes message 2 and the values from it instead of
recomputing them (the SPI is still compared in constant time); on a miss it recomputes.
Everything in that cache is public (it is in message 2).

The application answers two requests: ``CredentialNeeded`` (look the handle up; ``None``
for unknown/refused/store down, which all produce the same NACK) and ``CommitNeeded``
(compare-and-set the ratchet; only ``ok=True`` completes).  A bounded response cache answers
retransmitted message 1 without a second lookup.  Nothing here reads the clock: every entry
point takes ``now``.

Where the state is: the outstanding requests (slots) live in one
:class:`~resume.states.SlotTable`, which makes every state change as
``resume.states.SLOT_TRANSITIONS`` lists it and remembers the handles committing or just
completed (replayed messages 3 are dropped from that).  Everything else here is a cache of
public or recomputable values, plus paper mode's half-open exchanges -- and one exception,
ML-KEM-768 (spec 5.6): message 3 does not echo the initiator's encapsulation key, so the
shared secret of each message 2 built with ML-KEM cannot be recomputed and is kept,
``N_R -> [(SS, SHA-256(ct))]`` per tick, bounded per tick and per handle, erased with that
tick's X25519 key.  A full table refuses new ML-KEM messages 1 (NACK); a kept run is never
evicted, so replayed messages 1 from spoofed addresses cannot cancel the real one.
"""

from __future__ import annotations

import collections
import math
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from resume import keyschedule as ks
from resume.credential import Credential, ProtocolMode
from resume.errors import DecodeError, LocalProtocolError
from resume.events import (
    Address,
    CommitNeeded,
    CredentialNeeded,
    Event,
    ResumptionComplete,
    ResumptionFailed,
    ke_mode,
)
from resume.sa import Lifetimes, SAPair
from resume.states import (
    ACCEPTS_COMMIT,
    ACCEPTS_CREDENTIAL,
    Slot,
    SlotInput,
    SlotState,
    SlotTable,
)
from resume.wire import MAC_LEN as _MAC_LEN
from resume.wire import ZERO_SPI as _ZERO_SPI
from resume.wire import (
    HardenedAuth,
    HardenedInit,
    PaperAuth,
    PaperInit,
    Request,
    ResumeSA,
    build_hardened_resp_prefix,
    build_nack,
    build_paper_resp_prefix,
    parse_request_untrusted,
)

MIN_SERVER_SECRET = 32

_AWAIT_CREDENTIAL_1 = SlotState.AWAIT_CREDENTIAL_1
_AWAIT_CREDENTIAL_3 = SlotState.AWAIT_CREDENTIAL_3
#: A response cache entry: message 2 as sent, expiry, tick of message 1, responder values,
#: compact(message 2) and the SHA-256 of its ML-KEM ciphertext (None without one).
_CachedResponse = tuple[bytes, float, int, ks.ResponderValues, bytes, bytes | None]
#: A run kept from message 1 for message 3: X25519 shared secret, credential, N_R, secrets,
#: the ML-KEM shared secret they include (empty without ML-KEM).
_KeptRun = tuple[bytes, Credential, bytes, ks.RunSecrets, bytes]
#: One ML-KEM candidate of a message 2: (shared secret, SHA-256(ciphertext)).
_MlkemRun = tuple[bytes, bytes]
#: The defaults of the ML-KEM bounds (spec 5.6).
MLKEM_RUNS_PER_TICK = 65536
MLKEM_RUNS_PER_HANDLE = 4


class _MlkemTick:
    """The ML-KEM runs of one tick: N_R -> candidates (one per encapsulation: a second
    one only when a retransmitted message 1 missed the response cache), entries per handle,
    and the total the per-tick bound counts."""

    __slots__ = ("per_handle", "runs", "total")

    def __init__(self) -> None:
        self.runs: dict[bytes, list[_MlkemRun]] = {}
        self.per_handle: collections.Counter[bytes] = collections.Counter()
        self.total = 0


@dataclass(frozen=True)
class ResponderConfig:
    """Responder policy knobs.  Paper mode (2007, insecure ESP key reuse) is off by default."""

    allow_paper_mode: bool = False
    allow_x25519: bool = True
    require_x25519: bool = False
    #: ML-KEM-768 in the exchange (answered when offered), required (NACK without it).
    allow_mlkem: bool = True
    require_mlkem: bool = False
    #: Refuse (NACK) a credential whose chain is not post-quantum (spec 12.3): lineage
    #: ``hybrid-pq``, ``ppk`` or ``pq-resumed`` only.
    require_pq_lineage: bool = False
    #: Bounds of the ML-KEM state kept from message 1 to message 3 (spec 5.6): runs per
    #: tick (about 100 bytes each, two ticks kept; size it at least at the peak ML-KEM
    #: resumption rate times the tick) and per handle per tick.  Beyond either, a new
    #: ML-KEM message 1 is NACKed; a kept run is never evicted.
    mlkem_runs_per_tick: int = MLKEM_RUNS_PER_TICK
    mlkem_runs_per_handle: int = MLKEM_RUNS_PER_HANDLE
    #: Width of a time tick; message 3 is accepted in the tick of message 1 or the next one.
    cookie_tick_seconds: float = 10.0
    response_cache_size: int = 4096
    #: Outstanding CredentialNeeded/CommitNeeded requests; beyond it message 1/3 are dropped.
    max_pending: int = 1024
    lookup_timeout: float = 2.0
    #: Handles recently completed (replayed message 3 dropped before any lookup).
    completed_cache_size: int = 65536
    #: Paper mode only: per-peer state between messages 2 and 3 (the proposal needs it).
    paper_half_open_size: int = 1024
    #: Optional: remember the credential answered for message 1 (LRU, until message 3 can
    #: no longer come) so that message 3 needs no second lookup.  0 disables it.  Safe
    #: because the commit's compare-and-set, not this copy, decides: a stale copy only
    #: makes the commit fail.  Only handles the application knew are cached, so a flood of
    #: made-up handles cannot fill it.
    credential_cache_size: int = 0
    default_lifetimes: Lifetimes = field(default_factory=Lifetimes)

    def __post_init__(self) -> None:
        if self.require_x25519 and not self.allow_x25519:
            raise LocalProtocolError("require_x25519 needs allow_x25519")
        if self.require_mlkem and not self.allow_mlkem:
            raise LocalProtocolError("require_mlkem needs allow_mlkem")
        if not (math.isfinite(self.cookie_tick_seconds) and self.cookie_tick_seconds > 0):
            raise LocalProtocolError("cookie_tick_seconds must be positive")
        if not (math.isfinite(self.lookup_timeout) and self.lookup_timeout > 0):
            raise LocalProtocolError("lookup_timeout must be positive")
        for name in (
            "response_cache_size",
            "max_pending",
            "completed_cache_size",
            "paper_half_open_size",
            "mlkem_runs_per_tick",
            "mlkem_runs_per_handle",
        ):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"{name} must be at least 1")
        if self.credential_cache_size < 0:
            raise LocalProtocolError("credential_cache_size must be non-negative")


class _Slot(Slot):
    """One outstanding request to the application (the only per-peer state kept).

    A plain ``__slots__`` class: one is built for every message 1 and 3.  Its ``state``
    changes only through the responder's :class:`~resume.states.SlotTable`.
    """

    __slots__ = (
        "addr",
        "ct_digest",
        "generation",
        "ke",
        "msg2",
        "request",
        "sa",
        "successor",
        "tick",
        "values",
    )

    def __init__(
        self,
        state: SlotState,
        request: Request,
        addr: Address,
        handle: bytes,
        deadline: float,
        values: ks.ResponderValues | None = None,
        tick: int = 0,
        msg2: bytes | None = None,
        ct_digest: bytes | None = None,
    ) -> None:
        super().__init__(state, handle, deadline)
        self.request = request
        self.addr = addr
        self.values = values
        self.tick = tick
        #: compact(message 2) as sent, from the response cache (message 3 then needs not
        #: rebuild it), and the SHA-256 of its ML-KEM ciphertext
        self.msg2 = msg2
        self.ct_digest = ct_digest
        #: the run's key exchange mode, once message 3 is verified
        self.ke = "none"
        # set once message 3 is verified (AWAIT_COMMIT)
        self.sa: SAPair | None = None
        self.generation = 0
        self.successor: Credential | None = None


@dataclass
class _HalfOpen:
    """Paper mode: what message 3 is checked against."""

    cred: Credential
    nonce_i: bytes
    nonce_r: bytes
    lifetimes: Lifetimes
    expires: float


class Responder:
    """Serves every initiator; see the module docstring and ``specs/protocol.md``."""

    def __init__(
        self,
        config: ResponderConfig,
        server_secret: bytes,
        rng: Callable[[int], bytes] = os.urandom,
        *,
        encapsulate: Callable[[bytes], tuple[bytes, bytes]] | None = None,
    ) -> None:
        """``encapsulate(ek) -> (ciphertext, shared secret)`` is the ML-KEM-768
        encapsulation (cryptography's, randomized, by default); like ``rng`` it is injected
        so that vectors and differential tests replay a run (``resume.kem_testing``).  It
        raises DecodeError (or ValueError) for an unusable key."""
        if not isinstance(config, ResponderConfig):
            raise LocalProtocolError("config must be a ResponderConfig")
        if len(server_secret) < MIN_SERVER_SECRET:
            raise LocalProtocolError(f"server secret must be at least {MIN_SERVER_SECRET} bytes")
        self.config = config
        #: HMAC-SHA-512 of the server secret with its pads (and per tick, the tick) absorbed.
        self._prf = ks.ResponderPrf(bytes(server_secret))
        self._rng = rng
        self._encapsulate = (
            encapsulate if encapsulate is not None else ks.mlkem_encapsulate_untrusted
        )
        #: tick -> the ML-KEM runs of message 2s built in that tick (see _MlkemTick)
        self._mlkem_ticks: dict[int, _MlkemTick] = {}
        #: tick -> X25519 key of that tick: random, kept for the current and previous tick
        #: only, then forgotten (forward secrecy even if the server secret leaks later).
        self._tick_keys: dict[int, tuple[X25519PrivateKey, bytes]] = {}
        #: tick -> {compact(message 1): (X25519 shared secret, credential, N_R, run secrets,
        #: ML-KEM shared secret)} as
        #: computed for message 2, taken (once) by message 3, so an exchange costs one X25519
        #: operation and one HKDF-Extract, not two.  Erased with the tick key they were
        #: computed from: never kept longer than the key that could recompute them, so
        #: forward secrecy is unchanged.
        self._tick_runs: dict[int, dict[bytes, _KeptRun]] = {}
        #: When the oldest tick key must go (checked per datagram: one float comparison).
        self._erase_at = math.inf
        self._tick_s = config.cookie_tick_seconds
        self._lookup_timeout = config.lookup_timeout
        #: every outstanding request, and the handles committing or just completed
        self.slots: SlotTable[_Slot] = SlotTable(config.completed_cache_size)
        self._events: deque[Event] = deque()
        self._outbox: list[tuple[bytes, Address]] = []
        #: (address, message 1) -> message 2 as sent, when it expires, its tick and values
        #: (all public: they are in message 2).
        self._response_cache: OrderedDict[tuple[Address, bytes], _CachedResponse] = OrderedDict()
        self._half_open: OrderedDict[tuple[Address, bytes, bytes], _HalfOpen] = OrderedDict()
        self._cred_cache: OrderedDict[bytes, tuple[Credential, Lifetimes, float]] = OrderedDict()
        #: Counters for metrics: datagrams by outcome, drops and NACKs by reason.
        self.stats: collections.Counter[str] = collections.Counter()

    # --- application-facing API ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP payload (non-ESP marker already stripped).  Never raises for any
        ``data``: garbage is dropped and counted and changes no state."""
        self.stats["datagrams"] += 1
        if not math.isfinite(now):
            raise LocalProtocolError(f"now must be a finite time, not {now!r}")
        if now >= self._erase_at:
            self._erase_tick_keys(now)
        try:
            req = parse_request_untrusted(data)
        except DecodeError:
            self.stats["drop_malformed"] += 1
            return
        if isinstance(req, HardenedInit):
            self._on_hardened_init(req, addr, now)
        elif isinstance(req, HardenedAuth):
            self._on_hardened_auth(req, addr, now)
        elif isinstance(req, PaperInit):
            self._on_paper_init(req, addr, now)
        else:
            self._on_paper_auth(req, addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """Earliest deadline: an unanswered request (slots are created in ``now`` order, so
        the first one) or the erasure of an X25519 tick key."""
        times = [self._erase_at] if self._tick_keys or self._mlkem_ticks else []
        first = self.slots.first_deadline()
        if first is not None:
            times.append(first)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Expire requests the application did not answer in time (dropped, counted) and
        erase X25519 tick keys that no message 3 can use any more."""
        self._erase_tick_keys(now)
        for state in self.slots.expire(now):
            self.stats[f"expired_{state.value}"] += 1

    def _erase_tick_keys(self, now: float) -> None:
        self._forget_tick_keys_before(self._tick(now) - 1)

    def _forget_tick_keys_before(self, tick: int) -> None:
        """Erase X25519 keys and ML-KEM runs of ticks before ``tick`` (past runs stay
        secret)."""
        for old in [t for t in self._tick_keys if t < tick]:
            del self._tick_keys[old]
            self._tick_runs.pop(old, None)
        for old in [t for t in self._mlkem_ticks if t < tick]:
            del self._mlkem_ticks[old]
        kept = [*self._tick_keys, *self._mlkem_ticks]
        self._erase_at = (min(kept) + 2) * self._tick_s if kept else math.inf

    def provide_credential(
        self,
        token: int,
        credential: Credential | None,
        lifetimes: Lifetimes | None,
        now: float,
    ) -> None:
        """Answer ``CredentialNeeded``.  ``None`` => the one NACK (fail closed)."""
        slot = self._get_slot(token, ACCEPTS_CREDENTIAL, "provide_credential")
        if slot is None:
            return
        if credential is not None and credential.handle != slot.handle:
            raise LocalProtocolError("credential handle differs from the requested handle")
        lt = lifetimes if lifetimes is not None else self.config.default_lifetimes
        req = slot.request
        if credential is None:
            if slot.state is _AWAIT_CREDENTIAL_1 and self.slots.being_committed(slot.handle):
                # the handle's commit started after this message 1 was read (see
                # _on_hardened_init): not "unknown", only "not yet"; the peer retransmits
                self.slots.advance(token, SlotInput.COMMITTING)
                self.stats["drop_committing"] += 1
                return
            self._refuse(token, slot, "unknown_or_refused")
        elif isinstance(req, HardenedInit):
            self._answer_hardened_init(token, slot, req, credential, lt, now)
        elif isinstance(req, HardenedAuth):
            self._answer_hardened_auth(token, slot, req, credential, lt, now)
        elif isinstance(req, PaperInit):
            self._answer_paper_init(token, slot, req, credential, lt, now)
        else:  # PaperAuth never waits for a credential
            raise LocalProtocolError("no credential request for this token")

    def commit_result(self, token: int, ok: bool, now: float) -> None:
        """Answer ``CommitNeeded``: ``ok`` is the outcome of the compare-and-set."""
        slot = self._get_slot(token, ACCEPTS_COMMIT, "commit_result")
        if slot is None:
            return
        if not ok or slot.sa is None or slot.successor is None:
            self.stats["commit_failed"] += 1
            self._refuse(token, slot, "commit_failed")
            return
        self.slots.advance(token, SlotInput.COMMIT)
        self.stats["complete"] += 1
        self._events.append(
            ResumptionComplete(
                slot.sa, slot.handle, slot.generation, slot.successor, slot.addr, slot.ke
            )
        )

    @property
    def pending(self) -> int:
        """Outstanding requests to the application."""
        return len(self.slots)

    # --- helpers --------------------------------------------------------------------------

    def _tick(self, now: float) -> int:
        if not math.isfinite(now):
            raise LocalProtocolError(f"now must be a finite time, not {now!r}")
        return math.floor(now / self._tick_s)

    def _get_slot(self, token: int, accepted: frozenset[SlotState], what: str) -> _Slot | None:
        slot = self.slots.get(token, accepted, what)
        if slot is None:
            self.stats["late_answer"] += 1  # expired by the timer: not a misuse
        return slot

    def _open(self, slot: _Slot) -> int | None:
        """Open ``slot`` in the table; its token, or None (counted) when max_pending is full."""
        if len(self.slots) >= self.config.max_pending:
            self.stats["drop_overload"] += 1
            return None
        return self.slots.open(slot)

    def _ask_credential(self, slot: _Slot, key: bytes, addr: Address, counter: str) -> None:
        """Open ``slot`` and ask the application for the credential under ``key``."""
        token = self._open(slot)
        if token is not None:
            self.stats[counter] += 1
            self._events.append(CredentialNeeded(token, key, addr))

    def _send(self, data: bytes, addr: Address) -> None:
        self._outbox.append((data, addr))

    def _nack(self, req: Request, addr: Address, reason: str, handle: bytes | None) -> None:
        """The one NACK: same bytes for every reason (a function of the request header)."""
        h = req.header
        spi_r = _ZERO_SPI if h.message_id == 0 else h.spi_r
        self._send(build_nack(h.spi_i, spi_r, h.message_id), addr)
        self.stats["nack"] += 1
        self.stats[f"nack_{reason}"] += 1
        self._events.append(ResumptionFailed(reason, handle, addr))

    def _refuse(self, token: int, slot: _Slot, reason: str) -> None:
        self.slots.advance(token, SlotInput.REFUSED)
        self._nack(slot.request, slot.addr, reason, slot.handle)

    def _cache_response(
        self,
        key: tuple[Address, bytes],
        msg: bytes,
        expires: float,
        tick: int,
        values: ks.ResponderValues,
        compact: bytes | None = None,
        ct_digest: bytes | None = None,
    ) -> None:
        cache = self._response_cache
        cache[key] = (msg, expires, tick, values, msg if compact is None else compact, ct_digest)
        if len(cache) > self.config.response_cache_size:
            cache.popitem(last=False)

    def _cached_response(self, key: tuple[Address, bytes], addr: Address, now: float) -> bool:
        hit = self._response_cache.get(key)
        if hit is None:
            return False
        if now >= hit[1]:
            del self._response_cache[key]
            return False
        self.stats["retransmit_answered"] += 1
        self._send(hit[0], addr)
        return True

    def _tick_key(self, tick: int, create: bool) -> tuple[X25519PrivateKey, bytes] | None:
        key = self._tick_keys.get(tick)
        if key is None and create:
            key = ks.x25519_keypair(self._rng(32))
            self._tick_keys[tick] = key
            self._forget_tick_keys_before(tick - 1)
        return key

    def _mlkem_room(self, tick: int, handle: bytes) -> bool:
        """Whether one more ML-KEM run may be kept for ``handle`` in ``tick``."""
        t = self._mlkem_ticks.get(tick)
        if t is None:
            return True
        return (
            t.total < self.config.mlkem_runs_per_tick
            and t.per_handle[handle] < self.config.mlkem_runs_per_handle
        )

    def _keep_mlkem(self, tick: int, handle: bytes, nonce_r: bytes, run: _MlkemRun) -> None:
        t = self._mlkem_ticks.get(tick)
        if t is None:
            t = self._mlkem_ticks[tick] = _MlkemTick()
            self._forget_tick_keys_before(tick - 1)
        t.runs.setdefault(nonce_r, []).append(run)
        t.per_handle[handle] += 1
        t.total += 1

    def _first_run(
        self,
        init: HardenedInit,
        cred: Credential,
        values: ks.ResponderValues,
        tick: int,
    ) -> tuple[ks.RunSecrets, bytes | None, bytes | None, bytes | None]:
        """Message 1: the run's secrets, our X25519 share, the ML-KEM ciphertext and its
        SHA-256 (None without each).  Raises DecodeError for an unusable share or key; the
        caller checked the ML-KEM bounds."""
        dh = ss = b""
        ke_r = ct = digest = None
        x25519 = init.ke is not None and self.config.allow_x25519
        if x25519:
            tk = self._tick_key(tick, True)
            if tk is None:  # the rng failed to give a key
                raise LocalProtocolError("internal: no tick key")
            priv, ke_r = tk
            dh = ks.x25519_shared_untrusted(priv, init.ke or b"")
        if init.mlkem is not None and self.config.allow_mlkem:
            try:
                ct, ss = self._encapsulate(init.mlkem)
            except ValueError as exc:
                raise DecodeError(f"unusable ML-KEM-768 key: {exc}") from None
            digest = ks.ke_digest(ct)
            self._keep_mlkem(tick, init.handle, values.nonce_r, (ss, digest))
        rs = ks.run_secrets(cred, init.nonce, values.nonce_r, dh, False, ss)
        if x25519:  # keep for message 3 (bounded per tick): one X25519 and Extract saved
            runs = self._tick_runs.setdefault(tick, {})
            if len(runs) < self.config.response_cache_size:
                runs[init.compact] = (dh, cred, values.nonce_r, rs, ss)
        return rs, ke_r, ct, digest

    def _dh_again(
        self, init: HardenedInit, cred: Credential, values: ks.ResponderValues, tick: int
    ) -> tuple[bytes, bytes | None, _KeptRun | None] | None:
        """Message 3: the X25519 secret, our share and the run kept from message 1 (when the
        same credential record and address computed it); None when the tick key is gone."""
        if init.ke is None or not self.config.allow_x25519:
            return b"", None, None
        tk = self._tick_key(tick, False)
        if tk is None:
            return None
        priv, ke_r = tk
        kept = self._tick_runs.setdefault(tick, {}).pop(init.compact, None)
        if kept is None:
            return ks.x25519_shared_untrusted(priv, init.ke), ke_r, None
        if kept[1] is cred and kept[2] == values.nonce_r:
            return kept[0], ke_r, kept
        return kept[0], ke_r, None  # another credential record or address: the secret holds

    @staticmethod
    def _msg2(
        init: HardenedInit,
        values: ks.ResponderValues,
        rs: ks.RunSecrets,
        ke_r: bytes | None,
        mlkem: bytes | None,
        digest: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """Message 2 and compact(message 2) (``mlkem``: the ciphertext, or None; ``digest``:
        its SHA-256 when known).  MAC_2 covers the compact forms, so message 3 processing
        can rebuild compact(message 2) from the kept SHA-256 of the ciphertext."""
        sa = init.sa
        sa_r = ResumeSA(values.esp_spi, sa.encr, sa.key_bits, sa.integ, sa.mode)
        spi_i = init.header.spi_i
        if mlkem is not None and digest is None:
            digest = ks.ke_digest(mlkem)
        compact = build_hardened_resp_prefix(
            spi_i, values.spi_r, sa_r, values.nonce_r, ke_r, digest
        )
        mac = ks.mac_msg2(rs.mac_r(), init.compact, compact)
        if mlkem is None:
            return compact + mac, compact + mac
        full = build_hardened_resp_prefix(spi_i, values.spi_r, sa_r, values.nonce_r, ke_r, mlkem)
        return full + mac, compact + mac

    def _credential_usable(self, req: HardenedInit, cred: Credential) -> str | None:
        if cred.mode is not ProtocolMode.HARDENED:
            return "mode_mismatch"
        if req.sa[1:] != ks.params_info(cred.params).wire:
            return "params_mismatch"
        if self.config.require_pq_lineage and not cred.lineage.is_pq:
            return "lineage"
        return None

    # --- hardened mode ----------------------------------------------------------------------

    def _on_hardened_init(self, req: HardenedInit, addr: Address, now: float) -> None:
        if self._cached_response((addr, req.compact), addr, now):
            return
        if self.slots.being_committed(req.handle):
            # A commit in flight is about this handle (e.g. the peer's previous process
            # sent message 3 and was restarted): answered now, the store's view would be
            # stale -- a NACK for the successor, or message 2 for a generation being
            # consumed -- and the peer would fall back or end up a generation apart.
            self.stats["drop_committing"] += 1
            return
        if req.ke is None and self.config.require_x25519:
            self._nack(req, addr, "x25519_required", req.handle)
            return
        if req.mlkem is None and self.config.require_mlkem:
            self._nack(req, addr, "mlkem_required", req.handle)
            return
        # The cookie values are computed once the credential is known (from the tick of
        # arrival): a message 1 for an unknown handle costs its NACK, not the PRF.
        slot = _Slot(
            _AWAIT_CREDENTIAL_1, req, addr, req.handle, now + self._lookup_timeout,
            None, self._tick(now),
        )  # fmt: skip
        self._ask_credential(slot, req.handle, addr, "msg1")

    def _answer_hardened_init(
        self,
        token: int,
        slot: _Slot,
        req: HardenedInit,
        cred: Credential,
        lt: Lifetimes,
        now: float,
    ) -> None:
        problem = self._credential_usable(req, cred)
        if problem is not None:
            self._refuse(token, slot, problem)
            return
        mlkem = req.mlkem is not None and self.config.allow_mlkem
        if mlkem and not self._mlkem_room(slot.tick, req.handle):
            self._refuse(token, slot, "mlkem_busy")
            return
        values = self._prf.values(slot.tick, slot.addr, req.compact)
        try:
            rs, ke_r, ct, digest = self._first_run(req, cred, values, slot.tick)
        except DecodeError:
            self._refuse(token, slot, "bad_key_share")
            return
        msg2, compact2 = self._msg2(req, values, rs, ke_r, ct, digest)
        self.slots.advance(token, SlotInput.CREDENTIAL)
        self.stats["msg2"] += 1
        self._outbox.append((msg2, slot.addr))
        expires = (slot.tick + 2) * self._tick_s  # as long as message 3 may come
        self._cache_response(
            (slot.addr, req.compact), msg2, expires, slot.tick, values, compact2, digest
        )
        if self.config.credential_cache_size:
            self._cred_cache[req.handle] = (cred, lt, expires)
            self._cred_cache.move_to_end(req.handle)
            while len(self._cred_cache) > self.config.credential_cache_size:
                self._cred_cache.popitem(last=False)

    def _cookie(
        self, req: HardenedAuth, addr: Address, now: float
    ) -> tuple[ks.ResponderValues, int, bytes | None, bytes | None] | None:
        """Check the responder SPI of a message 3 (the cookie); return the values, the tick
        of message 1 and, when still cached, compact(message 2) as sent and the SHA-256 of
        its ML-KEM ciphertext.

        The response cache holds message 2 for (address, message 1) exactly while the
        cookie is valid, with the values it was built from: a hit whose SPI matches spares
        recomputing them and rebuilding message 2.  Otherwise (evicted, or another process
        of the cluster answered message 1) they are recomputed for the current and the
        previous tick.  Either way the SPI is compared in constant time.
        """
        init = req.init
        tick = self._tick(now)
        hit = self._response_cache.get((addr, init.compact))
        if (
            hit is not None
            and tick - 1 <= hit[2] <= tick
            and ks.macs_equal(hit[3].spi_r, req.header.spi_r)
        ):
            self.stats["msg3_cached_msg2"] += 1
            return hit[3], hit[2], hit[4], hit[5]
        for t in (tick, tick - 1):
            v = self._prf.values(t, addr, init.compact)
            if ks.macs_equal(v.spi_r, req.header.spi_r):
                return v, t, None, None
        return None

    def _on_hardened_auth(self, req: HardenedAuth, addr: Address, now: float) -> None:
        init = req.init
        if self.slots.busy(init.handle):
            self.stats["drop_replayed_msg3"] += 1
            return
        cookie = self._cookie(req, addr, now)
        if cookie is None:
            self._nack(req, addr, "stale_or_forged_cookie", init.handle)
            return
        values, tick, msg2, ct_digest = cookie
        slot = _Slot(
            _AWAIT_CREDENTIAL_3,
            req,
            addr,
            init.handle,
            now + self._lookup_timeout,
            values,
            tick,
            msg2,
            ct_digest,
        )
        cached = self._cred_cache.pop(init.handle, None) if self._cred_cache else None
        if cached is not None and now < cached[2]:
            token = self._open(slot)
            if token is not None:
                self.stats["msg3"] += 1
                self.stats["credential_cache_hit"] += 1
                self._answer_hardened_auth(token, slot, req, cached[0], cached[1], now)
            return
        self._ask_credential(slot, init.handle, addr, "msg3")

    def _answer_hardened_auth(
        self,
        token: int,
        slot: _Slot,
        req: HardenedAuth,
        cred: Credential,
        lt: Lifetimes,
        now: float,
    ) -> None:
        init = req.init
        problem = self._credential_usable(init, cred)
        values = slot.values
        if problem is not None or values is None:
            self._refuse(token, slot, problem or "internal")
            return
        if self.slots.busy(init.handle):
            self.stats["drop_replayed_msg3"] += 1
            self.slots.advance(token, SlotInput.REPLAYED)
            return
        mlkem = init.mlkem is not None and self.config.allow_mlkem
        candidates: list[tuple[bytes, bytes | None]] = [(b"", None)]
        if mlkem:
            kept_ml = self._mlkem_ticks.get(slot.tick)
            found = None if kept_ml is None else kept_ml.runs.get(values.nonce_r)
            if not found:
                self._refuse(token, slot, "mlkem_state_missing")
                return
            candidates = list(found)
        try:
            x = self._dh_again(init, cred, values, slot.tick)
        except DecodeError:
            self._refuse(token, slot, "bad_key_share")
            return
        if x is None:
            self._refuse(token, slot, "stale_or_forged_cookie")
            return
        dh, ke_r, kept = x
        prefix3 = req.raw[:-_MAC_LEN]
        for ss, digest in candidates:
            if kept is not None and ks.macs_equal(kept[4], ss):
                rs = kept[3]
            else:
                rs = ks.run_secrets(cred, init.nonce, values.nonce_r, dh, True, ss)
            # the cached message 2 is the last one sent for this message 1; a candidate of
            # an earlier one (its cache entry was evicted meanwhile) is rebuilt
            compact2 = slot.msg2 if digest == slot.ct_digest else None
            if compact2 is None:
                compact2 = self._msg2(init, values, rs, ke_r, None, digest)[1]
            expected = ks.mac_msg3(rs.mac_i(), init.compact, compact2, prefix3)
            if ks.macs_equal(expected, req.mac):
                break
        else:
            self._refuse(token, slot, "bad_mac")
            return
        if mlkem:  # verified: its shared secret is no longer needed
            self._mlkem_ticks[slot.tick].runs.pop(values.nonce_r, None)
        slot.sa, slot.successor = ks.finish_run(
            "responder", cred, rs, values.esp_spi, init.sa.spi, lt, mlkem
        )
        slot.ke = ke_mode(ke_r is not None, mlkem)
        slot.next_handle = slot.successor.handle
        slot.generation = cred.generation
        self.slots.advance(token, SlotInput.VERIFIED, now + self._lookup_timeout)
        self._commit(token, slot)

    def _commit(self, token: int, slot: _Slot) -> None:
        """Ask for the compare-and-set of a slot in AWAIT_COMMIT."""
        if slot.successor is None:
            raise LocalProtocolError("internal: commit without a successor")
        self.stats["commit_requested"] += 1
        self._events.append(
            CommitNeeded(token, slot.handle, slot.generation, slot.successor, slot.sa)
        )

    # --- paper mode (2007 proposal; insecure, off by default) -------------------------------

    def _on_paper_init(self, req: PaperInit, addr: Address, now: float) -> None:
        if not self.config.allow_paper_mode:
            self._nack(req, addr, "paper_disabled", None)
            return
        if self._cached_response((addr, req.raw), addr, now):
            return
        if self.slots.being_committed(req.id_i):  # as for hardened message 1
            self.stats["drop_committing"] += 1
            return
        tick = self._tick(now)
        slot = _Slot(
            SlotState.AWAIT_CREDENTIAL_1,
            req,
            addr,
            req.id_i,
            now + self._lookup_timeout,
            self._prf.values(tick, addr, req.raw),
            tick,
        )
        self._ask_credential(slot, req.id_i, addr, "msg1")

    def _answer_paper_init(
        self, token: int, slot: _Slot, req: PaperInit, cred: Credential, lt: Lifetimes, now: float
    ) -> None:
        if cred.mode is not ProtocolMode.PAPER or cred.paper_keys is None or slot.values is None:
            self._refuse(token, slot, "mode_mismatch")
            return
        v = slot.values
        prefix = build_paper_resp_prefix(req.header.spi_i, v.spi_r, cred.id_r, v.nonce_r)
        key = ks.paper_auth_key(cred.paper_keys.r_to_i)
        msg2 = prefix + ks.paper_mac(key, cred.id_r, req.nonce, v.nonce_r)
        self.slots.advance(token, SlotInput.CREDENTIAL)
        expires = (slot.tick + 2) * self._tick_s  # as long as message 3 may come
        self._half_open[(slot.addr, req.header.spi_i, v.spi_r)] = _HalfOpen(
            cred, req.nonce, v.nonce_r, lt, expires
        )
        while len(self._half_open) > self.config.paper_half_open_size:
            self._half_open.popitem(last=False)
        self.stats["msg2"] += 1
        self._send(msg2, slot.addr)
        self._cache_response((slot.addr, req.raw), msg2, expires, slot.tick, v)

    def _on_paper_auth(self, req: PaperAuth, addr: Address, now: float) -> None:
        if not self.config.allow_paper_mode:
            self._nack(req, addr, "paper_disabled", None)
            return
        half = self._half_open.pop((addr, req.header.spi_i, req.header.spi_r), None)
        pk = None if half is None else half.cred.paper_keys
        if half is None or pk is None or now >= half.expires:
            self._nack(req, addr, "no_half_open", None)
            return
        cred = half.cred
        if not ks.macs_equal(req.id_i, cred.id_i):
            self._nack(req, addr, "bad_mac", cred.handle)
            return
        key = ks.paper_auth_key(pk.i_to_r)
        expected = ks.paper_mac(key, cred.id_i, half.nonce_i, half.nonce_r)
        if not ks.macs_equal(expected, req.mac):
            self._nack(req, addr, "bad_mac", cred.handle)
            return
        if self.slots.committing(cred.handle):
            self.stats["drop_replayed_msg3"] += 1
            return
        slot = _Slot(SlotState.AWAIT_COMMIT, req, addr, cred.handle, now + self._lookup_timeout)
        slot.sa = ks.paper_sa_pair("responder", cred, half.lifetimes)
        slot.generation = cred.generation
        slot.successor = ks.paper_successor(cred)
        token = self._open(slot)
        if token is not None:
            self.stats["msg3"] += 1
            self._commit(token, slot)

    def describe(self) -> dict[str, Any]:
        """Counters and table sizes (no secrets) for metrics endpoints."""
        return {
            "stats": dict(self.stats),
            "pending": len(self.slots),
            "response_cache": len(self._response_cache),
            "half_open": len(self._half_open),
            "mlkem_runs": sum(len(c) for t in self._mlkem_ticks.values() for c in t.runs.values()),
        }
