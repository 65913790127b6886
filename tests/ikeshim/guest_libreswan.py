"""libreswan's pluto negotiates a CHILD_SA; the recipe of ``specs/libreswan.md`` provisions it.

Two plutos (libreswan 4.10 from Debian bookworm, unpacked privately: it cannot be installed
next to strongSwan) in namespaces a (responder) and b (initiator) bring up an IKEv2 PSK
tunnel.  Each runs ``specs/libreswan-updown.sh`` as its ``leftupdown`` -- the documented
hook, unchanged -- which pipes ``ikeresume xfrm describe`` into ``ikeresume cache
bootstrap``.  Checks: both caches get the same credential; it is spec 3.1's credential of
the keys pluto installed, read back by the manual recipe (``ip xfrm state`` text ->
description written by hand); the parameters are the connection's.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from resume.sa import Encr, Mode
from store.bootstrap import credential_from
from store.keys import Keyring, MasterKey
from store.repository import Store
from store.sa_description import parse_sa_description
from tests.testbed.libreswan import HANG, Conn, Plutos, start_plutos, up
from tests.testbed.strongswan import A, B, make_namespaces, sh

REPO = Path(__file__).resolve().parents[2]
WORK = Path("/tmp/libreswan-test")
CONN = Conn("road")
_state: dict[str, Any] = {}


def _db(ns: str) -> Path:
    return WORK / f"{ns}.db"


def _rows(ns: str) -> list[tuple[Any, ...]]:
    if not _db(ns).exists():
        return []
    con = sqlite3.connect(_db(ns))
    try:
        return con.execute("SELECT role, handle, generation FROM credentials").fetchall()
    except sqlite3.Error:
        return []
    finally:
        con.close()


def check_1_updown_hook_provisions_both_peers() -> dict[str, Any]:
    make_namespaces()
    WORK.mkdir(parents=True, exist_ok=True)
    key = WORK / "master.key"
    key.write_text(MasterKey.generate().to_line() + "\n")
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"

    def hook_env(ns: str, role: str) -> dict[str, str]:
        return {"IKERESUME_ROLE": role, "IKERESUME_DB": str(_db(ns)),
                "IKERESUME_MASTER_KEY_FILE": str(key), "PATH": path}  # fmt: skip

    plutos = start_plutos(
        WORK, CONN, str(REPO / "specs/libreswan-updown.sh"),
        {"a": hook_env("a", "responder"), "b": hook_env("b", "initiator")},
    )  # fmt: skip
    _state["plutos"] = plutos
    up(plutos, CONN)
    deadline = time.monotonic() + HANG
    while not (_rows("a") and _rows("b")):
        assert time.monotonic() < deadline, plutos.log(A)[-3000:] + plutos.log(B)[-3000:]
        time.sleep(0.1)
    (ra,), (rb,) = _rows("a"), _rows("b")
    assert ra[0] == "responder" and rb[0] == "initiator" and ra[2] == rb[2] == 0
    assert bytes(ra[1]) == bytes(rb[1]), (ra, rb)
    kr = Keyring.from_file(key)
    secrets = []
    for ns, role in (("a", "responder"), ("b", "initiator")):
        with Store.open(str(_db(ns)), kr) as s:
            got = s.lookup(bytes(ra[1]), time.time(), role=role)  # type: ignore[arg-type]
            assert got is not None and got.credential is not None
            secrets.append(got.credential.secret)
            _state[f"cred_{ns}"] = got.credential
    assert secrets[0] == secrets[1]
    _state["handle"] = bytes(ra[1])
    return {"handle": bytes(ra[1]).hex(), "trafficstatus": plutos.whack(A, "--trafficstatus")}


_BLOCK = re.compile(r"^src (\S+) dst (\S+)$")


def _ip_xfrm_state(ns: str) -> dict[tuple[str, str], dict[str, str]]:
    """`ip xfrm state` read the way specs/libreswan.md section 3 tells an operator to."""
    sas: dict[tuple[str, str], dict[str, str]] = {}
    cur: dict[str, str] = {}
    for line in sh(f"ip -n {ns} xfrm state").splitlines():
        m = _BLOCK.match(line.strip())
        if m:
            cur = sas.setdefault((m.group(1), m.group(2)), {})
            continue
        words = line.split()
        if words[:2] == ["proto", "esp"]:
            cur["spi"] = words[3]
            cur["mode"] = words[words.index("mode") + 1]
        elif words[:1] == ["aead"]:
            cur["aead"], cur["key"] = words[1], words[2]
    return sas


def check_2_the_manual_recipe_gives_the_same_credential() -> dict[str, Any]:
    """Description written by hand from `ip xfrm state` on b (the documented mapping)."""
    sas = _ip_xfrm_state("b")
    i2r, r2i = sas[(B.addr, A.addr)], sas[(A.addr, B.addr)]
    assert i2r["aead"] == r2i["aead"] == "rfc4106(gcm(aes))" and i2r["mode"] == "tunnel"
    key_bytes = len(i2r["key"][2:]) // 2
    doc = {
        "id_i": f"fqdn:{B.ident}", "id_r": f"fqdn:{A.ident}",
        "params": {
            "mode": i2r["mode"], "encr": "aes-gcm-16", "encr_key_bits": 8 * (key_bytes - 4),
            "integ": "none", "initiator_addr": B.addr, "responder_addr": A.addr,
            "tsi": [CONN.b_subnet], "tsr": [CONN.a_subnet],
        },
        "i_to_r": {"spi": i2r["spi"], "encr_key": i2r["key"]},
        "r_to_i": {"spi": r2i["spi"], "encr_key": r2i["key"]},
    }  # fmt: skip
    cred = credential_from(parse_sa_description(json.dumps(doc)))
    assert cred.handle == _state["handle"]
    assert cred.secret == _state["cred_a"].secret
    return {"spi_i2r": i2r["spi"], "spi_r2i": r2i["spi"]}


def check_3_parameters_are_the_connections() -> dict[str, Any]:
    c = _state["cred_b"]
    p = c.params
    assert (c.id_i, c.id_r) == (b"\x02" + B.ident.encode(), b"\x02" + A.ident.encode())
    assert p.mode is Mode.TUNNEL and p.encr is Encr.AES_GCM_16 and p.encr_key_bits == 256
    assert (p.initiator_addr, p.responder_addr) == (B.addr, A.addr)
    assert [f"{t.start_addr}-{t.end_addr}" for t in p.tsi] == ["10.2.0.0-10.2.0.255"]
    assert [f"{t.start_addr}-{t.end_addr}" for t in p.tsr] == ["10.1.0.0-10.1.0.255"]
    return p.to_json()


def check_4_plutos_stop() -> None:
    plutos: Plutos | None = _state.get("plutos")
    if plutos is not None:
        plutos.stop()
        assert all(p.poll() is not None for p in plutos.procs)
    subprocess.run(["ip", "-all", "netns", "delete"], check=False)
