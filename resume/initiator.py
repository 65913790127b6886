"""The initiator: one sans-I/O object per resumption attempt.

It sends message 1, retransmits it with exponential backoff, and on a valid message 2 asks
the application to store the successor credential (``SaveSuccessor``); only once the
application says it is durable (``successor_saved``) does it send message 3 and report
``ResumptionComplete`` (write-ahead: a crash at any point leaves the application holding
the successor next to the generation it used, spec 6.1 step 5 and 9.2; if the save fails,
``successor_save_failed`` ends the attempt with nothing sent).  A NACK is an
unauthenticated hint: it can only make the initiator give up (``FallbackToFullIKE("nack")``)
-- or, when the application passed the ``previous`` generation (kept because the responder
may never have seen our last message 3), retry once with it.  Nothing a NACK says is
trusted for anything else.

Randomness comes from ``rng`` (``os.urandom`` by default) so test vectors can replay a run.
Draw order per attempt: IKE SPI (8), N_I (32), inbound ESP SPI (4), X25519 private key (32,
hardened mode with X25519 only), ML-KEM-768 seed ``d | z`` (64, when ML-KEM is offered).

ML-KEM-768 (``InitiatorConfig.mlkem``): "off" sends none; "offer" sends an encapsulation key
and accepts a message 2 with or without a ciphertext (the MAC covers which); "require" falls
back to full IKE (``"pq_refused"``) on an authenticated message 2 without one.  Default
"off": a responder older than ML-KEM support does not parse a message 1 carrying KE(36) and
stays silent, which would cost the full timeout before the fallback.
"""

from __future__ import annotations

import collections
import math
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from resume import keyschedule as ks
from resume.credential import Credential, ProtocolMode
from resume.errors import DecodeError, LocalProtocolError
from resume.events import (
    Address,
    Event,
    FallbackToFullIKE,
    ResumptionComplete,
    SaveSuccessor,
    ke_mode,
)
from resume.sa import Lifetimes
from resume.states import InitiatorInput, InitiatorState, initiator_next
from resume.wire import (
    MAC_LEN,
    NONCE_LEN,
    HardenedResp,
    Nack,
    PaperResp,
    ResumeSA,
    build_hardened_auth_prefix,
    build_hardened_init,
    build_paper_auth_prefix,
    build_paper_init,
    compact_message,
    parse_response_untrusted,
)

IKE_PORT = 500
#: A replayed message 2 makes a completed initiator resend message 3 at most this often.
MAX_MSG3_RESENDS = 3
NATT_PORT = 4500
#: ``InitiatorConfig.mlkem`` values.
MLKEM_POLICIES = ("off", "offer", "require")
MLKEM_SEED_LEN = 64


@dataclass(frozen=True)
class InitiatorConfig:
    """Initiator policy.  Paper mode (2007, insecure ESP key reuse) is off by default."""

    allow_paper_mode: bool = False
    use_x25519: bool = True
    #: Give up (fallback) if the responder answers without X25519.
    require_x25519: bool = False
    #: ML-KEM-768 in the exchange: "off", "offer" or "require" (see the module docstring).
    mlkem: str = "off"
    initial_rto: float = 0.5
    max_retransmits: int = 3
    #: Overall time for one attempt (including a retry with the previous generation).
    timeout: float = 4.0
    default_lifetimes: Lifetimes = field(default_factory=Lifetimes)

    def __post_init__(self) -> None:
        if self.require_x25519 and not self.use_x25519:
            raise LocalProtocolError("require_x25519 needs use_x25519")
        if self.mlkem not in MLKEM_POLICIES:
            raise LocalProtocolError(f"mlkem must be one of {', '.join(MLKEM_POLICIES)}")
        for name in ("initial_rto", "timeout"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise LocalProtocolError(f"{name} must be positive")
        if self.max_retransmits < 0:
            raise LocalProtocolError("max_retransmits must be non-negative")


class Initiator:
    """One resumption attempt with ``credential`` (see module docstring)."""

    def __init__(
        self,
        credential: Credential,
        config: InitiatorConfig | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        *,
        previous: Credential | None = None,
        peer: Address | None = None,
        lifetimes: Lifetimes | None = None,
    ) -> None:
        self.config = config if config is not None else InitiatorConfig()
        for cred in (credential, previous):
            paper = cred is not None and cred.mode is ProtocolMode.PAPER
            if paper and not self.config.allow_paper_mode:
                raise LocalProtocolError(
                    "paper mode (2007 proposal: reuses ESP keys, insecure) is disabled; "
                    "set InitiatorConfig(allow_paper_mode=True) to use it"
                )
        if previous is not None and (
            previous.mode is not credential.mode
            or previous.generation >= credential.generation
            or previous.id_i != credential.id_i
            or previous.id_r != credential.id_r
        ):
            raise LocalProtocolError("previous must be an older generation of the same pair")
        self._cred = credential
        self._previous = previous
        self._rng = rng
        if peer is None:
            p = credential.params
            port = NATT_PORT if p.natt_responder_port is not None else IKE_PORT
            peer = (p.responder_addr, port)
        self.peer: Address = peer
        self._lifetimes = lifetimes if lifetimes is not None else self.config.default_lifetimes
        self.state = InitiatorState.IDLE
        self._events: deque[Event] = deque()
        self._outbox: list[bytes] = []
        self.stats: collections.Counter[str] = collections.Counter()
        # per attempt
        self._spi_i = b""
        self._nonce_i = b""
        self._esp_spi = 0
        self._x25519: X25519PrivateKey | None = None
        self._mlkem: MLKEM768PrivateKey | None = None
        self._msg1 = b""
        #: compact(message 1): what message 3 echoes and the MACs cover
        self._compact1 = b""
        self._msg2 = b""
        self._msg3 = b""
        self._completion: ResumptionComplete | None = None
        self._rto = self.config.initial_rto
        self._retransmits = 0
        self._next_retransmit = math.inf
        self._deadline = math.inf

    # --- API --------------------------------------------------------------------------------

    @property
    def credential(self) -> Credential:
        """The credential of the current (or completed) attempt."""
        return self._cred

    def initiate(self, now: float) -> None:
        self._advance(InitiatorInput.INITIATE)
        self._deadline = now + self.config.timeout
        self._start(now)

    def successor_saved(self, now: float) -> None:
        """Answer ``SaveSuccessor``: the successor is durable.  Sends message 3 and reports
        ``ResumptionComplete``.  LocalProtocolError outside SAVE_SUCCESSOR."""
        self._advance(InitiatorInput.SUCCESSOR_SAVED)
        if self._completion is None:  # pragma: no cover (set with the state)
            raise LocalProtocolError("internal: saved without a completion")
        self._outbox.append(self._msg3)
        self.stats["complete"] += 1
        self._events.append(self._completion)

    def successor_save_failed(self, now: float) -> None:
        """Answer ``SaveSuccessor``: the successor could not be stored.  Message 3 is never
        sent, so the credential used stays valid at the responder; reports
        ``FallbackToFullIKE("save_failed")``.  LocalProtocolError outside SAVE_SUCCESSOR."""
        self._advance(InitiatorInput.SAVE_FAILED)
        self._msg3 = b""
        self._completion = None
        self.stats["save_failed"] += 1
        self._events.append(FallbackToFullIKE("save_failed"))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP payload from the responder; never raises for any ``data``."""
        self.stats["datagrams"] += 1
        if self.state is InitiatorState.SAVE_SUCCESSOR:
            # message 3 does not exist for the network yet: a repeated message 2 (we
            # retransmitted message 1) must not make us send it before the successor is saved
            self.stats["drop_while_saving"] += 1
            return
        if self.state is InitiatorState.DONE:
            if self._msg2 and data == self._msg2 and self.stats["msg3_resent"] < MAX_MSG3_RESENDS:
                # our message 3 was lost and we retransmitted message 1: send it again
                self._advance(InitiatorInput.DUPLICATE_RESPONSE)
                self.stats["msg3_resent"] += 1
                self._outbox.append(self._msg3)
            else:
                self.stats["drop_after_done"] += 1
            return
        if self.state is not InitiatorState.WAIT_RESPONSE:
            self.stats["drop_wrong_state"] += 1
            return
        try:
            resp = parse_response_untrusted(data)
        except DecodeError:
            self.stats["drop_malformed"] += 1
            return
        if not ks.macs_equal(resp.header.spi_i, self._spi_i):
            self.stats["drop_wrong_spi"] += 1
            return
        if isinstance(resp, Nack):
            self._on_nack(resp, now)
        elif isinstance(resp, HardenedResp):
            self._on_hardened_resp(resp)
        else:
            self._on_paper_resp(resp)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outbox = self._outbox, []
        return [(d, self.peer) for d in out]

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self.state is not InitiatorState.WAIT_RESPONSE:
            return None
        return min(self._next_retransmit, self._deadline)

    def handle_timer(self, now: float) -> None:
        if self.state is not InitiatorState.WAIT_RESPONSE:
            return
        if now >= self._deadline:
            self._advance(InitiatorInput.TIMEOUT)
            self.stats["timeout"] += 1
            self._events.append(FallbackToFullIKE("timeout"))
        elif now >= self._next_retransmit:
            self._advance(InitiatorInput.RETRANSMIT)
            self.stats["retransmit"] += 1
            self._outbox.append(self._msg1)
            self._retransmits += 1
            self._rto *= 2
            self._next_retransmit = (
                now + self._rto if self._retransmits < self.config.max_retransmits else math.inf
            )

    # --- internals --------------------------------------------------------------------------

    def _advance(self, event: InitiatorInput) -> None:
        nxt = initiator_next(self.state, event)
        if nxt is None:
            raise LocalProtocolError(f"internal: {event.value} in {self.state.value}")
        self.state = nxt

    def _draw(self, n: int) -> bytes:
        b = self._rng(n)
        if len(b) != n:
            raise LocalProtocolError("rng returned the wrong number of bytes")
        return b

    def _start(self, now: float) -> None:
        """A fresh attempt: new IKE SPI, nonce, ESP SPI and X25519 key every time."""
        spi = self._draw(8)
        self._spi_i = spi if spi != b"\x00" * 8 else b"\x00" * 7 + b"\x01"
        self._nonce_i = self._draw(NONCE_LEN)
        cred = self._cred
        if cred.mode is ProtocolMode.PAPER:
            self._msg1 = build_paper_init(self._spi_i, cred.id_i, self._nonce_i)
        else:
            self._esp_spi = ks.esp_spi_from(self._draw(4))
            ke = ek = None
            self._x25519 = self._mlkem = None
            if self.config.use_x25519:
                self._x25519, ke = ks.x25519_keypair(self._draw(32))
            if self.config.mlkem != "off":
                self._mlkem, ek = ks.mlkem_keypair(self._draw(MLKEM_SEED_LEN))
            p = cred.params
            sa = ResumeSA(
                self._esp_spi, int(p.encr), p.encr_key_bits, int(p.integ), ks.mode_code(p.mode)
            )
            self._msg1 = build_hardened_init(self._spi_i, cred.handle, sa, self._nonce_i, ke, ek)
            self._compact1 = compact_message(self._msg1)
        self._outbox.append(self._msg1)
        self._rto = self.config.initial_rto
        self._retransmits = 0
        self._next_retransmit = now + self._rto if self.config.max_retransmits > 0 else math.inf

    def _on_nack(self, resp: Nack, now: float) -> None:
        if resp.header.message_id != 0:
            self.stats["drop_nack_msg3"] += 1
            return
        self.stats["nack"] += 1
        if self._previous is not None:
            # lost-message-3 rule: the responder may still hold the previous generation
            self._advance(InitiatorInput.NACK_RETRY_PREVIOUS)
            self._cred, self._previous = self._previous, None
            self.stats["retry_previous"] += 1
            self._start(now)
            return
        self._advance(InitiatorInput.NACK)
        self._events.append(FallbackToFullIKE("nack"))

    def _complete(self, msg2: bytes, msg3: bytes, event: ResumptionComplete) -> None:
        """A valid message 2: keep message 3 back until the application saved the successor."""
        self._advance(InitiatorInput.VALID_RESPONSE)
        self._msg2, self._msg3 = msg2, msg3
        self._completion = event
        self._events.append(
            SaveSuccessor(event.handle, event.generation, event.successor, event.sa)
        )

    def _on_hardened_resp(self, resp: HardenedResp) -> None:
        cred = self._cred
        p = cred.params
        if cred.mode is not ProtocolMode.HARDENED:
            self.stats["drop_mode"] += 1
            return
        sa = resp.sa
        if (sa.encr, sa.key_bits, sa.integ, sa.mode) != (
            int(p.encr),
            p.encr_key_bits,
            int(p.integ),
            ks.mode_code(p.mode),
        ):
            self.stats["drop_params"] += 1
            return
        dh = ss = b""
        if resp.ke is not None:
            if self._x25519 is None:
                self.stats["drop_unexpected_ke"] += 1
                return
            try:
                dh = ks.x25519_shared_untrusted(self._x25519, resp.ke)
            except DecodeError:
                self.stats["drop_bad_ke"] += 1
                return
        if resp.mlkem is not None:
            if self._mlkem is None:
                self.stats["drop_unexpected_ke"] += 1
                return
            # never fails for a ciphertext of the right length (the parser checked it): a
            # forged one yields a wrong secret and MAC_2 fails below (implicit rejection)
            ss = ks.mlkem_decapsulate(self._mlkem, resp.mlkem)
        rs = ks.run_secrets(cred, self._nonce_i, resp.nonce, dh, False, ss)
        compact2 = resp.compact
        expected = ks.mac_msg2(rs.mac_r(), self._compact1, compact2[:-MAC_LEN])
        if not ks.macs_equal(expected, resp.mac):
            self.stats["drop_bad_mac"] += 1
            return
        if resp.ke is None and self.config.require_x25519:
            # authenticated refusal of X25519 by the responder
            self._advance(InitiatorInput.NACK)
            self._events.append(FallbackToFullIKE("nack"))
            return
        if resp.mlkem is None and self.config.mlkem == "require":
            # authenticated refusal of ML-KEM (MAC_2 covers compact(m1) with our KE(36))
            self._advance(InitiatorInput.NACK)
            self.stats["pq_refused"] += 1
            self._events.append(FallbackToFullIKE("pq_refused"))
            return
        mlkem = resp.mlkem is not None
        prefix = build_hardened_auth_prefix(self._spi_i, resp.header.spi_r, self._compact1)
        keys = ks.complete_run(cred, rs, sa.spi, self._esp_spi)
        msg3 = prefix + ks.mac_msg3(keys.mac_i, self._compact1, compact2, prefix)
        sa_pair = ks.sa_pair("initiator", cred, keys, sa.spi, self._esp_spi, self._lifetimes)
        event = ResumptionComplete(
            sa_pair,
            cred.handle,
            cred.generation,
            ks.successor_credential(cred, keys, mlkem),
            self.peer,
            ke_mode(resp.ke is not None, mlkem),
        )
        self._complete(resp.raw, msg3, event)

    def _on_paper_resp(self, resp: PaperResp) -> None:
        cred = self._cred
        pk = cred.paper_keys
        if cred.mode is not ProtocolMode.PAPER or pk is None:
            self.stats["drop_mode"] += 1
            return
        if not ks.macs_equal(resp.id_r, cred.id_r):
            self.stats["drop_bad_mac"] += 1
            return
        key_r = ks.paper_auth_key(pk.r_to_i)
        expected = ks.paper_mac(key_r, cred.id_r, self._nonce_i, resp.nonce)
        if not ks.macs_equal(expected, resp.mac):
            self.stats["drop_bad_mac"] += 1
            return
        prefix = build_paper_auth_prefix(self._spi_i, resp.header.spi_r, cred.id_i)
        key_i = ks.paper_auth_key(pk.i_to_r)
        msg3 = prefix + ks.paper_mac(key_i, cred.id_i, self._nonce_i, resp.nonce)
        event = ResumptionComplete(
            ks.paper_sa_pair("initiator", cred, self._lifetimes),
            cred.handle,
            cred.generation,
            ks.paper_successor(cred),
            self.peer,
        )
        self._complete(resp.raw, msg3, event)
