"""Subprocess body for the crash-safety and race tests (``python -m tests.store._worker``).

crash MODE URL KEYLINE: ratchet every chain found in the store, forever, from 16 trio tasks
    through the group committer; print "SUBMIT old_hex old_gen new_hex" before and
    "ACK old_hex old_gen new_hex" after each acknowledged accept (flushed at once).
race URL KEYLINE HANDLES_FILE VIA SEED: wait for a line on stdin, then try once to accept
    every handle (generation 0) in an order shuffled by SEED; print "R handle_hex 0|1 new_hex".
"""

from __future__ import annotations

import random
import sys

import trio

from resume.credential import Credential
from store.committer import GroupCommitter
from store.keys import Keyring
from store.repository import Store
from tests.store.helpers import successor

NOW = 1_800_000_000.0


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _current(store: Store, handles: list[bytes]) -> list[Credential]:
    """The current credential of each handle; exits if setup left one missing."""
    creds = []
    for h in handles:
        r = store.lookup(h, NOW)
        if r is None or r.credential is None:
            raise SystemExit("setup record missing")
        creds.append(r.credential)
    return creds


def crash(url: str, keyline: str, sync: str) -> None:
    store = Store.open(url, Keyring.from_text(keyline), sqlite_synchronous=sync)
    with store.engine.connect() as conn:
        handles = [bytes(h) for (h,) in conn.exec_driver_sql("SELECT handle FROM credentials")]
    creds = _current(store, handles)

    async def chain(committer: GroupCommitter, idx: list[int]) -> None:
        cur = [creds[i] for i in idx]
        while True:
            for k, c in enumerate(cur):
                nxt = successor(c)
                _out(f"SUBMIT {c.handle.hex()} {c.generation} {nxt.handle.hex()}")
                if not await committer.commit_ratchet(c.handle, c.generation, nxt, NOW):
                    raise SystemExit("lost a CAS nobody else races for")
                _out(f"ACK {c.handle.hex()} {c.generation} {nxt.handle.hex()}")
                cur[k] = nxt

    async def main() -> None:
        with GroupCommitter(store) as committer:
            async with trio.open_nursery() as n:
                for t in range(16):
                    n.start_soon(chain, committer, list(range(t, len(creds), 16)))

    trio.run(main)


def race(url: str, keyline: str, handles_file: str, via: str, seed: str) -> None:
    store = Store.open(url, Keyring.from_text(keyline))
    with open(handles_file) as f:
        handles = [bytes.fromhex(x) for x in f.read().split()]
    creds = _current(store, handles)
    succs = [successor(c) for c in creds]
    order = list(range(len(creds)))
    random.Random(seed).shuffle(order)  # each process its own order: they cross everywhere
    _out("READY")
    sys.stdin.readline()
    if via == "committer":
        with GroupCommitter(store, max_batch=8) as gc:
            futs = {i: gc.submit(creds[i].handle, 0, succs[i], NOW) for i in order}
            results = [futs[i].result() for i in range(len(creds))]
    else:
        res = {i: store.commit_ratchet(creds[i].handle, 0, succs[i], NOW) for i in order}
        results = [res[i] for i in range(len(creds))]
    for c, s, ok in zip(creds, succs, results, strict=True):
        _out(f"R {c.handle.hex()} {int(ok)} {s.handle.hex()}")


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    if cmd == "crash":
        crash(*rest)
    else:
        race(*rest)
