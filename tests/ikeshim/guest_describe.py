"""The recipe for daemons other than strongSwan, inside UML (``specs/libreswan.md``).

A daemon such as libreswan's pluto installs a CHILD_SA as two ESP SAs in each peer's
kernel; the SAs here are installed the way a daemon does it, with ``ip xfrm state add``
(iproute2, not our installer), in two network namespaces.  On each peer the operator's
pipeline runs as commands: ``ikeresume xfrm describe ... | ikeresume cache bootstrap
--role R -``.  Checks: both peers write the same description and the same credential, and
it is the credential spec 3.1 derives from the keys that were installed.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ikeshim.algorithms import AEAD_NAMES, AUTH_NAMES
from resume.keyschedule import bootstrap_credential
from resume.sa import DirectionKeys, Mode, SAPair, TrafficSelector
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.ikeshim.pairs import make_pair, make_params
from tests.testbed.strongswan import A, B, make_namespaces, sh

WORK = Path("/tmp/describe-test")
ID_I, ID_R = "fqdn:b.example", "fqdn:a.example"  # B initiates, A responds


def _ip_xfrm_add(ns: str, src: str, dst: str, k: DirectionKeys, pair: SAPair, natt: bool) -> None:
    p = pair.params
    mode = "tunnel" if p.mode is Mode.TUNNEL else "transport"
    if p.encr.is_aead:  # what `ip xfrm state` prints for the daemon's SA, read back in
        name = AEAD_NAMES[p.encr]
        algo = f"aead '{name}' 0x{k.encr_key.hex()} 128"
    else:
        bits = p.integ.icv_bits
        auth = f"auth-trunc '{AUTH_NAMES[p.integ]}' 0x{k.integ_key.hex()} {bits}"
        algo = f"enc 'cbc(aes)' 0x{k.encr_key.hex()} {auth}"
    encap = " encap espinudp 4500 4500 0.0.0.0" if natt else ""
    sh(f"ip -n {ns} xfrm state add src {src} dst {dst} proto esp spi 0x{k.spi:08x} reqid 1 "
       f"mode {mode} replay-window 32 {algo}{encap}")  # fmt: skip


def _pipeline(ns: str, role: str, pair: SAPair, tsi: list[str], tsr: list[str], by: str) -> Any:
    py = sys.executable
    p = pair.params
    describe = [
        "ip", "netns", "exec", ns, py, "-m", "resume.cli", "xfrm", "describe",
        "--initiator", p.initiator_addr, "--responder", p.responder_addr,
        "--id-i", ID_I, "--id-r", ID_R, "--lineage", "classical",
    ]  # fmt: skip
    if by == "reqid":
        describe += ["--reqid", "1"]
    elif by == "spis":  # in any order, as libreswan's updown has them ($SPI_IN, $SPI_OUT)
        describe += ["--spi", str(pair.r_to_i.spi), "--spi", f"0x{pair.i_to_r.spi:08x}"]
    else:
        describe += ["--spi-i2r", f"0x{pair.i_to_r.spi:08x}", "--spi-r2i", str(pair.r_to_i.spi)]
    for t in tsi:
        describe += ["--tsi", t]
    for t in tsr:
        describe += ["--tsr", t]
    db = WORK / f"{ns}-{role}.db"
    bootstrap = [
        "ip", "netns", "exec", ns, py, "-m", "resume.cli", "cache", "bootstrap",
        "--role", role, "-", "--db", str(db), "--json",
    ]  # fmt: skip
    d = subprocess.run(describe, capture_output=True, check=False, timeout=60)
    assert d.returncode == 0, d.stderr.decode()
    b = subprocess.run(bootstrap, input=d.stdout, capture_output=True, check=False, timeout=60)
    assert b.returncode == 0, b.stderr.decode()
    return json.loads(d.stdout), json.loads(b.stdout), db


def _setup() -> None:
    if not (Path("/run/netns") / "a").exists():
        make_namespaces()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    key = WORK / "master.key"
    key.write_text(MasterKey.generate().to_line() + "\n")
    os.environ["IKERESUME_MASTER_KEY_FILE"] = str(key)
    for ns in ("a", "b"):
        sh(f"ip -n {ns} xfrm state flush; ip -n {ns} xfrm policy flush")


def _case(
    suite: str, mode: Mode, natt: bool, tsi: list[str], tsr: list[str], by: tuple[str, str]
) -> dict[str, Any]:
    _setup()
    params = make_params(
        suite, mode=mode, i_addr=B.addr, r_addr=A.addr, natt=(4500, 4500) if natt else None,
        tsi=tuple(TrafficSelector.from_network(t) for t in tsi) or None,
        tsr=tuple(TrafficSelector.from_network(t) for t in tsr) or None,
    )  # fmt: skip
    pair = make_pair(params, spis=(0xC2000001, 0xC2000002))
    for ns in ("a", "b"):  # both peers hold both SAs, as after any IKE
        _ip_xfrm_add(ns, B.addr, A.addr, pair.i_to_r, pair, natt)
        _ip_xfrm_add(ns, A.addr, B.addr, pair.r_to_i, pair, natt)
    desc_a, out_a, db_a = _pipeline("a", "responder", pair, tsi, tsr, by[0])
    desc_b, out_b, db_b = _pipeline("b", "initiator", pair, tsi, tsr, by[1])
    assert desc_a == desc_b, (desc_a, desc_b)
    want = bootstrap_credential(params, pair.i_to_r, pair.r_to_i, b"\x02b.example",
                                b"\x02a.example")  # fmt: skip
    assert out_a["handle"] == out_b["handle"] == want.handle.hex(), (out_a, out_b)
    kr = Keyring.from_file(os.environ["IKERESUME_MASTER_KEY_FILE"])
    for db, role in ((db_a, "responder"), (db_b, "initiator")):
        with Store.open(str(db), kr) as s:
            got = s.lookup(want.handle, time.time(), role=role)  # type: ignore[arg-type]
            assert got is not None and got.credential is not None
            assert got.credential.secret == want.secret
            assert got.credential.params == params
    con = sqlite3.connect(db_a)
    (n,) = con.execute("SELECT count(*) FROM credentials").fetchone()
    con.close()
    assert n == 1
    return {"handle": want.handle.hex(), "suite": suite}


def check_transport_gcm() -> dict[str, Any]:
    return _case("gcm256", Mode.TRANSPORT, False, [], [], ("ordered", "reqid"))


def check_tunnel_cbc_sha256_natt() -> dict[str, Any]:
    return _case("cbc-sha256", Mode.TUNNEL, True, ["10.2.0.0/24"], ["10.1.0.0/24"],
                 ("spis", "reqid"))  # fmt: skip


def check_tunnel_chacha_two_selectors() -> dict[str, Any]:
    return _case("chacha", Mode.TUNNEL, False, ["10.2.0.0/24", "10.2.1.0/24"], ["10.1.0.0/16"],
                 ("ordered", "spis"))  # fmt: skip


def check_missing_sa_is_reported() -> str:
    _setup()
    r = subprocess.run(
        ["ip", "netns", "exec", "a", sys.executable, "-m", "resume.cli", "xfrm", "describe",
         "--initiator", B.addr, "--responder", A.addr, "--spi-i2r", "0xc3000001",
         "--spi-r2i", "0xc3000002", "--id-i", ID_I, "--id-r", ID_R],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "no ESP SA with SPI 0xc3000001" in r.stderr, r.stderr
    assert r.stdout == ""
    return r.stderr.strip()


def check_reqid_during_a_rekey_is_ambiguous() -> str:
    _setup()
    params = make_params("gcm128", i_addr=B.addr, r_addr=A.addr)
    for spis in ((0xC4000001, 0xC4000002), (0xC4000003, 0xC4000004)):  # old and new SA
        pair = make_pair(params, spis=spis)
        _ip_xfrm_add("a", B.addr, A.addr, pair.i_to_r, pair, False)
        _ip_xfrm_add("a", A.addr, B.addr, pair.r_to_i, pair, False)
    r = subprocess.run(
        ["ip", "netns", "exec", "a", sys.executable, "-m", "resume.cli", "xfrm", "describe",
         "--initiator", B.addr, "--responder", A.addr, "--reqid", "1",
         "--id-i", ID_I, "--id-r", ID_R],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "2 ESP SAs" in r.stderr and "rekey" in r.stderr, r.stderr
    return r.stderr.strip()
