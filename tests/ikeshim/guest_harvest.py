"""Harvest from two real strongSwan charons (IKEv2 PSK) in two namespaces, inside UML.

``ikeresume harvest`` runs on both peers (as the operator would run it); the checks compare
what the two independent harvests stored: the same handle, the same secret, the same SA
description, from opposite roles.  Checks run in order and share the testbed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from resume.sa import Encr, Integ, Mode
from tests.testbed.strongswan import A, B, Charons, Child, make_namespaces, sh, start_charons

WORK = Path("/tmp/harvest-test")
CHILDREN = [
    Child("host"),
    Child(
        "tun",
        mode="tunnel",
        esp="aes256-sha256",
        local_ts_i="10.2.0.0/24",
        remote_ts_i="10.1.0.0/24",
    ),
    Child("host6", esp="aes256gcm16", v6=True),
    Child(
        "tun6",
        mode="tunnel",
        esp="aes128-sha512",
        v6=True,
        local_ts_i="fd02::/64",
        remote_ts_i="fd01::/64",
    ),
]
KEY_ENV = "IKERESUME_MASTER_KEY"

_state: dict[str, Any] = {}


def _master_key() -> str:
    from store.keys import MasterKey

    return MasterKey.generate().to_line()


def _start_harvester(peer: Any) -> subprocess.Popen[bytes]:
    out = open(WORK / f"harvest-{peer.ns}.jsonl", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            peer.ns,
            sys.executable,
            "-m",
            "resume.cli",
            "harvest",
            "--vici",
            peer.vici_uri(),
            "--db",
            str(WORK / f"{peer.ns}.db"),
            "--json",
        ],
        stdout=out,
        stderr=open(WORK / f"harvest-{peer.ns}.err", "wb"),
        env={**os.environ, KEY_ENV: _state["key"]},
    )


def _outcomes(peer: Any) -> list[dict[str, str]]:
    path = WORK / f"harvest-{peer.ns}.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def _wait(pred: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    errs = {p.ns: (WORK / f"harvest-{p.ns}.err").read_text() for p in (A, B)}
    raise AssertionError(
        f"timed out waiting for {what}; outcomes a={_outcomes(A)} b={_outcomes(B)} errs={errs}"
    )


def _installed_s(charons: Charons, peer: Any, ike: str) -> int:
    """Seconds the daemon says the CHILD_SA of IKE SA ``ike`` has been installed (-1: none).

    The harvester records the CHILD_SA's install time (child-updown's ``install-time``), not
    the IKE_SA's age: the child may be installed a fraction of a second after the IKE_SA is
    established, so waiting on the IKE_SA's "established 1s ago" can still record 0 s.
    """
    out = charons.swanctl(peer, "--list-sas", "--ike", ike)
    found = re.search(r"installed (\d+)s ago", out)
    return int(found.group(1)) if found else -1


def _harvested(peer: Any, child: str) -> list[dict[str, str]]:
    return [o for o in _outcomes(peer) if o["kind"] == "harvested" and o["child"] == child]


def _stores() -> dict[str, Any]:
    from store.keys import Keyring
    from store.repository import Store

    if "stores" not in _state:
        keyring = Keyring.from_text(_state["key"])
        _state["stores"] = {p.ns: Store.open(str(WORK / f"{p.ns}.db"), keyring) for p in (A, B)}
    return dict(_state["stores"])


def _same_credential_on_both_sides(handle_hex: str) -> Any:
    """Both stores hold one record under ``handle``: same secret, params and identities."""
    stores = _stores()
    handle = bytes.fromhex(handle_hex)
    now = time.time()
    ra = stores["a"].lookup(handle, now, role="responder")
    rb = stores["b"].lookup(handle, now, role="initiator")
    assert ra is not None and rb is not None, "record missing"
    ca, cb = ra.credential, rb.credential
    assert ca is not None and cb is not None, (ra.refusal, rb.refusal)
    assert ca.secret == cb.secret and len(ca.secret) == 32
    assert ca.generation == cb.generation == 0
    assert ca.params == cb.params, (ca.params, cb.params)
    assert (ca.id_i, ca.id_r) == (cb.id_i, cb.id_r)
    assert ca.id_i.endswith(b"b.example") and ca.id_r.endswith(b"a.example")
    return ca, ra, rb


EXPECT = {
    "host": (Mode.TRANSPORT, Encr.AES_GCM_16, 128, Integ.NONE, "192.0.2.2"),
    "tun": (Mode.TUNNEL, Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128, "192.0.2.2"),
    "host6": (Mode.TRANSPORT, Encr.AES_GCM_16, 256, Integ.NONE, "2001:db8::2"),
    "tun6": (Mode.TUNNEL, Encr.AES_CBC, 128, Integ.HMAC_SHA2_512_256, "2001:db8::2"),
}


def _check_params(child: str, cred: Any) -> None:
    p = cred.params
    got = (p.mode, p.encr, p.encr_key_bits, p.integ, p.initiator_addr)
    assert got == EXPECT[child], (child, got)
    if child == "tun":
        assert (p.tsi[0].start_addr, p.tsr[0].start_addr) == ("10.2.0.0", "10.1.0.0"), p
    if child == "tun6":
        assert (p.tsi[0].start_addr, p.tsr[0].start_addr) == ("fd02::", "fd01::"), p


def check_1_testbed_and_sync_of_existing_child() -> dict[str, Any]:
    """A CHILD_SA established before the harvester starts is picked up by the initial sync;
    both independent harvests store the same credential."""
    WORK.mkdir(parents=True, exist_ok=True)
    _state["key"] = _master_key()
    make_namespaces()
    charons: Charons = start_charons(WORK / "sw", CHILDREN)
    _state["charons"] = charons
    charons.initiate("host")
    _state["procs"] = [_start_harvester(A), _start_harvester(B)]
    t0 = time.monotonic()
    _wait(lambda: all(_harvested(p, "host") for p in (A, B)), "sync harvest of host", 40)
    _state["harvester_start_s"] = round(time.monotonic() - t0, 2)
    ha, hb = _harvested(A, "host")[0], _harvested(B, "host")[0]
    assert ha["role"] == "responder" and hb["role"] == "initiator", (ha, hb)
    assert ha["handle"] == hb["handle"], (ha, hb)
    cred, _, _ = _same_credential_on_both_sides(ha["handle"])
    _check_params("host", cred)
    return {"handle": ha["handle"][:16], "harvester_start_s": _state["harvester_start_s"]}


def check_2_event_path_v4_v6_tunnel_transport() -> dict[str, Any]:
    """Children established while harvesting arrive via VICI events.  Each new full IKE
    between the same identities replaces the pair's previous chain (store default)."""
    _wait(lambda: all(any(o["kind"] == "ready" for o in _outcomes(p)) for p in (A, B)), "ready")
    charons: Charons = _state["charons"]
    handles = {"host": _harvested(A, "host")[0]["handle"]}
    previous = "host"
    for child, ike in (("tun", "ike4"), ("host6", "ike6"), ("tun6", "ike6")):
        charons.initiate(child, ike=ike)
        _wait(lambda c=child: all(_harvested(p, c) for p in (A, B)), f"harvest of {child}")
        ha, hb = _harvested(A, child)[-1], _harvested(B, child)[-1]
        assert ha["handle"] == hb["handle"], (child, ha, hb)
        cred, _, _ = _same_credential_on_both_sides(ha["handle"])
        _check_params(child, cred)
        gone = _stores()["a"].lookup(bytes.fromhex(handles[previous]), time.time())
        assert gone is None, f"{previous} not replaced by {child}"
        handles[child] = ha["handle"]
        previous = child
    assert len(set(handles.values())) == 4
    return {k: v[:16] for k, v in handles.items()}


def check_3_disconnect_records_the_session() -> dict[str, Any]:
    """Traffic, then the IKE_SA goes down: both sides record the session's bytes."""
    sh("ip netns exec b ping -c 3 -i 0.2 -W 1 -I fd02::1 fd01::1")
    # No wait for --counter-interval: the final byte counts come with the child-updown
    # events strongSwan sends after ike-updown.
    charons: Charons = _state["charons"]
    # The record's connected time is what the daemon reports at child-updown, in whole
    # seconds: let the CHILD_SA's reach 1 s on both sides first, however fast this host is.
    _wait(lambda: all(_installed_s(charons, p, "ike6") >= 1 for p in (A, B)), "tun6 for 1 s")
    charons.terminate_ike("ike6")

    def sessions(peer: Any) -> dict[str, dict[str, str]]:
        return {o["child"]: o for o in _outcomes(peer) if o["kind"] == "session"}

    _wait(lambda: all("tun6" in sessions(p) for p in (A, B)), "session records")
    handle = _harvested(A, "tun6")[-1]["handle"]
    for p in (A, B):
        s = sessions(p)["tun6"]
        assert s["handle"] == handle and "record gone" not in s["detail"], s
        nbytes = int(s["detail"].split()[1].rstrip("B"))
        assert nbytes >= 3 * 104, s
    _, ra, rb = _same_credential_on_both_sides(handle)
    assert ra.counters.bytes_total >= 3 * 104 and rb.counters.bytes_total >= 3 * 104
    assert ra.counters.established_s >= 1
    return {p.ns: sessions(p)["tun6"]["detail"] for p in (A, B)}


def check_4_harvesters_stop_cleanly() -> None:
    for proc in _state["procs"]:
        proc.send_signal(signal.SIGTERM)
    codes = [proc.wait(timeout=20) for proc in _state["procs"]]
    _state["charons"].stop()
    assert codes == [0, 0], codes
