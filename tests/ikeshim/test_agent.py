"""``ikeresume agent`` on the host: the request protocol over its UNIX socket against a real
responder on loopback (SQLite stores, the exchange, the ratchet; no install: XFRM with ESP
is the UML test's part, tests/ikeshim/test_agent_uml.py), hostile requests, the native
client ``ikeresume-resume`` (warm, cold start, exit codes) and the config checks."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from ikeshim.agent import config as agent_config
from ikeshim.agent.config import EXAMPLE, AgentConfigError, load_config, parse_config
from ikeshim.agent.oneshot import ask_agent
from ikeshim.agent.service import Agent, AgentSocketError, bind_socket
from ikeshim.agent.watch import IkeDown, ike_down_untrusted
from ikeshim.agent.wire import (
    AgentRequestError,
    Request,
    format_request,
    parse_reply,
    parse_request_untrusted,
)
from resume.cli import main
from resume.credential import Lineage
from resume.exitcodes import EXIT_CONFIG, EXIT_FALLBACK, EXIT_OK, EXIT_USAGE
from resume.initiator import MLKEM_POLICIES
from resume.testing import simulated_full_ike
from store.keys import MasterKey
from tests.conftest import require
from tests.resume.net.conftest import HANG, ID_R, Env, eventually, id_i, open_env

CLIENT = Path(sys.executable).with_name("ikeresume-resume")


@pytest.fixture
def keyed_env(tmp_path: Path) -> Iterator[Env]:
    """Server and client stores under a master key that is also a file (for subprocesses)."""
    key = MasterKey.generate()
    (tmp_path / "master.key").write_text(key.to_line() + "\n")
    yield from open_env(tmp_path, key)


def _config_text(env: Env, server: str, sock: Path, peer_extra: str = "") -> str:
    """Peer ``gw`` (client 0, known to the server) and ``stale`` (client 1, unknown);
    ``peer_extra``: more TOML lines for both."""
    peers = ""
    for name, n in (("gw", 0), ("stale", 1)):
        peers += (
            f'[peers.{name}]\nserver = "{server}"\npeer = "fqdn:vpn.example.org"\n'
            f'id = "fqdn:client{n}.example.org"\ninstall = "none"\n'
            "timeout = 60\nrto = 10\nretransmits = 3\n" + peer_extra
        )
    return (
        f'[agent]\nsocket = "{sock}"\nvici = ""\n'
        f'[store]\nurl = "sqlite:///{env.tmp}/client.db"\nkey_file = "{env.tmp}/master.key"\n'
        + peers
    )


def _seed(env: Env) -> None:
    env.seed(1)  # gw: both caches
    env.seed(1, server=False)  # stale: the responder never saw it -> NACK


def _generation(env: Env, n: int) -> int:
    res = env.client_store.lookup_peer(ID_R, time.time(), id_i=id_i(n))
    assert res is not None and res.credential is not None
    return res.credential.generation


async def _ask(path: Path, raw: bytes) -> bytes:
    """Send raw bytes, read until the agent closes."""

    def go() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(HANG)
            s.connect(str(path))
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            out = b""
            try:
                while chunk := s.recv(4096):
                    out += chunk
            except ConnectionResetError:  # an oversized request is dropped unread
                return b""
            return out

    return await trio.to_thread.run_sync(go)


async def _request(path: Path, req: Request) -> tuple[int, dict[str, Any]]:
    line = await trio.to_thread.run_sync(ask_agent, str(path), req, HANG)
    assert line is not None
    return parse_reply(line)


async def _start_agent(
    nursery: trio.Nursery, env: Env, tmp_path: Path, peer_extra: str = ""
) -> tuple[Agent, Path, list[dict[str, Any]]]:
    svc = await env.start(nursery)
    host, port = svc.addresses[0][:2]
    sock = tmp_path / "run" / "agent.sock"
    text = _config_text(env, f"{host}:{port}", sock, peer_extra)
    cfg = parse_config(__import__("tomllib").loads(text))
    events: list[dict[str, Any]] = []
    agent = Agent(cfg, env.client_store, emit=events.append)
    nursery.start_soon(agent.run, bind_socket(str(sock), 0o600, ""))
    return agent, sock, events


async def test_agent_resumes_ratchets_and_answers_exit_codes(
    keyed_env: Env, nursery: trio.Nursery, tmp_path: Path
) -> None:
    env = keyed_env
    _seed(env)
    agent, sock, events = await _start_agent(nursery, env, tmp_path)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    for gen in (1, 2):
        code, body = await _request(sock, Request("resume", "gw"))
        assert (code, body["outcome"], body["generation"]) == (EXIT_OK, "resumed", gen), body
        assert _generation(env, 0) == gen  # durable before the reply
        assert "key" not in repr(body).lower()
    # `ikeresume agent resume` forwards to the running agent (no second store user)
    conf = tmp_path / "agent.toml"
    conf.write_text(_config_text(env, "127.0.0.1:1", sock))  # the agent's own peers answer
    args = ["agent", "-c", str(conf), "resume", "gw"]
    assert await trio.to_thread.run_sync(main, args) == EXIT_OK
    assert agent.stats["request_resume"] == 3 and _generation(env, 0) == 3
    code, body = await _request(sock, Request("resume", "stale"))
    assert (code, body["outcome"]) == (EXIT_FALLBACK, "nack")
    assert _generation(env, 1) == 0
    code, body = await _request(sock, Request("resume", "nobody"))
    assert (code, body["outcome"]) == (EXIT_CONFIG, "unknown_peer")
    code, body = await _request(sock, Request("ping"))
    assert (code, body["outcome"]) == (EXIT_OK, "pong")
    assert [e["outcome"] for e in events if e.get("event") == "resume"] == [
        "resumed", "resumed", "resumed", "nack",
    ]  # fmt: skip
    agent.shutdown()


async def test_agent_resumes_with_ml_kem_when_its_peer_requires_it(
    keyed_env: Env, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """``mlkem = "require"`` in ``[peers.gw]``: hybrid runs, and the chain the agent's
    store keeps turns post-quantum (issue 22)."""
    env = keyed_env
    _seed(env)
    agent, sock, _events = await _start_agent(nursery, env, tmp_path, 'mlkem = "require"\n')
    assert agent.config.peers["gw"].mlkem == "require"
    for gen in (1, 2):
        code, body = await _request(sock, Request("resume", "gw"))
        assert (code, body["outcome"], body["generation"]) == (EXIT_OK, "resumed", gen), body
        assert (body["ke"], body["lineage"]) == ("x25519+mlkem768", "pq-resumed")
    res = env.client_store.lookup_peer(ID_R, time.time(), id_i=id_i(0))
    assert res is not None and res.credential is not None
    assert res.credential.lineage is Lineage.PQ_RESUMED
    agent.shutdown()


def test_the_agents_ml_kem_choices_are_the_initiators() -> None:
    assert agent_config.MLKEM_POLICIES == MLKEM_POLICIES


@pytest.mark.parametrize(
    "raw",
    [
        b"resume ../etc\n",
        b"resume gw extra\n",
        b"RESUME gw\n",
        b"resume gw",  # no newline, then EOF
        b"\xff\xfe\n",
        b"resume " + b"a" * 300 + b"\n",
        b"x" * 1000,
        b"",
    ],
)
async def test_bad_requests_are_refused_counted_and_change_nothing(
    keyed_env: Env, nursery: trio.Nursery, tmp_path: Path, raw: bytes
) -> None:
    env = keyed_env
    _seed(env)
    agent, sock, _ = await _start_agent(nursery, env, tmp_path)
    reply = await _ask(sock, raw)
    if reply or len(raw) <= 256:
        code, body = parse_reply(reply)
        assert (code, body["outcome"]) == (EXIT_USAGE, "bad_request")
    await eventually(lambda: agent.stats["bad_request"] == 1, "the count")
    assert agent.stats["bad_request"] == 1 and agent.stats["request_resume"] == 0
    assert _generation(env, 0) == 0
    code, body = await _request(sock, Request("resume", "gw"))  # still serving
    assert (code, body["generation"]) == (EXIT_OK, 1)


@given(st.binary(max_size=400))
def test_request_parser_accepts_only_the_grammar(raw: bytes) -> None:
    try:
        req = parse_request_untrusted(raw)
    except AgentRequestError:
        return
    assert format_request(req) == raw


def test_a_second_agent_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    first = bind_socket(path, 0o660, "")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(AgentSocketError, match="another agent"):
            bind_socket(path, 0o600, "")
    finally:
        first.close()
    bind_socket(path, 0o600, "").close()  # a dead agent's socket file is replaced


# -- the native client -----------------------------------------------------------------------------
def _client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLIENT), *args], capture_output=True, text=True, timeout=HANG, env=env, check=False
    )


async def test_native_client_warm_path_and_exit_codes(
    keyed_env: Env, nursery: trio.Nursery, tmp_path: Path
) -> None:
    require(CLIENT.is_file(), "ikeresume-resume (pip install -e . builds native/ctl)")
    env = keyed_env
    _seed(env)
    agent, sock, _ = await _start_agent(nursery, env, tmp_path)

    async def client(*args: str) -> subprocess.CompletedProcess[str]:
        return await trio.to_thread.run_sync(lambda: _client("--socket", str(sock), *args))

    ok = await client("gw")
    assert ok.returncode == EXIT_OK, ok.stderr
    assert parse_reply(f"0 {ok.stdout}".encode())[1]["generation"] == 1
    assert (await client("stale")).returncode == EXIT_FALLBACK
    assert (await client("nobody")).returncode == EXIT_CONFIG
    for usage in ((), ("gw", "x"), ("--timeout", "-1", "gw"), ("bad/name",)):
        assert (await client(*usage)).returncode == EXIT_USAGE, usage
    assert agent.stats["request_resume"] == 3  # usage errors never reached the agent
    assert _generation(env, 0) == 1


async def test_native_client_cold_start_runs_the_python_one_shot(
    keyed_env: Env, nursery: trio.Nursery, tmp_path: Path
) -> None:
    require(CLIENT.is_file(), "ikeresume-resume (pip install -e . builds native/ctl)")
    env = keyed_env
    _seed(env)
    svc = await env.start(nursery)
    host, port = svc.addresses[0][:2]
    conf = tmp_path / "agent.toml"
    conf.write_text(_config_text(env, f"{host}:{port}", tmp_path / "none.sock"))
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("IKERESUME_")}

    def client(peer: str) -> subprocess.CompletedProcess[str]:
        return _client("-c", str(conf), "--socket", str(tmp_path / "none.sock"), peer, env=run_env)

    ok = await trio.to_thread.run_sync(client, "gw")
    assert ok.returncode == EXIT_OK, ok.stderr
    assert '"cold_start"' in ok.stdout and '"generation": 1' in ok.stdout
    assert _generation(env, 0) == 1
    nack = await trio.to_thread.run_sync(client, "stale")
    assert nack.returncode == EXIT_FALLBACK and '"nack"' in nack.stderr
    assert (await trio.to_thread.run_sync(client, "nobody")).returncode == EXIT_CONFIG


def test_native_client_times_out_with_exit_3(tmp_path: Path) -> None:
    """An agent that accepts and never answers: exit 3 once --timeout passes."""
    require(CLIENT.is_file(), "ikeresume-resume (pip install -e . builds native/ctl)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(tmp_path / "mute.sock"))
        mute.listen(1)
        r = _client("--socket", str(tmp_path / "mute.sock"), "--timeout", "0.2", "gw")
    assert r.returncode == EXIT_FALLBACK and "timed out" in r.stderr


# -- config and events -----------------------------------------------------------------------------
def test_example_config_is_valid_and_printed(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(str(EXAMPLE))
    assert cfg.peers["gw"].keep_up and cfg.peers["gw"].children == ("net",)
    assert parse_config({"policy": {"clocked": "1h"}}).policy.clocked == 3600
    assert main(["agent", "--print-example"]) == EXIT_OK
    assert capsys.readouterr().out == EXAMPLE.read_text()
    assert main(["agent", "-c", str(EXAMPLE), "check"]) == EXIT_OK


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"agnt": {}}, "unknown key 'agnt'"),
        ({"agent": {"sockt": "/x"}}, "unknown key 'sockt'"),
        ({"agent": {"socket_mode": "0666"}}, "owner and group bits only"),
        ({"agent": {"core": "fast"}}, "core"),
        ({"policy": {"clocked": "soon"}}, r"\[policy\]"),
        ({"policy": {"clocke": "1h"}}, "unknown policy keys"),
        ({"peers": {"gw": {"peer": "fqdn:x"}}}, "server is required"),
        ({"peers": {"gw": {"server": "vpn.example.net", "peer": "x"}}}, "not an IP address"),
        ({"peers": {"gw": {"server": "192.0.2.1", "peer": "x", "keep_up": True}}}, "needs ike"),
        ({"peers": {"gw": {"server": "192.0.2.1", "peer": "x", "timeout": True}}}, "number"),
        ({"peers": {"g/w": {"server": "192.0.2.1", "peer": "x"}}}, "peer name"),
        ({"peers": {"gw": {"server": "192.0.2.1", "peer": "x", "rto": 9}}}, "rto <= timeout"),
        ({"peers": {"gw": {"server": "192.0.2.1", "peer": "x", "mlkem": "yes"}}}, r"mlkem: one"),
    ],
)
def test_config_errors_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        parse_config(doc)


def test_ike_down_events() -> None:
    down = {"ike4": {"local-host": b"192.0.2.2", "remote-host": b"192.0.2.1", "state": b"X"}}
    assert ike_down_untrusted("ike-updown", down) == [IkeDown("ike4", "192.0.2.2", "192.0.2.1")]
    assert ike_down_untrusted("ike-updown", {**down, "up": b"yes"}) == []
    assert ike_down_untrusted("child-updown", down) == []
    assert ike_down_untrusted("ike-updown", {"ike4": {}}) == [IkeDown("ike4", "", "")]


_VICI_VALUES = st.recursive(
    st.binary(max_size=8) | st.text(max_size=8) | st.integers(),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), _VICI_VALUES, max_size=4))
def test_ike_down_never_raises(msg: dict[str, Any]) -> None:
    for ev in ike_down_untrusted("ike-updown", msg):
        assert isinstance(ev.ike, str) and isinstance(ev.local, str)


def test_credential_fixture_roundtrip() -> None:
    """The identities the config names are the ones the seeded credentials carry."""
    c = simulated_full_ike(id_i=id_i(0), id_r=ID_R)
    cfg = parse_config(
        {"peers": {"gw": {"server": "127.0.0.1", "peer": "fqdn:vpn.example.org",
                          "id": "fqdn:client0.example.org"}}}
    )  # fmt: skip
    assert (cfg.peers["gw"].id_r, cfg.peers["gw"].id_i) == (c.id_r, c.id_i)
