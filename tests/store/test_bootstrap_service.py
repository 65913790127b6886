"""Two caches provisioned only by ``ikeresume cache bootstrap`` resume against each other.

Everything runs as an operator would run it, each a separate process: the same SA
description goes to ``cache bootstrap --role responder`` and ``--role initiator`` (on stdin),
``ikeresume serve`` answers from the responder's cache on loopback, and ``ikeresume resume``
resumes twice from the initiator's cache.  Both ratchets must commit on both sides: the
caches end at generation 2 with the same handle.  No deadline here decides a verdict; the
generous ones only bound a hang.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from resume.cli import EXIT_OK
from store.keys import MasterKey
from tests.store.sa_descriptions import dumps, example_description

HANG = 60.0  # seconds: bounds a hang, never decides a verdict


def _run(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> Any:
    p = subprocess.run(
        [sys.executable, "-m", "resume.cli", *args],
        input=stdin, capture_output=True, env=env, timeout=HANG, check=False,
    )  # fmt: skip
    assert p.returncode == EXIT_OK, (args, p.stdout, p.stderr)
    return json.loads(p.stdout)


def _serving(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:  # the process's own log; ends if it dies
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "serving":
            return str(rec["bound"][0])
    raise AssertionError(f"serve exited before serving (rc={proc.wait()})")


def _generation(db: Path, role: str) -> tuple[int, bytes]:
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT generation, handle FROM credentials WHERE role = ?", (role,)
        ).fetchone()
    finally:
        con.close()
    return int(row[0]), bytes(row[1])


def _wait_generation(db: Path, role: str, want: int) -> bytes:
    """The responder acknowledges a resumption only once its commit is durable, but the
    initiator finishes when it sends message 3: wait (bounded) for the server's row."""
    deadline = time.monotonic() + HANG
    while True:
        gen, handle = _generation(db, role)
        if gen >= want or time.monotonic() > deadline:
            assert gen == want, f"{role} at generation {gen}, expected {want}"
            return handle
        time.sleep(0.05)


def test_two_bootstrapped_caches_resume_twice_over_the_service(tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text(MasterKey.generate().to_line() + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKERESUME_")}
    env["IKERESUME_MASTER_KEY_FILE"] = str(key)
    description = dumps(example_description())
    server_db, client_db = tmp_path / "server.db", tmp_path / "client.db"
    boot = ["cache", "bootstrap", "--json", "-"]
    r = _run([*boot, "--role", "responder", "--db", str(server_db)], env, description)
    i = _run([*boot, "--role", "initiator", "--db", str(client_db)], env, description)
    assert r["handle"] == i["handle"] and r["generation"] == i["generation"] == 0

    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        f"""
[server]
listen = ["127.0.0.1:0"]
server_secret_file = "{tmp_path}/server.secret"
[store]
url = "sqlite:///{server_db}"
key_file = "{key}"
[http]
listen = ""
"""
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "resume.cli", "serve", "-c", str(cfg)],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        server = _serving(serve)
        handles = [bytes.fromhex(r["handle"])]
        for generation in (1, 2):
            out = _run(
                ["resume", "--server", server, "--peer", "fqdn:vpn.example.org", "--json",
                 "--db", str(client_db), "--timeout", str(HANG), "--rto", "1"],
                env,
            )  # fmt: skip
            assert out["outcome"] == "resumed" and out["generation"] == generation, out
            server_handle = _wait_generation(server_db, "responder", generation)
            client_gen, client_handle = _generation(client_db, "initiator")
            assert client_gen == generation and client_handle == server_handle
            handles.append(server_handle)
        assert len(set(handles)) == 3  # the handle rotated with every ratchet
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(HANG) == EXIT_OK
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        if serve.stderr is not None:
            serve.stderr.close()

