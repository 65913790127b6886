"""``ikeresume serve`` / ``ikeresume resume`` as an operator runs them: exit codes and signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resume.cli import EXIT_CONFIG, EXIT_FALLBACK, EXIT_OK, main
from resume.net.cli import parse_identity
from resume.testing import simulated_full_ike
from store.keys import Keyring, MasterKey
from store.repository import Store


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[server]\nworkres = 2\n", "did you mean 'workers'"),
        ("[protocol]\nallow_papr_mode = true\n", "[protocol] unknown key 'allow_papr_mode'"),
        ("[protocol]\ncookie_tick_seconds = -1\n", "[protocol] cookie_tick_seconds"),
        ("[protocol]\nallow_paper_mode = 'yes'\n", "[protocol] allow_paper_mode: expected bool"),
        ("[policy]\nidle = 'forever'\n", "[policy] not a duration"),
        ("not toml at all [", "TOML syntax error"),
    ],
)
def test_serve_config_errors_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, needle: str
) -> None:
    p = tmp_path / "serve.toml"
    p.write_text(toml)
    assert main(["serve", "--config", str(p), "--check"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert needle in err and str(p) in err


def test_serve_check_and_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--print-example"]) == EXIT_OK
    example = capsys.readouterr().out
    p = tmp_path / "serve.toml"
    p.write_text(example)
    assert main(["serve", "--config", str(p), "--check"]) == EXIT_OK
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == EXIT_CONFIG
    assert "cannot read" in capsys.readouterr().err


def test_serve_without_master_key_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("IKERESUME_MASTER_KEY", raising=False)
    monkeypatch.delenv("IKERESUME_MASTER_KEY_FILE", raising=False)
    rc = main(["serve", "--db", str(tmp_path / "x.db"), "--listen", "127.0.0.1:0"])
    assert rc == EXIT_CONFIG
    assert "master key" in capsys.readouterr().err


def test_resume_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    args = ["resume", "--server", "no-such-host.invalid", "--peer", "vpn", "--db", db]
    assert main(args) == EXIT_CONFIG
    assert "cannot resolve" in capsys.readouterr().err


def test_parse_identity() -> None:
    assert parse_identity("fqdn:vpn.example.org") == b"\x02vpn.example.org"
    assert parse_identity("vpn.example.org") == b"\x02vpn.example.org"
    assert parse_identity("192.0.2.1") == b"\x01\xc0\x00\x02\x01"
    assert parse_identity("ipv6:2001:db8::1")[0] == 5
    assert parse_identity("a@b.c") == b"\x03a@b.c"
    assert parse_identity("keyid:0a0b") == b"\x0b\x0a\x0b"
    assert parse_identity("hex:02414243") == b"\x02ABC"
    with pytest.raises(ValueError):
        parse_identity("ipv4:2001:db8::1")


def _serving_line(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "serving":
            return dict(rec)
    raise AssertionError(f"serve did not start (rc={proc.poll()})")


def test_serve_resume_and_sigterm(tmp_path: Path) -> None:
    """The deployed pair: `serve` (two SO_REUSEPORT workers), `resume` processes, SIGTERM."""
    key = tmp_path / "master.key"
    key.write_text(MasterKey.generate().to_line() + "\n")
    kr = Keyring.from_file(key)
    cred = simulated_full_ike(id_i=b"\x02road.example.org", id_r=b"\x02vpn.example.org")
    other = simulated_full_ike(id_i=b"\x02road.example.org", id_r=b"\x02other.example.org")
    now = time.time()
    with Store.open(f"sqlite:///{tmp_path}/server.db", kr) as s:
        s.upsert_full_ike("responder", cred, now)
    with Store.open(f"sqlite:///{tmp_path}/client.db", kr) as c:
        c.upsert_full_ike("initiator", cred, now)
        c.upsert_full_ike("initiator", other, now)  # the server does not know this one
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        f"""
[server]
listen = ["127.0.0.1:{{port}}"]
workers = 2
server_secret_file = "{tmp_path}/server.secret"
[store]
url = "sqlite:///{tmp_path}/server.db"
key_file = "{key}"
[http]
listen = ""
"""
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # SO_REUSEPORT workers need a fixed port
    cfg.write_text(cfg.read_text().replace("{port}", str(port)))
    env = dict(os.environ, IKERESUME_MASTER_KEY_FILE=str(key))
    serve = subprocess.Popen(
        [sys.executable, "-m", "resume.cli", "serve", "-c", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        rec = _serving_line(serve)
        assert _serving_line(serve)["bound"] == rec["bound"]  # the SO_REUSEPORT sibling
        bound = rec["bound"]
        assert isinstance(bound, list)
        server = str(bound[0])
        base = [sys.executable, "-m", "resume.cli", "resume", "--server", server, "--json"]
        base += ["--db", f"{tmp_path}/client.db", "--timeout", "60", "--rto", "10"]
        ok = subprocess.run(
            [*base, "--peer", "vpn.example.org"], capture_output=True, text=True, env=env
        )
        assert ok.returncode == EXIT_OK, ok.stderr
        out = json.loads(ok.stdout)
        assert out["outcome"] == "resumed" and out["generation"] == 1
        assert (out["ke"], out["lineage"]) == ("x25519", "unknown")
        assert "key" not in ok.stdout.lower()  # SPIs and algorithms only
        pq = subprocess.run(
            [*base, "--peer", "vpn.example.org", "--mlkem", "require"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert pq.returncode == EXIT_OK, pq.stderr
        out = json.loads(pq.stdout)  # the SO_REUSEPORT workers: the same one got message 3
        assert (out["generation"], out["ke"], out["lineage"]) == (
            2, "x25519+mlkem768", "pq-resumed",
        )  # fmt: skip
        nack = subprocess.run(
            [*base, "--peer", "other.example.org"], capture_output=True, text=True, env=env
        )
        assert nack.returncode == EXIT_FALLBACK
        assert json.loads(nack.stdout)["outcome"] == "nack"
        none = subprocess.run(
            [*base, "--peer", "nobody.example.org"], capture_output=True, text=True, env=env
        )
        assert none.returncode == EXIT_FALLBACK
        assert json.loads(none.stdout)["outcome"] == "no_credential"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == EXIT_OK
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        if serve.stderr is not None:
            serve.stderr.close()
