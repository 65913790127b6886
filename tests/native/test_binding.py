"""The binding's own promises: a panic never crosses into Python (it becomes NativePanic),
errors surface as resume.errors' types, and the batch API is the per-datagram API."""

from __future__ import annotations

import math

import pytest

from resume import native
from resume.errors import DecodeError, LocalProtocolError
from resume.events import CredentialNeeded
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import ResponderConfig
from resume.testing import SERVER_ADDR, simulated_full_ike


@pytest.mark.parametrize("inside_detach", [False, True])
def test_a_panic_becomes_native_panic(inside_detach: bool) -> None:
    n = native._require()
    with pytest.raises(n.NativePanic, match="panic in the native core"):
        n._panic_probe(inside_detach)
    assert issubclass(n.NativePanic, RuntimeError)
    # the interpreter is intact and the module still works afterwards
    assert n.hmac_sha256(b"k", b"m") != b""


def test_decoding_and_misuse_raise_the_python_core_errors() -> None:
    n = native._require()
    with pytest.raises(DecodeError):
        n.parse_request(b"\x00" * 10)
    with pytest.raises(DecodeError):
        n.x25519_shared(b"\x01" * 32, bytes(32))
    r = native.NativeResponder(ResponderConfig(), b"K" * 32)
    with pytest.raises(LocalProtocolError, match="never issued"):
        r.provide_credential(7, None, None, 1.0)
    with pytest.raises(LocalProtocolError):
        r.receive_datagram(b"x", ("192.0.2.9", 500), math.nan)
    with pytest.raises(LocalProtocolError):
        native.NativeResponder(ResponderConfig(allow_paper_mode=True), b"K" * 32)
    with pytest.raises(LocalProtocolError):
        native.NativeResponder(ResponderConfig(), b"short")
    with pytest.raises(ValueError, match="not an IP address"):
        r.receive_datagram(b"x", ("not-an-ip", 500), 1.0)


def _messages1(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        init = Initiator(
            simulated_full_ike(), InitiatorConfig(use_x25519=i % 2 == 0), peer=SERVER_ADDR
        )
        init.initiate(0.0)
        out.append(init.datagrams_to_send(0.0)[0][0])
    return out


def test_batch_equals_one_datagram_at_a_time() -> None:
    msgs = [*_messages1(20), b"garbage", b"\x00" * 40]
    addrs = [(f"198.51.100.{i % 7 + 1}", 500 + i) for i in range(len(msgs))]
    now = 5_000.0
    one = native.NativeResponder(ResponderConfig(), b"K" * 32, rng=native.SeededRng(b"r"))
    batch = native.NativeResponder(ResponderConfig(), b"K" * 32, rng=native.SeededRng(b"r"))
    for m, a in zip(msgs, addrs, strict=True):
        one.receive_datagram(m, a, now)
    events_one = []
    while (ev := one.next_event()) is not None:
        events_one.append(ev)
    out, events = batch.process(now, list(zip(msgs, addrs, strict=True)))
    assert [native.responder_event(e) for e in events] == events_one
    assert out == [] and one.datagrams_to_send(now) == []
    # answer every lookup "unknown" in one batch: NACKs, the same as one by one
    for ev in events_one:
        assert isinstance(ev, CredentialNeeded)
        one.provide_credential(ev.token, None, None, now)
    out, events = batch.process(now, credentials=[(e.token, None, None) for e in events_one])
    assert out == one.datagrams_to_send(now) and len(out) == 20
    assert batch.stats == one.stats


def test_a_misused_token_in_a_batch_loses_nothing() -> None:
    r = native.NativeResponder(ResponderConfig(), b"K" * 32)
    [m1] = _messages1(1)
    with pytest.raises(LocalProtocolError, match="never issued"):
        r.process(1.0, [(m1, ("192.0.2.5", 500))], credentials=[(99, None, None)])
    # the datagram of that batch was processed and its event kept for the next call
    out, events = r.process(1.0)
    assert out == [] and [e[0] for e in events] == ["credential"]


def test_make_picks_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from resume.credential import ProtocolMode
    from resume.initiator import Initiator as PyInitiator
    from resume.responder import Responder as PyResponder

    secret = b"K" * 32
    monkeypatch.delenv(native.CORE_ENV, raising=False)
    assert isinstance(native.make_responder(ResponderConfig(), secret), native.NativeResponder)
    paper = ResponderConfig(allow_paper_mode=True)
    assert isinstance(native.make_responder(paper, secret), PyResponder)
    assert isinstance(
        native.make_responder(ResponderConfig(), secret, lambda n: b"\0" * n), PyResponder
    )
    with pytest.raises(LocalProtocolError, match="paper mode"):
        native.make_responder(paper, secret, native=True)
    monkeypatch.setenv(native.CORE_ENV, "python")
    assert isinstance(native.make_responder(ResponderConfig(), secret), PyResponder)
    monkeypatch.setenv(native.CORE_ENV, "native")
    assert isinstance(native.make_responder(ResponderConfig(), secret), native.NativeResponder)
    monkeypatch.setenv(native.CORE_ENV, "rust")
    with pytest.raises(LocalProtocolError, match="IKERESUME_CORE"):
        native.make_responder(ResponderConfig(), secret)
    monkeypatch.delenv(native.CORE_ENV)
    cred = simulated_full_ike()
    assert isinstance(native.make_initiator(cred), native.NativeInitiator)
    assert isinstance(native.make_initiator(cred, native=False), PyInitiator)
    paper_cred = simulated_full_ike(mode=ProtocolMode.PAPER)
    cfg = InitiatorConfig(allow_paper_mode=True)
    assert isinstance(native.make_initiator(paper_cred, cfg), PyInitiator)


def test_a_misused_answer_leaves_the_slot_in_its_place() -> None:
    """A credential for another handle raises and changes nothing: the oldest lookup still
    sets the timer (as in the Python core's SlotTable)."""
    r = native.NativeResponder(ResponderConfig(lookup_timeout=2.0), b"K" * 32)
    m_a, m_b = _messages1(2)
    r.receive_datagram(m_a, ("192.0.2.5", 500), 10.0)
    r.receive_datagram(m_b, ("192.0.2.6", 500), 11.0)
    first = r.next_event()
    assert isinstance(first, CredentialNeeded) and r.get_timer() == 12.0
    with pytest.raises(LocalProtocolError, match="handle differs"):
        r.provide_credential(first.token, simulated_full_ike(), None, 11.0)
    assert r.get_timer() == 12.0 and r.pending == 2
    r.handle_timer(12.0)
    assert r.pending == 1 and r.stats["expired_await_credential_1"] == 1
