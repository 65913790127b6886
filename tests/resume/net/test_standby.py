"""A standby responder on the same PostgreSQL serves every client after the first one dies.

Issue 14's cluster story, with the deployed pieces: two ``ikeresume serve`` processes
(the same server secret file and master key, one PostgreSQL cache, distinct install nodes
and addresses) and clients on the path of ``ikeresume resume``
(:func:`resume.net.client.resume_with_store_blocking`, a durable SQLite cache each).

Every client resumes through the primary, which is then SIGKILLed at once -- some of its
last commits may be lost with it, so a client may hold a successor the cache never
accepted (the lost-message-3 case).  Then every client resumes twice through the standby,
all at the same time.  Counted, with no verdict on time (every wait bounds a hang only):

* every standby attempt resumed, and the standby committed exactly those;
* each chain's accepted compare-and-sets (``resumptions``) equal its generation: no
  generation was accepted twice, on either responder;
* every client's cache and the shared cache end at the same credential;
* every consumed generation offered again to the standby is refused (NACK).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from resume.net.client import (
    ClientOptions,
    ResumeResult,
    keep_in_memory_blocking,
    resume_once_blocking,
    resume_with_store_blocking,
)
from resume.testing import simulated_full_ike
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.facilities import postgres_cluster, postgres_url  # noqa: F401 (fixtures)
from tests.resume.net.conftest import HANG, PATIENT, id_i

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ID_R = b"\x02vpn.standby.example"
CLIENTS = 16
STANDBY_ROUNDS = 2


@dataclass
class Served:
    """One ``ikeresume serve`` process, from its "serving" log line."""

    proc: subprocess.Popen[bytes]
    server: tuple[str, int]
    http_port: int

    def commits_ok(self) -> int:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=HANG) as r:
            text = r.read().decode()
        m = re.search(r'^ikeresume_commits_total\{result="ok"\} ([0-9.e+]+)$', text, re.M)
        return int(float(m.group(1))) if m else 0


def _serve(tmp: Path, url: str, node: str, host: str) -> Served:
    conf = tmp / f"{node}.toml"
    secret, key = tmp / "server.secret", tmp / "master.key"
    conf.write_text(
        f"""[server]
listen = ["{host}:0"]
server_secret_file = "{secret}"
message3_affinity = "accept-retry"
[store]
url = "{url}"
key_file = "{key}"
[install]
node = "{node}"
[http]
listen = "127.0.0.1:0"
"""
    )
    log = tmp / f"{node}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "resume.cli", "serve", "-c", str(conf)], stderr=out
        )
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            rec = json.loads(line) if line.startswith("{") else {}
            if rec.get("event") == "serving":
                h, p = str(rec["bound"][0]).rsplit(":", 1)
                return Served(proc, (h, int(p)), int(rec["http_port"]))
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"{node} did not start: {log.read_text()[-2000:]}")


def _client_url(tmp: Path, i: int) -> str:
    return f"sqlite:///{tmp}/client-{i}.db"


def _resume(tmp: Path, kr: Keyring, i: int, server: tuple[str, int]) -> ResumeResult:
    with Store.open(_client_url(tmp, i), kr) as st:
        # each client its own source address, as distinct hosts (per-source fairness)
        opts = ClientOptions(
            config=PATIENT, id_i=id_i(i), local=(f"127.0.1.{i + 1}", 0), bypass_ipsec=False
        )
        return resume_with_store_blocking(st, ID_R, server, opts)


def _round(tmp: Path, kr: Keyring, server: tuple[str, int]) -> list[ResumeResult]:
    """Every client at once (a thread each), as after a failover."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda i: _resume(tmp, kr, i, server), range(CLIENTS)))


def test_standby_on_the_same_postgresql_serves_every_client(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811 (fixture)
) -> None:
    key = MasterKey.generate()
    (tmp_path / "master.key").write_text(key.to_line() + "\n")
    kr = Keyring([key])
    now = time.time()
    creds = [simulated_full_ike(id_i=id_i(i), id_r=ID_R) for i in range(CLIENTS)]
    with Store.open(postgres_url, kr) as st:
        st.upsert_full_ike_many("responder", creds, now)
    for i, cred in enumerate(creds):
        with Store.open(_client_url(tmp_path, i), kr) as st:
            st.upsert_full_ike("initiator", cred, now)

    primary = _serve(tmp_path, postgres_url, "primary", "127.0.0.1")
    standby = _serve(tmp_path, postgres_url, "standby", "127.0.0.2")
    try:
        first = _round(tmp_path, kr, primary.server)
        assert [r.outcome for r in first] == ["resumed"] * CLIENTS
        primary.proc.kill()  # at once: its last commits may be lost with it
        primary.proc.wait(HANG)
        rounds = [_round(tmp_path, kr, standby.server) for _ in range(STANDBY_ROUNDS)]
        outcomes = [r.outcome for rnd in rounds for r in rnd]
        assert outcomes == ["resumed"] * (CLIENTS * STANDBY_ROUNDS), outcomes
        # a client completes once message 3 is sent; the standby commits it just after
        deadline = time.monotonic() + HANG
        while standby.commits_ok() < CLIENTS * STANDBY_ROUNDS:
            assert time.monotonic() < deadline, "the standby never committed every message 3"
            time.sleep(0.05)
        assert standby.commits_ok() == CLIENTS * STANDBY_ROUNDS

        with Store.open(postgres_url, kr) as shared:
            with shared.engine.connect() as conn:
                chains = conn.exec_driver_sql(
                    "SELECT generation, resumptions FROM credentials WHERE role = 'responder'"
                ).all()
            assert len(chains) == CLIENTS
            # one accepted compare-and-set per generation, on whichever responder
            assert all(gen == n for gen, n in chains), chains
            # the primary's commits that survived its kill, and every standby commit
            primary_kept = sum(n for _g, n in chains) - CLIENTS * STANDBY_ROUNDS
            print("standby test:", {"primary_commits_kept": primary_kept})
            assert 0 <= primary_kept <= CLIENTS
            retried = sum(r.used_generation == 0 for r in rounds[0])
            # a client whose first-round commit died with the primary retried its kept
            # previous generation through the standby (lost-message-3 rule)
            assert retried == CLIENTS - primary_kept

            probes: list[str] = []
            for i in range(CLIENTS):
                with Store.open(_client_url(tmp_path, i), kr) as st:
                    mine = st.lookup_peer(ID_R, time.time(), id_i=id_i(i))
                assert mine is not None and mine.credential is not None
                theirs = shared.lookup(mine.credential.handle, time.time())
                assert theirs is not None and theirs.credential == mine.credential, i
                assert mine.previous is not None  # the generation consumed last
                probe = resume_once_blocking(
                    mine.previous,
                    standby.server,
                    ClientOptions(
                        config=PATIENT, local=(f"127.0.1.{i + 1}", 0), bypass_ipsec=False
                    ),
                    save=keep_in_memory_blocking,
                )
                probes.append(probe.outcome)
            assert probes == ["nack"] * CLIENTS
    finally:
        for s in (primary, standby):
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait(HANG)
