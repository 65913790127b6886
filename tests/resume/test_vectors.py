"""The JSON vectors in specs/vectors/ are reproduced byte for byte.

Two independent checks: (1) every intermediate value is recomputed here from the formulas
of specs/protocol.md with hashlib/hmac and cryptography's one-shot HKDF and ML-KEM -- not
through resume.keyschedule -- so the spec, the vectors and the code cannot drift apart
silently (the ML-KEM vectors: the initiator's key from its recorded seed, the responder's
shared secret checked by decapsulating its ciphertext, the compact forms rebuilt by hand);
(2) the recorded randomness is replayed through Initiator and Responder and every message
must come out identical.  Finally the generator must reproduce the files exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from resume.credential import Credential, PaperKeys, ProtocolMode
from resume.events import CommitNeeded, CredentialNeeded, ResumptionComplete, SaveSuccessor
from resume.initiator import Initiator, InitiatorConfig
from resume.kem_testing import deterministic_encapsulation
from resume.responder import Responder, ResponderConfig
from resume.sa import DirectionKeys, Lifetimes, SAParams

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "specs" / "vectors"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "make_vectors", ROOT / "specs" / "make_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _all() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name in (
        "hardened.json",
        "hardened-x25519.json",
        "hardened-mlkem768.json",
        "hardened-x25519-mlkem768.json",
        "paper.json",
    ):
        for i, v in enumerate(json.loads((VECTORS / name).read_text())):
            out.append((f"{name}[{i}]", v))
    return out


def lp(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def hkdf(salt: bytes, ikm: bytes, info: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA256(), n, salt, info).derive(ikm)


def hmac256(k: bytes, m: bytes) -> bytes:
    return hmac.new(k, m, hashlib.sha256).digest()


def _dk(d: dict[str, Any]) -> DirectionKeys:
    return DirectionKeys(d["spi"], bytes.fromhex(d["encr_key"]), bytes.fromhex(d["integ_key"]))


def _credential(v: dict[str, Any]) -> Credential:
    c = v["credential"]
    params = SAParams.from_json(c["params"])
    mode = ProtocolMode(v["mode"])
    return Credential(
        mode=mode,
        handle=bytes.fromhex(c["handle"]),
        generation=c["generation"],
        secret=bytes.fromhex(c["secret"]),
        id_i=bytes.fromhex(c["id_i"]),
        id_r=bytes.fromhex(c["id_r"]),
        params=params,
        paper_keys=PaperKeys(_dk(c["i_to_r"]), _dk(c["r_to_i"]))
        if mode is ProtocolMode.PAPER
        else None,
    )


def _ts(t: dict[str, Any]) -> bytes:
    a, b = ipaddress.ip_address(t["start_addr"]), ipaddress.ip_address(t["end_addr"])
    return (
        struct.pack(
            ">BBHH", 7 if a.version == 4 else 8, t["protocol"], t["start_port"], t["end_port"]
        )
        + a.packed
        + b.packed
    )


def _payloads(m: bytes) -> list[tuple[int, int, int]]:
    """(type, offset of its generic header, payload length) of every payload of ``m``."""
    out, off, np_ = [], 28, m[16]
    while np_:
        nxt, plen = m[off], struct.unpack(">H", m[off + 2 : off + 4])[0]
        out.append((np_, off, plen))
        np_, off = nxt, off + plen
    assert off == len(m)
    return out


def _compact(m: bytes) -> bytes:
    """Spec 4.4 by hand: the KE payload of method 36 holds SHA-256 of its data."""
    for ptype, off, plen in _payloads(m):
        if ptype == 34 and m[off + 4 : off + 6] == b"\x00\x24":
            data = m[off + 8 : off + plen]
            body = m[off + 4 : off + 8] + hashlib.sha256(data).digest()
            out = m[: off + 2] + struct.pack(">H", 4 + len(body)) + body + m[off + plen :]
            return out[:24] + struct.pack(">I", len(out)) + out[28:]
    return m


def _ke(m: bytes, method: int) -> bytes | None:
    for ptype, off, plen in _payloads(m):
        if ptype == 34 and struct.unpack(">H", m[off + 4 : off + 6])[0] == method:
            return m[off + 8 : off + plen]
    return None


def _params_bytes(p: dict[str, Any]) -> bytes:
    mode = {"transport": 1, "tunnel": 2}[p["mode"]]
    out = struct.pack(">BHHH", mode, p["encr"], p["encr_key_bits"], p["integ"])
    out += bytes([len(p["tsi"])]) + b"".join(_ts(t) for t in p["tsi"])
    out += bytes([len(p["tsr"])]) + b"".join(_ts(t) for t in p["tsr"])
    return out


@pytest.mark.parametrize(("name", "v"), _all(), ids=[n for n, _ in _all()])
def test_intermediates_follow_the_spec(name: str, v: dict[str, Any]) -> None:
    c = v["credential"]
    pb = _params_bytes(c["params"])
    assert pb.hex() == c["params_bytes"]
    digest = hashlib.sha256(b"ikeresume v1 params" + pb).digest()
    assert digest.hex() == c["params_digest"]
    id_i, id_r = bytes.fromhex(c["id_i"]), bytes.fromhex(c["id_r"])
    i2r, r2i = c["i_to_r"], c["r_to_i"]
    msgs = {k: bytes.fromhex(x) for k, x in v["messages"].items()}
    inter = v["intermediate"]
    run = v["run"]
    if v["mode"] == "paper":
        assert c["handle"] == c["id_i"] and c["secret"] == ""
        sk_i = bytes.fromhex(i2r["integ_key"] or i2r["encr_key"])
        sk_r = bytes.fromhex(r2i["integ_key"] or r2i["encr_key"])
        n_i = bytes.fromhex(run["initiator_random"][1])
        n_r = bytes.fromhex(inter["nonce_r"])
        assert hmac256(sk_r, id_r + n_i + n_r).hex() == inter["mac_msg2"]
        assert hmac256(sk_i, id_i + n_i + n_r).hex() == inter["mac_msg3"]
        assert msgs["msg2"][-32:].hex() == inter["mac_msg2"]
        assert msgs["msg3"][-32:].hex() == inter["mac_msg3"]
        # paper reuses the cached SA verbatim (the flaw): result == cached keys
        assert v["result"]["i_to_r"] == i2r and v["result"]["r_to_i"] == r2i
        return
    keys = b"".join(bytes.fromhex(d[k]) for d in (i2r, r2i) for k in ("encr_key", "integ_key"))
    info = (
        b"ikeresume v1 bootstrap"
        + struct.pack(">II", i2r["spi"], r2i["spi"])
        + lp(id_i)
        + lp(id_r)
        + digest
    )
    secret = hkdf(b"ikeresume v1 bootstrap", keys, info, 32)
    assert secret.hex() == c["secret"]
    handle = hmac256(secret, b"ikeresume v1 handle")[:16]
    assert handle.hex() == c["handle"]

    m1, m2, m3 = msgs["msg1"], msgs["msg2"], msgs["msg3"]
    # the transcript uses the compact forms (equal to the messages without ML-KEM)
    c1, c2 = _compact(m1), _compact(m2)
    ss = b""
    if "mlkem_ek" in inter:
        x = 1 if "dh" in inter else 0
        key = MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(run["initiator_random"][3 + x]))
        ek = key.public_key().public_bytes_raw()
        assert ek.hex() == inter["mlkem_ek"] and _ke(m1, 36) == ek and len(ek) == 1184
        ct = _ke(m2, 36)
        assert ct is not None and ct.hex() == inter["mlkem_ct"] and len(ct) == 1088
        ss = key.decapsulate(ct)
        assert ss.hex() == inter["mlkem_shared_secret"]
        assert hashlib.sha256(ek).hexdigest() == inter["mlkem_ek_digest"]
        assert hashlib.sha256(ct).hexdigest() == inter["mlkem_ct_digest"]
        assert (c1.hex(), c2.hex()) == (inter["msg1_compact"], inter["msg2_compact"])
        assert len(c1) == len(m1) - 1184 + 32 and len(c2) == len(m2) - 1088 + 32
        assert v["result"]["successor_lineage"] == "pq-resumed"  # from an unknown chain
    else:
        assert (c1, c2) == (m1, m2)
    server_secret = bytes.fromhex(run["server_secret"])
    ip = ipaddress.ip_address(run["initiator_addr"][0])
    addr = bytes([ip.version]) + ip.packed + struct.pack(">H", run["initiator_addr"][1])
    vals = hmac.new(
        server_secret,
        b"ikeresume v1 responder values" + struct.pack(">Q", run["tick"]) + addr + lp(c1),
        hashlib.sha512,
    ).digest()
    assert vals.hex() == inter["responder_prf"]
    assert vals[:32].hex() == inter["nonce_r"]
    assert vals[32:40].hex() == inter["spi_r"]
    spi = int.from_bytes(vals[40:44], "big")
    assert (spi if spi >= 256 else spi + 256) == inter["esp_spi_i2r"]
    assert m2[8:16].hex() == inter["spi_r"]  # header: responder SPI

    dh = b""
    if "dh" in inter:
        ip_ = X25519PrivateKey.from_private_bytes(bytes.fromhex(run["initiator_random"][3]))
        rp_ = X25519PrivateKey.from_private_bytes(bytes.fromhex(run["responder_random"][0]))
        dh = ip_.exchange(rp_.public_key())
        assert dh == rp_.exchange(
            X25519PublicKey.from_public_bytes(bytes.fromhex(inter["x25519_public_i"]))
        )
        assert dh.hex() == inter["dh"]
    n_i = bytes.fromhex(run["initiator_random"][1])
    n_r = bytes.fromhex(inter["nonce_r"])
    ctx = lp(id_i) + lp(id_r) + lp(handle) + struct.pack(">I", c["generation"]) + digest
    assert ctx.hex() == inter["context"]
    prk = hmac256(lp(n_i) + lp(n_r), secret + dh + ss)
    assert prk.hex() == inter["prk"]

    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    def expand(label: bytes, n: int) -> bytes:
        return HKDFExpand(hashes.SHA256(), n, label).derive(prk)

    mac_i = expand(b"ikeresume v1 mac i" + ctx, 32)
    mac_r = expand(b"ikeresume v1 mac r" + ctx, 32)
    assert (mac_i.hex(), mac_r.hex()) == (inter["mac_key_i"], inter["mac_key_r"])
    spis = struct.pack(">II", inter["esp_spi_i2r"], inter["esp_spi_r2i"])
    klen = len(bytes.fromhex(i2r["encr_key"])) + len(bytes.fromhex(i2r["integ_key"]))
    keymat = expand(b"ikeresume v1 esp keymat" + ctx + spis, 2 * klen)
    assert keymat.hex() == inter["keymat"]
    succ = expand(b"ikeresume v1 successor" + ctx, 32)
    assert succ.hex() == inter["successor_secret"]
    assert hmac256(succ, b"ikeresume v1 handle")[:16].hex() == inter["successor_handle"]
    assert hmac256(mac_r, b"ikeresume v1 msg2 responder" + lp(c1) + c2[:-32]) == m2[-32:]
    assert hmac256(mac_i, b"ikeresume v1 msg3 initiator" + lp(c1) + lp(c2) + m3[:-32]) == m3[-32:]
    # KEYMAT split: i->r encr|integ then r->i encr|integ; fresh, never the cached keys
    res = v["result"]
    elen = len(bytes.fromhex(res["i_to_r"]["encr_key"]))
    assert res["i_to_r"]["encr_key"] == keymat[:elen].hex()
    assert res["i_to_r"]["integ_key"] == keymat[elen:klen].hex()
    assert res["r_to_i"]["encr_key"] == keymat[klen : klen + elen].hex()
    assert res["i_to_r"]["encr_key"] != i2r["encr_key"]
    assert (res["i_to_r"]["spi"], res["r_to_i"]["spi"]) == (
        inter["esp_spi_i2r"],
        inter["esp_spi_r2i"],
    )
    # message 3 echoes compact(message 1) verbatim: its RESUME_ECHO body
    [(_t, off, plen), _auth] = _payloads(m3)
    assert m3[off + 4 : off + plen] == c1


@pytest.mark.parametrize(("name", "v"), _all(), ids=[n for n, _ in _all()])
def test_replayed_run_reproduces_every_message(name: str, v: dict[str, Any]) -> None:
    gen = _load_generator()
    cred = _credential(v)
    run = v["run"]
    paper = v["mode"] == "paper"
    x25519 = "dh" in v["intermediate"]
    mlkem = "mlkem_ek" in v["intermediate"]
    lifetimes = Lifetimes.from_json(run["lifetimes"])
    client = tuple(run["initiator_addr"])
    server = tuple(run["responder_addr"])
    now = run["now"]
    resp = Responder(
        ResponderConfig(allow_paper_mode=paper, cookie_tick_seconds=run["tick_seconds"]),
        bytes.fromhex(run["server_secret"]),
        rng=gen.ReplayRng(run["responder_random"]),
        encapsulate=deterministic_encapsulation(gen.ReplayRng(run.get("responder_kem_random", []))),
    )
    init = Initiator(
        cred,
        InitiatorConfig(
            allow_paper_mode=paper, use_x25519=x25519, mlkem="require" if mlkem else "off"
        ),
        gen.ReplayRng(run["initiator_random"]),
        peer=server,
        lifetimes=lifetimes,
    )
    init.initiate(now)
    [(m1, _)] = init.datagrams_to_send(now)
    assert m1.hex() == v["messages"]["msg1"]
    resp.receive_datagram(m1, client, now)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, cred, lifetimes, now)
    [(m2, to)] = resp.datagrams_to_send(now)
    assert to == client
    assert m2.hex() == v["messages"]["msg2"]
    init.receive_datagram(m2, server, now)
    save = init.next_event()
    assert isinstance(save, SaveSuccessor) and init.datagrams_to_send(now) == []
    init.successor_saved(now)
    [(m3, _)] = init.datagrams_to_send(now)
    assert m3.hex() == v["messages"]["msg3"]
    done_i = init.next_event()
    assert isinstance(done_i, ResumptionComplete)
    resp.receive_datagram(m3, client, now)
    ev = resp.next_event()
    if not paper:
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
    assert done_i.successor == done_r.successor
    assert done_i.successor.lineage.value == v["result"].get("successor_lineage", "unknown")


def test_generator_reproduces_the_files() -> None:
    gen = _load_generator()
    for name, vecs in gen.all_vectors().items():
        assert (VECTORS / name).read_text() == gen.render(vecs), (
            f"{name} is stale: run specs/make_vectors.py"
        )


def test_spec_example_matches_the_vectors() -> None:
    spec = (ROOT / "specs" / "protocol.md").read_text()
    v = json.loads((VECTORS / "hardened-x25519.json").read_text())[0]
    for name in ("msg1", "msg2", "msg3", "nack1"):
        m = bytes.fromhex(v["messages"][name])
        header_line = f"{m[:8].hex()} {m[8:16].hex()} {m[16]:02x} {m[17]:02x} {m[18]:02x}"
        assert header_line in spec, f"specs/protocol.md example for {name} is stale"
        assert m[-4:].hex() in spec.replace(" ", "") or name == "nack1"
