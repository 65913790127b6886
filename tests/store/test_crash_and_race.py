"""Durability and mutual exclusion with real processes.

* crash: a process accepting resumptions is killed with SIGKILL mid-flight; every accept
  it acknowledged is in the database, and no generation it moved past is accepted again.
* race: two processes on one database accept the same handles at the same moment;
  exactly one wins each handle, and the row holds the winner's successor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from resume.credential import Credential
from store.keys import Keyring, MasterKey
from store.repository import RatchetRequest, Store
from tests.store.helpers import make_credential, successor

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store._worker", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _setup(db_url: str, n: int) -> tuple[Store, Keyring, str, list[bytes]]:
    key = MasterKey.generate()
    kr = Keyring([key])
    store = Store.open(db_url, kr)
    handles = []
    for i in range(n):
        c = make_credential(peer=f"peer{i}.example")
        store.upsert_full_ike("responder", c, NOW)
        handles.append(c.handle)
    return store, kr, key.to_line(), handles


@pytest.mark.slow
def test_sigkill_mid_accepts_loses_no_acknowledged_commit(db_url: str) -> None:
    store, _kr, keyline, _ = _setup(db_url, 64)
    proc = _worker("crash", db_url, keyline, "FULL")
    assert proc.stdout is not None
    lines: list[str] = []
    acks = 0
    while acks < 600:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"worker died early (rc={proc.wait()})")
        lines.append(line)
        acks += line.startswith("ACK")
    os.kill(proc.pid, signal.SIGKILL)
    lines += proc.stdout.readlines()  # whatever it wrote before dying still counts
    proc.wait()

    # per chain: the last acknowledged successor, and a possibly in-flight one after it
    acked: dict[bytes, tuple[bytes, int]] = {}  # new handle -> (old handle, old gen)
    consumed: list[tuple[bytes, int]] = []
    inflight: dict[bytes, bytes] = {}  # old handle -> submitted successor
    for line in lines:
        kind, old, gen, new = line.split()
        if kind == "SUBMIT":
            inflight[bytes.fromhex(old)] = bytes.fromhex(new)
        elif kind == "ACK":
            acked[bytes.fromhex(new)] = (bytes.fromhex(old), int(gen))
            consumed.append((bytes.fromhex(old), int(gen)))
    with store.engine.connect() as conn:
        rows = {bytes(h): int(g) for h, g in conn.exec_driver_sql(
            "SELECT handle, generation FROM credentials")}  # fmt: skip
    assert len(rows) == 64  # nothing lost, nothing duplicated
    olds = {o for o, _ in acked.values()}
    tips = [h for h in acked if h not in olds]  # newest acknowledged handle of each chain
    for tip in tips:
        if tip in rows:
            continue
        # committed but not yet acknowledged when killed: must be that chain's in-flight one
        nxt = inflight.get(tip)
        assert nxt is not None and nxt in rows, "an acknowledged accept was lost"
    # no consumed generation is acceptable again, and every row still authenticates
    for old, gen in consumed:
        assert store.lookup(old, NOW) is None
        fake = make_credential(gen)
        assert not store.commit_ratchet(old, gen, successor(fake), NOW)
    with store.engine.connect() as conn:
        uids = [u for (u,) in conn.exec_driver_sql("SELECT uid FROM credentials")]
    assert all(store.verify_record(u) for u in uids)
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("via", ["direct", "committer"])
def test_two_processes_racing_on_one_handle_exactly_one_wins(
    db_url: str, via: str, tmp_path: Path
) -> None:
    store, _kr, keyline, handles = _setup(db_url, 150)
    hfile = tmp_path / "handles"
    hfile.write_text("\n".join(h.hex() for h in handles))
    procs = [_worker("race", db_url, keyline, str(hfile), via, str(seed)) for seed in (1, 2)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "READY"
    for p in procs:  # release both as close together as two writes can be
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        outs.append([line.split() for line in out.splitlines()])
    wins = [0, 0]
    with store.engine.connect() as conn:
        rows = {bytes(h): int(g) for h, g in conn.exec_driver_sql(
            "SELECT handle, generation FROM credentials")}  # fmt: skip
    for i, h in enumerate(handles):
        a, b = outs[0][i], outs[1][i]
        assert a[1] == b[1] == h.hex()
        assert int(a[2]) + int(b[2]) == 1, f"handle {i}: {a[2]} and {b[2]} winners"
        winner = a if a[2] == "1" else b
        wins[0 if winner is a else 1] += 1
        assert rows.get(bytes.fromhex(winner[3])) == 1
        assert h not in rows
    assert sum(wins) == len(handles)
    if store.dialect == "postgresql":  # row locks interleave; SQLite's busy wait may starve one
        assert min(wins) > 0, f"no real contention: {wins}"
    store.close()


@pytest.mark.slow
def test_overlapping_batches_in_opposite_orders_never_deadlock(db_url: str) -> None:
    """Two stores commit the same handles, one batch reversed, many times at once.

    Before batches were locked in handle order, PostgreSQL killed one of the two
    transactions with "deadlock detected" (a StoreUnavailable: fail closed, but a lost batch).
    """
    import threading

    store, kr, _line, handles = _setup(db_url, 120)
    other = Store.open(db_url, kr)
    wins: list[list[bool]] = [[], []]
    errors: list[BaseException] = []
    gate = threading.Barrier(2)

    def run(idx: int, s: Store, order: list[bytes]) -> None:
        try:
            creds = [_cred(s, h) for h in order]
            reqs = [RatchetRequest(c.handle, c.generation, successor(c), NOW + 1) for c in creds]
            gate.wait()
            wins[idx] = s.commit_ratchet_many(reqs)
        except BaseException as e:
            errors.append(e)

    try:
        for round_ in range(10):
            chunk = handles[round_ * 12 : round_ * 12 + 12]
            threads = [
                threading.Thread(target=run, args=(0, store, chunk)),
                threading.Thread(target=run, args=(1, other, chunk[::-1])),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not errors, errors
            # exactly one winner per handle across the two batches
            a, b = wins[0], wins[1][::-1]
            assert all(x != y for x, y in zip(a, b, strict=True)), (a, b)
    finally:
        other.close()
        store.close()


def _cred(s: Store, handle: bytes) -> Credential:
    found = s.lookup(handle, NOW)
    assert found is not None and found.credential is not None, found
    return found.credential
