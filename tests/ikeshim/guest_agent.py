"""Automatic resumption on a real kernel with the real charon (runs in UML; issue 14).

a is the gateway (charon, ``ikeresume harvest``, ``ikeresume serve``), b the client
(charon, ``ikeresume harvest``, ``ikeresume agent`` following b's charon over VICI, the
connection configured ``keep_up``).  The checks run in order on one testbed:

1. full IKE, both peers harvest;
2. the GATEWAY kills the IKE_SA (``swanctl --terminate`` on a): b's charon reports it down,
   the agent resumes at once, ping flows through the resumed SAs (their counters grow);
3. a request through the native client ``ikeresume-resume`` ratchets and re-installs; then
   the resumed SA reaches its soft lifetime limit and the agent resumes again;
4. the gateway's charon is killed (SIGKILL) and started again: b's charon sees the peer dead
   (DPD, ``dpd_action = clear``), the agent resumes against ``ikeresume serve`` (which never
   went away), traffic flows again;
5. the credential is revoked on the gateway, then its IKE_SA killed: the resumption is
   refused (NACK) and the agent runs the full IKE over VICI; traffic flows through charon's
   new CHILD_SA.

No step waits a fixed time: each waits for the event it needs (an agent line, a harvest
line, an SA) under a deadline that only bounds a hang.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ikeshim.agent.watch import OURS
from ikeshim.xfrm import XfrmSocket, XfrmState
from tests.ikeshim.guest_e2e import _bypass_resumption_port
from tests.testbed.netns import in_netns
from tests.testbed.strongswan import A, B, Charons, Child, make_namespaces, sh, start_charons

WORK = Path("/tmp/agent-e2e")
HANG = 90.0
CLIENT = Path(sys.executable).with_name("ikeresume-resume")
_state: dict[str, Any] = {}


def _cli(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "resume.cli", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "IKERESUME_MASTER_KEY": _state["key"]}


def _lines(name: str) -> list[dict[str, Any]]:
    path = WORK / name
    text = path.read_text() if path.exists() else ""
    return [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]


def _logs() -> str:
    out = []
    for name in ("agent.jsonl", "agent.err", "serve.out", "harvest-a.jsonl", "harvest-b.jsonl"):
        p = WORK / name
        out.append(f"--- {name}\n" + (p.read_text()[-2500:] if p.exists() else "(none)"))
    ch: Charons | None = _state.get("charons")
    if ch is not None:
        out.append("--- charon b\n" + ch.log(B)[-2500:])
    return "\n".join(out)


def _wait(pred: Any, what: str, timeout: float = HANG) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{_logs()}")


def _sas(ns: str) -> list[XfrmState]:
    with in_netns(ns):
        x = XfrmSocket()
    with x:
        return x.dump_sas()


def _agent_event(kind: str, after: int, **match: Any) -> dict[str, Any]:
    """The first agent line of ``kind`` (matching ``match``) after the first ``after`` lines."""

    def find() -> dict[str, Any] | None:
        for ev in _lines("agent.jsonl")[after:]:
            if ev.get("event") == kind and all(ev.get(k) == v for k, v in match.items()):
                return ev
        return None

    found: dict[str, Any] = _wait(find, f"agent event {kind} {match}")
    return found


def _traffic_through(ours: bool) -> dict[str, int]:
    """Ping b -> a; the ESP byte counters of b's SAs (resumed ones if ``ours``, else charon's)
    grow on both ends."""

    def counters(ns: str) -> dict[int, int]:
        return {s.spi: s.curlft.bytes for s in _sas(ns) if bool(s.reqid & OURS) == ours}

    if ours:  # the gateway installs after its commit: wait for b's newest pair there too
        newest = sorted(_sas("b"), key=lambda s: s.curlft.add_time)[-2:]
        want = {s.spi for s in newest if s.reqid & OURS}
        _wait(lambda: want <= {s.spi for s in _sas("a")}, "the gateway's install")
    before = {n: counters(n) for n in "ab"}
    sh("ip netns exec b ping -c 3 -i 0.2 -W 2 192.0.2.1")
    after = {n: counters(n) for n in "ab"}
    for n in "ab":
        grew = [spi for spi, b in after[n].items() if b > before[n].get(spi, 0)]
        assert len(grew) >= 2, (n, before, after)
    return {f"{n}:{spi:#x}": b for n in "ab" for spi, b in after[n].items()}


def _charon_ike_sas(peer: Any) -> str:
    return _state["charons"].swanctl(peer, "--list-sas")


def _start_serve() -> None:
    conf = WORK / "serve.toml"
    conf.write_text(
        f'[server]\nlisten = ["{A.addr}:4501"]\nserver_secret_file = "{WORK}/server.key"\n'
        f'[store]\nurl = "sqlite:///{WORK}/a.db"\n[install]\nmode = "xfrm"\n'
        '[http]\nlisten = ""\n[log]\nlevel = "info"\nformat = "json"\n'
    )
    _state["serve"] = subprocess.Popen(
        _cli("a", "serve", "--config", str(conf)),
        stdout=open(WORK / "serve.out", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=_env(),
    )
    _wait(lambda: sh("ip netns exec a ss -Hlun 'sport = :4501'").strip(), "serve bound")


def _start_agent() -> None:
    conf = WORK / "agent.toml"
    conf.write_text(
        f'[agent]\nsocket = "{WORK}/agent.sock"\nvici = "{B.vici_uri()}"\n'
        f'[store]\nurl = "sqlite:///{WORK}/b.db"\n'
        f'[peers.gw]\nserver = "{A.addr}:4501"\npeer = "fqdn:{A.ident}"\ninstall = "xfrm"\n'
        "timeout = 20\nrto = 2\nretransmits = 3\n"
        'keep_up = true\nike = "ike4"\nchildren = ["host"]\nfallback = true\n'
    )
    _state["agent_conf"] = conf
    _state["agent"] = subprocess.Popen(
        _cli("b", "agent", "-c", str(conf), "run"),
        stdout=open(WORK / "agent.jsonl", "wb"),  # noqa: SIM115
        stderr=open(WORK / "agent.err", "wb"),  # noqa: SIM115
        env=_env(),
    )
    _agent_event("ready", 0)
    _agent_event("vici_connected", 0)


def _full_ike_harvested() -> None:
    n = {x: len(_lines(f"harvest-{x}.jsonl")) for x in "ab"}
    _state["charons"].initiate("host")
    for x in "ab":
        _wait(
            lambda x=x: any(o["kind"] == "harvested" for o in _lines(f"harvest-{x}.jsonl")[n[x] :]),
            f"harvest in {x}",
        )


def check_1_full_ike_harvested_agent_ready() -> dict[str, Any]:
    from store.keys import MasterKey

    WORK.mkdir(parents=True, exist_ok=True)
    _state["key"] = MasterKey.generate().to_line()
    make_namespaces()
    # b: DPD every second, a dead peer cleared (never restarted by charon: the agent owns it)
    charons = start_charons(
        WORK / "sw", [Child("host", dpd_action="clear")], dpd_delay="1s",
        retransmit_timeout=0.5,
    )  # fmt: skip
    _state["charons"] = charons
    harvesters = []
    for p in (A, B):
        harvesters.append(
            subprocess.Popen(
                _cli(p.ns, "harvest", "--vici", p.vici_uri(), "--db", str(WORK / f"{p.ns}.db"),
                     "--json"),
                stdout=open(WORK / f"harvest-{p.ns}.jsonl", "wb"),  # noqa: SIM115
                stderr=open(WORK / f"harvest-{p.ns}.err", "wb"),  # noqa: SIM115
                env=_env(),
            )
        )  # fmt: skip
    _state["harvesters"] = harvesters
    for x in "ab":
        _wait(lambda x=x: any(o["kind"] == "ready" for o in _lines(f"harvest-{x}.jsonl")), "ready")
    _bypass_resumption_port()
    _start_serve()
    _start_agent()
    _full_ike_harvested()
    return {"charon_b": "ike4 established" if "ike4" in _charon_ike_sas(B) else "?"}


def check_2_gateway_kills_the_ike_sa_and_the_agent_resumes() -> dict[str, Any]:
    n = len(_lines("agent.jsonl"))
    _state["charons"].swanctl(A, "--terminate", "--ike", "ike4")
    _agent_event("ike_down", n, peer="gw")
    ev = _agent_event("resume", n, peer="gw")
    assert ev["outcome"] == "resumed" and ev["why"] == "ike_down", (ev, _logs())
    assert "ike4" not in _charon_ike_sas(B)  # charon did not restart it: no race
    counters = _traffic_through(ours=True)
    return {"elapsed_ms": ev["elapsed_ms"], "generation": ev["generation"], "bytes": counters}


def check_3_native_client_request() -> dict[str, Any]:
    out = subprocess.run(
        ["ip", "netns", "exec", "b", str(CLIENT), "--socket", str(WORK / "agent.sock"), "gw"],
        capture_output=True, text=True, timeout=HANG, check=False,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout, out.stderr, _logs())
    body = json.loads(out.stdout)
    assert body["outcome"] == "resumed" and body["generation"] == 2, body
    spis = {int(body["spi_in"], 16), int(body["spi_out"], 16)}
    assert spis == {s.spi for s in _sas("b")}, "the previous resumption's SAs were not replaced"
    _traffic_through(ours=True)
    return {"generation": body["generation"], "elapsed_ms": body["elapsed_ms"]}


def check_3b_resumed_sa_reaching_its_soft_limit_is_resumed_again() -> dict[str, Any]:
    """The kernel reports b's resumed outbound SA at its soft limit (lowered here to the next
    packet, as a cache policy's byte budget would): the agent resumes before the hard limit."""
    (out,) = [s for s in _sas("b") if s.reqid & OURS and s.dst == A.addr]
    soft = dataclasses.replace(out.lifetime, soft_packets=out.curlft.packets + 1)
    with in_netns("b"):
        x = XfrmSocket()
    with x:
        x.update_sa(dataclasses.replace(out, lifetime=soft))
    n = len(_lines("agent.jsonl"))
    sh("ip netns exec b ping -c 2 -i 0.2 -W 2 192.0.2.1")
    _agent_event("sa_expiring", n, peer="gw")
    ev = _agent_event("resume", n, peer="gw")
    assert (ev["outcome"], ev["why"], ev["generation"]) == ("resumed", "sa_expiring", 3), ev
    assert out.spi not in {s.spi for s in _sas("b")}, "the expiring pair was not replaced"
    _traffic_through(ours=True)
    return {"generation": ev["generation"], "elapsed_ms": ev["elapsed_ms"]}


def check_4_gateway_charon_restart_is_survived() -> dict[str, Any]:
    """SIGKILL a's charon and start it again: b's DPD clears its IKE_SA, the agent resumes."""
    charons: Charons = _state["charons"]
    _full_ike_harvested()  # charon's own IKE_SA again (a new chain, generation 0)
    n = len(_lines("agent.jsonl"))
    t0 = time.monotonic()
    charons.restart(A, sigkill=True)
    _agent_event("ike_down", n, peer="gw")
    ev = _agent_event("resume", n, peer="gw")
    assert ev["outcome"] == "resumed" and ev["generation"] == 1, (ev, _logs())
    counters = _traffic_through(ours=True)
    return {"detected_and_resumed_s": round(time.monotonic() - t0, 2), "bytes": counters}


def check_5_refusal_falls_back_to_a_full_ike() -> dict[str, Any]:
    _full_ike_harvested()
    handle = [o for o in _lines("harvest-a.jsonl") if o["kind"] == "harvested"][-1]["handle"]
    sh(f"IKERESUME_MASTER_KEY='{_state['key']}' {sys.executable} -m resume.cli cache revoke "
       f"{handle} --db {WORK}/a.db")  # fmt: skip
    n = len(_lines("agent.jsonl"))
    _state["charons"].swanctl(A, "--terminate", "--ike", "ike4")
    ev = _agent_event("resume", n, peer="gw")
    assert ev["outcome"] == "nack", (ev, _logs())
    full = _agent_event("full_ike", n, peer="gw")
    assert full["outcome"] == "established", (full, _logs())
    assert "ike4" in _charon_ike_sas(B)
    counters = _traffic_through(ours=False)
    return {"bytes": counters}


def check_6_shutdown() -> dict[str, Any]:
    procs = [_state["agent"], _state["serve"], *_state["harvesters"]]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=30) for p in procs]
    _state["charons"].stop()
    stopped = _lines("agent.jsonl")[-1]
    assert codes == [0, 0, 0, 0], codes
    assert stopped["event"] == "stopped", stopped
    assert not (WORK / "agent.sock").exists()
    return {"agent_stats": stopped["stats"]}
