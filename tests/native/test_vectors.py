"""The spec vectors through the native engines (via resume.native) and codec functions:
every message byte for byte, the resulting SA keys equal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resume import native
from resume.events import (
    CommitNeeded,
    CredentialNeeded,
    ResumptionComplete,
    SaveSuccessor,
    ke_mode,
)
from resume.initiator import InitiatorConfig
from resume.responder import ResponderConfig
from resume.sa import DirectionKeys, Lifetimes
from tests.resume.test_vectors import _credential

VECTORS = Path(__file__).resolve().parents[2] / "specs" / "vectors"
CASES = [
    (f"{name}[{i}]", v)
    for name in (
        "hardened.json",
        "hardened-x25519.json",
        "hardened-mlkem768.json",
        "hardened-x25519-mlkem768.json",
    )
    for i, v in enumerate(json.loads((VECTORS / name).read_text()))
]


def _dk(d: dict[str, Any]) -> DirectionKeys:
    return DirectionKeys(d["spi"], bytes.fromhex(d["encr_key"]), bytes.fromhex(d["integ_key"]))


@pytest.mark.parametrize(("name", "v"), CASES, ids=[n for n, _ in CASES])
def test_native_engines_replay_the_vectors(name: str, v: dict[str, Any]) -> None:
    cred = _credential(v)
    run = v["run"]
    x25519 = "dh" in v["intermediate"]
    mlkem = "mlkem_ek" in v["intermediate"]
    lifetimes = Lifetimes.from_json(run["lifetimes"])
    client = tuple(run["initiator_addr"])
    server = tuple(run["responder_addr"])
    now = run["now"]
    draws = native.ScriptedRng
    resp = native.NativeResponder(
        ResponderConfig(cookie_tick_seconds=run["tick_seconds"]),
        bytes.fromhex(run["server_secret"]),
        rng=draws(tuple(bytes.fromhex(d) for d in run["responder_random"])),
        kem=native.ScriptedKem(
            tuple(bytes.fromhex(d) for d in run.get("responder_kem_random", []))
        ),
    )
    init = native.NativeInitiator(
        cred,
        InitiatorConfig(use_x25519=x25519, mlkem="require" if mlkem else "off"),
        draws(tuple(bytes.fromhex(d) for d in run["initiator_random"])),
        peer=server,
        lifetimes=lifetimes,
    )
    init.initiate(now)
    [(m1, to)] = init.datagrams_to_send(now)
    assert to == server
    assert m1.hex() == v["messages"]["msg1"]
    resp.receive_datagram(m1, client, now)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded) and ev.addr == client
    resp.provide_credential(ev.token, cred, lifetimes, now)
    [(m2, to)] = resp.datagrams_to_send(now)
    assert to == client
    assert m2.hex() == v["messages"]["msg2"]
    init.receive_datagram(m2, server, now)
    assert isinstance(init.next_event(), SaveSuccessor)  # write-ahead: message 3 waits
    assert init.datagrams_to_send(now) == []
    init.successor_saved(now)
    [(m3, _)] = init.datagrams_to_send(now)
    assert m3.hex() == v["messages"]["msg3"]
    done_i = init.next_event()
    assert isinstance(done_i, ResumptionComplete)
    resp.receive_datagram(m3, client, now)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, cred, lifetimes, now)
    ev = resp.next_event()
    assert isinstance(ev, CommitNeeded)
    resp.commit_result(ev.token, True, now)
    done_r = resp.next_event()
    assert isinstance(done_r, ResumptionComplete)
    for sa in (done_i.sa, done_r.sa):
        assert sa.i_to_r == _dk(v["result"]["i_to_r"])
        assert sa.r_to_i == _dk(v["result"]["r_to_i"])
        assert sa.lifetimes == lifetimes
        assert sa.params == cred.params
    assert done_i.sa.role == "initiator" and done_r.sa.role == "responder"
    assert done_i.successor == done_r.successor == ev.successor
    assert done_r.successor.handle.hex() == v["intermediate"]["successor_handle"]
    assert done_r.successor.lineage.value == v["result"].get("successor_lineage", "unknown")
    assert done_i.ke == done_r.ke == ke_mode(x25519, mlkem)


@pytest.mark.parametrize(("name", "v"), CASES, ids=[n for n, _ in CASES])
def test_native_codec_and_key_schedule_on_the_vectors(name: str, v: dict[str, Any]) -> None:
    n = native._require()
    cred = _credential(v)
    c = v["credential"]
    inter = v["intermediate"]
    msgs = {k: bytes.fromhex(x) for k, x in v["messages"].items()}
    p = native.native_params(cred.params)
    assert p.params_bytes().hex() == c["params_bytes"]
    assert p.digest().hex() == c["params_digest"]
    i2r, r2i = _dk(c["i_to_r"]), _dk(c["r_to_i"])
    secret, handle = n.bootstrap(
        p,
        (i2r.spi, i2r.encr_key, i2r.integ_key),
        (r2i.spi, r2i.encr_key, r2i.integ_key),
        cred.id_i,
        cred.id_r,
    )
    assert (secret.hex(), handle.hex()) == (c["secret"], c["handle"])
    run = v["run"]
    c1 = n.compact_message(msgs["msg1"])
    c2 = n.compact_message(msgs["msg2"])
    assert (c1.hex(), c2.hex()) == (
        inter.get("msg1_compact", v["messages"]["msg1"]),
        inter.get("msg2_compact", v["messages"]["msg2"]),
    )
    prf = n.responder_prf(
        bytes.fromhex(run["server_secret"]), run["tick"], tuple(run["initiator_addr"]), c1
    )
    assert prf.hex() == inter["responder_prf"]
    ss = b""
    if "mlkem_ek" in inter:
        seed = bytes.fromhex(run["initiator_random"][4 if "dh" in inter else 3])
        ek = n.mlkem_public(seed)
        assert ek.hex() == inter["mlkem_ek"] and n.mlkem_ek_valid(ek)
        ct, ss = n.mlkem_encapsulate_deterministic(
            ek, bytes.fromhex(run["responder_kem_random"][0])
        )
        assert (ct.hex(), ss.hex()) == (inter["mlkem_ct"], inter["mlkem_shared_secret"])
        assert n.mlkem_decapsulate(seed, ct) == ss
    dh = bytes.fromhex(inter.get("dh", ""))
    if dh:
        priv_i = bytes.fromhex(run["initiator_random"][3])
        assert n.x25519_public(priv_i).hex() == inter["x25519_public_i"]
        assert n.x25519_shared(priv_i, bytes.fromhex(inter["x25519_public_r"])) == dh
    keys = n.run_keys(
        native.native_credential(cred),
        bytes.fromhex(run["initiator_random"][1]),
        bytes.fromhex(inter["nonce_r"]),
        dh,
        inter["esp_spi_i2r"],
        inter["esp_spi_r2i"],
        ss,
    )
    assert [k.hex() for k in keys] == [
        inter["prk"],
        inter["context"],
        inter["mac_key_i"],
        inter["mac_key_r"],
        inter["keymat"],
        inter["successor_secret"],
        inter["successor_handle"],
    ]
    kind, header, *_ = n.parse_request(msgs["msg1"])
    assert kind == "hardened_init"
    assert n.build_nack(header[0], b"\0" * 8, 0) == msgs["nack1"]
    assert n.parse_request(msgs["msg3"])[0] == "hardened_auth"
    assert n.parse_response(msgs["msg2"])[0] == "hardened_resp"
    assert n.parse_response(msgs["nack1"])[0] == "nack"
