"""Harvester core on the host: VICI messages in, store records out (real SQLite store).

The kernel side is represented by the SAs the installer would build for the same pair (the
XFRM round trip itself is proven in UML); strongSwan's messages are shaped as VICI sends them.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeshim.errors import HarvestError
from ikeshim.harvest import Harvester, harvest_child
from ikeshim.installer import build_states
from ikeshim.vici_map import identity_payload, parse_ike_sas, parse_ts
from ikeshim.xfrm import Algo, XfrmState
from resume.sa import Mode, SAPair, TrafficSelector
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.ikeshim.pairs import make_pair, make_params, mirror


def _kernel(pair: SAPair) -> dict[tuple[str, int], XfrmState]:
    table = {}
    for p in (pair, mirror(pair)):
        for sa in build_states(p):
            table[(sa.dst, sa.spi)] = sa
    return table


def _reader(table: dict[tuple[str, int], XfrmState]) -> Any:
    return lambda dst, spi: table.get((dst, spi))


def _vici(
    pair: SAPair,
    role: str,
    *,
    up: bool = True,
    bytes_: int = 0,
    ike: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """A child-updown message as charon on ``role``'s side sends it (``ike``: more IKE_SA
    fields, e.g. the key exchange methods)."""
    p = pair.params
    initiator = role == "initiator"
    local, remote = (
        (p.initiator_addr, p.responder_addr) if initiator else (p.responder_addr, p.initiator_addr)
    )
    lts, rts = (p.tsi, p.tsr) if initiator else (p.tsr, p.tsi)
    spi_in = pair.r_to_i.spi if initiator else pair.i_to_r.spi
    spi_out = pair.i_to_r.spi if initiator else pair.r_to_i.spi

    def ts(t: TrafficSelector) -> bytes:
        if t.start_addr == t.end_addr:
            return f"{t.start_addr}/{32 if t.version == 4 else 128}".encode()
        return f"{t.start_addr}..{t.end_addr}".encode()

    child = {
        "name": b"net",
        "uniqueid": b"7",
        "reqid": b"1",
        "state": b"INSTALLED",
        "mode": p.mode.value.upper().encode(),
        "protocol": b"ESP",
        "spi-in": f"{spi_in:08x}".encode(),
        "spi-out": f"{spi_out:08x}".encode(),
        "bytes-in": str(bytes_).encode(),
        "bytes-out": str(bytes_).encode(),
        "install-time": b"30",
        "local-ts": [ts(t) for t in lts],
        "remote-ts": [ts(t) for t in rts],
    }
    msg: dict[str, Any] = {
        "conn": {
            "uniqueid": b"3",
            "local-host": local.encode(),
            "remote-host": remote.encode(),
            "local-port": b"500",
            "remote-port": b"500",
            "local-id": b"moon.example" if not initiator else b"carol@example.org",
            "remote-id": b"carol@example.org" if not initiator else b"moon.example",
            "initiator": b"yes" if initiator else b"no",
            "child-sas": {"net-7": child},
            **(ike or {}),
        }
    }
    if up:
        msg["up"] = b"yes"
    return msg


@pytest.fixture
def stores(tmp_path: Path) -> Any:
    keyring = Keyring([MasterKey.generate()])
    a = Store.open(str(tmp_path / "a.db"), keyring)
    b = Store.open(str(tmp_path / "b.db"), keyring)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize(
    "suite,mode", [("gcm128", Mode.TRANSPORT), ("cbc-sha384", Mode.TUNNEL), ("chacha", Mode.TUNNEL)]
)
def test_both_peers_harvest_the_same_credential(stores: Any, suite: str, mode: Mode) -> None:
    params = make_params(
        suite,
        mode=mode,
        tsi=(TrafficSelector.from_network("10.1.0.0/24"),) if mode is Mode.TUNNEL else None,
        tsr=(TrafficSelector("10.2.0.0", "10.2.0.9"),) if mode is Mode.TUNNEL else None,
    )
    pair = make_pair(params)
    kernel = _kernel(pair)
    sa, sb = stores
    hi = Harvester(sa, _reader(kernel))
    hr = Harvester(sb, _reader(kernel))
    oi = hi.on_event("child-updown", _vici(pair, "initiator"), 1000.0)
    orr = hr.on_event("child-updown", _vici(pair, "responder"), 1000.0)
    assert [o.kind for o in oi + orr] == ["harvested", "harvested"], oi + orr
    assert oi[0].handle == orr[0].handle and oi[0].role == "initiator"
    handle = bytes.fromhex(oi[0].handle)
    ci = sa.lookup(handle, 1001.0, role="initiator").credential
    cr = sb.lookup(handle, 1001.0, role="responder").credential
    assert ci.secret == cr.secret and ci.params == cr.params == params
    assert ci.id_i == b"\x03carol@example.org" and ci.id_r == b"\x02moon.example"


def test_outcomes_never_contain_secrets(stores: Any) -> None:
    pair = make_pair(make_params())
    h = Harvester(stores[0], _reader(_kernel(pair)))
    (o,) = h.on_event("child-updown", _vici(pair, "initiator"), 1.0)
    cred = stores[0].lookup(bytes.fromhex(o.handle), 2.0, role="initiator").credential
    assert cred.secret.hex() not in repr(o.to_json())


def test_child_down_records_session_bytes_and_duration(stores: Any) -> None:
    pair = make_pair(make_params())
    h = Harvester(stores[0], _reader(_kernel(pair)))
    (up,) = h.on_event("child-updown", _vici(pair, "initiator"), 1000.0)
    (down,) = h.on_event("child-updown", _vici(pair, "initiator", up=False, bytes_=500), 1030.0)
    assert down.kind == "session" and down.handle == up.handle
    rec = stores[0].lookup(bytes.fromhex(up.handle), 1031.0, role="initiator")
    assert rec.counters.bytes_total == 1000 and rec.counters.established_s == 30
    assert h.live == {}


def test_ike_down_waits_for_child_updown_then_grace(stores: Any) -> None:
    pair = make_pair(make_params())
    h = Harvester(stores[0], _reader({}), ike_down_grace=2.0)
    kernel = _kernel(pair)
    h.read_state = _reader(kernel)
    h.on_event("child-updown", _vici(pair, "initiator"), 1000.0)
    kernel.clear()  # strongSwan deletes the SAs
    ike_msg = _vici(pair, "initiator", up=False)
    ike_msg["conn"]["child-sas"] = {}
    assert h.on_event("ike-updown", ike_msg, 1010.0) == []
    assert h.tick(1011.0) == []
    (o,) = h.tick(1012.5)
    assert o.kind == "session" and h.live == {}


def test_unsupported_or_missing_sas_are_skipped_not_fatal(stores: Any) -> None:
    pair = make_pair(make_params())
    kernel = _kernel(pair)
    ccm = {
        k: XfrmState(v.src, v.dst, v.spi, aead=Algo("rfc4309(ccm(aes))", b"k" * 19, 128))
        for k, v in kernel.items()
    }
    h = Harvester(stores[0], _reader(ccm))
    (o,) = h.on_event("child-updown", _vici(pair, "initiator"), 1.0)
    assert o.kind == "skipped" and "ccm" in o.detail
    h2 = Harvester(stores[0], _reader({}))
    (o2,) = h2.on_event("child-updown", _vici(pair, "initiator"), 1.0)
    assert o2.kind == "skipped" and "not in XFRM" in o2.detail


def test_sync_harvests_installed_children_once(stores: Any) -> None:
    pair = make_pair(make_params())
    h = Harvester(stores[0], _reader(_kernel(pair)))
    msg = _vici(pair, "initiator")
    del msg["up"]
    assert [o.kind for o in h.sync([msg], 5.0)] == ["harvested"]
    assert h.sync([msg], 6.0) == []


vici_values: st.SearchStrategy[Any] = st.recursive(
    st.binary(max_size=20) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["conn", "child-sas", "mode", "spi-in", "local-ts", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(st.sampled_from(["child-updown", "child-rekey", "ike-updown"]), vici_values)
def test_garbage_vici_messages_give_outcomes_never_exceptions(name: str, msg: Any) -> None:
    class NullSink:
        def upsert_full_ike(self, role: Any, credential: Any, now: float) -> str:
            raise AssertionError("nothing valid to store")

        def record_session(self, role: Any, handle: bytes, **kw: Any) -> bool:
            return False

    h = Harvester(NullSink(), lambda dst, spi: None)
    if isinstance(msg, dict):
        for o in h.on_event(name, msg, 1.0):
            assert o.kind in ("error", "skipped")


def test_traffic_selector_forms() -> None:
    assert parse_ts("10.1.0.0/24") == TrafficSelector("10.1.0.0", "10.1.0.255")
    assert parse_ts("10.0.0.1..10.0.0.9") == TrafficSelector("10.0.0.1", "10.0.0.9")
    assert parse_ts("192.0.2.1/32[udp/4500]") == TrafficSelector(
        "192.0.2.1", "192.0.2.1", socket.IPPROTO_UDP, 4500, 4500
    )
    assert parse_ts("::/0[tcp/80-90]") == TrafficSelector(
        "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 6, 80, 90
    )
    for bad in ("10.1.0.0/33", "nonsense", "10.0.0.1/32[udp/http]"):
        with pytest.raises(HarvestError):
            parse_ts(bad)


def test_identities_match_the_resume_command_form() -> None:
    from resume.net.cli import parse_identity

    for text, cli in (
        ("moon.example", "fqdn:moon.example"),
        ("carol@example.org", "email:carol@example.org"),
        ("192.0.2.1", "ipv4:192.0.2.1"),
        ("2001:db8::1", "ipv6:2001:db8::1"),
    ):
        assert identity_payload(text) == parse_identity(cli)
    with pytest.raises(HarvestError):
        identity_payload("C=CH, O=strongSwan, CN=moon")


def test_harvest_child_refuses_non_esp() -> None:
    pair = make_pair(make_params())
    (ike,) = parse_ike_sas(_vici(pair, "initiator"))
    ah = ike.children[0].__class__(**{**ike.children[0].__dict__, "protocol": "AH"})
    with pytest.raises(HarvestError, match="only ESP"):
        harvest_child(ike, ah, _reader(_kernel(pair)))


@pytest.mark.parametrize(
    ("fields", "lineage"),
    [
        ({"dh-group": b"CURVE_25519"}, "classical"),
        ({"dh-group": b"ECP_384_BP", "ake1": b"MODP_3072"}, "classical"),
        ({"dh-group": b"CURVE_25519", "ake1": b"ML_KEM_768"}, "hybrid-pq"),
        ({"dh-group": b"ML_KEM_768"}, "hybrid-pq"),
        ({"dh-group": b"CURVE_25519", "ake3": b"ML_KEM_1024"}, "hybrid-pq"),
        ({"dh-group": b"CURVE_25519", "ppk": b"yes"}, "ppk"),
        ({"dh-group": b"CURVE_25519", "ake1": b"FRODO_KEM"}, "unknown"),  # not known: no guess
        ({"dh-group": b"MODP_NONE"}, "unknown"),
        ({}, "unknown"),  # strongSwan reported no key exchange method
    ],
)
def test_harvest_sets_the_lineage_from_the_key_exchange_methods(
    stores: Any, fields: dict[str, bytes], lineage: str
) -> None:
    """Spec 12.3: only classical groups give ``classical``, any ML-KEM ``hybrid-pq``, a PPK
    ``ppk``, anything else ``unknown`` -- never PQ by guess.  Both peers store it."""
    pair = make_pair(make_params())
    kernel = _kernel(pair)
    for store, role in zip(stores, ("initiator", "responder"), strict=True):
        (o,) = Harvester(store, _reader(kernel)).on_event(
            "child-updown", _vici(pair, role, ike=fields), 1000.0
        )
        assert o.kind == "harvested" and o.detail == f"lineage {lineage}", o
        got = store.lookup(bytes.fromhex(o.handle), 1001.0, role=role)
        assert got.credential.lineage.value == lineage


def test_a_key_exchange_method_name_that_is_not_a_name_skips_the_sa(stores: Any) -> None:
    pair = make_pair(make_params())
    h = Harvester(stores[0], _reader(_kernel(pair)))
    (o,) = h.on_event("child-updown", _vici(pair, "initiator", ike={"ake1": b"ML KEM; DROP"}), 1.0)
    assert o.kind == "skipped" and "ake1" in o.detail
