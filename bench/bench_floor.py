"""The floor under one resumption in CPython on this machine: costs no Python responder avoids.

Issues 3 and 4 set 25,000 resumptions/s on one core: 40 us of CPU per resumption, for
everything.  This script measures, on this machine, what the parts of *any* CPython
responder built on these components cost with zero protocol logic around them, so that the
gap between the target and ``bench_server.py`` can be read as "our code" versus "floor":

1. **UDP**: a responder receives two datagrams (messages 1 and 3) and sends one (message 2).
   A bare non-blocking ``socket.recvfrom`` / ``sendto`` loop (no trio, no parsing) pinned to
   one CPU, fed by a client process on the other: thread CPU per receive and per send.
2. **Cryptography**: the hash operations of one real hardened exchange at the responder are
   traced (every SHA-256 object created, copied, updated, finished, with input sizes) and
   replayed as bare :mod:`hashlib` calls; X25519 is one ``from_public_bytes`` + ``exchange``
   (the responder's share is per tick, so one scalar multiplication per exchange).
3. **SQLite** (WAL, ``synchronous=FULL``): a bare primary-key read of a credential-sized
   row, and one compare-and-set ``UPDATE`` inside 512-row group-commit transactions (CPU
   per row, fsync included), on the sqlite3 driver with no Python around them.

The floor is the sum for one resumption: 2 receives + 1 send + hashing (+ X25519) + 1 read
+ 1 row update.  Run::

    python bench/bench_floor.py          # ~20 s; --json for machine-readable output
"""

from __future__ import annotations

import argparse
import hashlib
import hmac as _stdlib_hmac
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import cpu_model
from benchlib import pin_cpu as _pin

TARGET_US = 1e6 / 25_000
RESULTS = Path(__file__).resolve().parent / "results"
SERVER_CPU, CLIENT_CPU = 0, 1


# -- 1. UDP --------------------------------------------------------------------------------
def _udp_server(conn: Any, n: int) -> None:
    """Receive n datagrams, then send n: thread CPU for each half (bare non-blocking calls)."""
    _pin(SERVER_CPU)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    conn.send(s.getsockname())
    peer = conn.recv()
    got = 0
    cpu_recv = 0.0
    while got < n:
        t0 = time.thread_time()
        while True:
            try:
                s.recvfrom(2048)
            except BlockingIOError:
                break
            got += 1
        cpu_recv += time.thread_time() - t0
        if got < n:
            time.sleep(0.0002)  # the client refills; sleeping costs no thread CPU
    payload = b"m" * 180  # message 2's size
    sent = 0
    t0 = time.thread_time()
    while sent < n:
        try:
            s.sendto(payload, peer)
            sent += 1
        except BlockingIOError:
            time.sleep(0)
    cpu_send = time.thread_time() - t0
    conn.send((cpu_recv / n * 1e6, cpu_send / n * 1e6))
    s.close()


def udp_floor(n: int = 40_000) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    pc, child = ctx.Pipe()
    proc = ctx.Process(target=_udp_server, args=(child, n))
    proc.start()
    addr = tuple(pc.recv())
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    c.bind(("127.0.0.1", 0))
    pc.send(c.getsockname())
    payload = b"q" * 200  # message 1/3 size
    for k in range(n):
        c.sendto(payload, addr)
        if k % 256 == 255:
            time.sleep(0.0005)  # stay under the server's receive buffer
    recv_us, send_us = pc.recv()
    proc.join(10)
    c.close()
    return {"recv_us": round(recv_us, 2), "send_us": round(send_us, 2)}


# -- 2. cryptography ----------------------------------------------------------------------
class _Tracer:
    """Records every hash operation keyschedule performs while :attr:`ops` is a list.

    Objects get ids for their whole life, so a hash state created before the measured
    exchange (a tick key's pads, absorbed once per tick) and copied during it is replayed
    as a copy of a state prepared outside the timing, as it is in the responder.
    """

    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] | None = None
        self.born: dict[int, tuple[str, int]] = {}  # oid -> (algorithm, first input size)

    def log(self, *op: Any) -> None:
        if self.ops is not None:
            self.ops.append(op)

    def factory(self, algo: str) -> Callable[..., _Traced]:
        real = getattr(hashlib, algo)

        def make(data: bytes = b"") -> _Traced:
            oid = len(self.born)
            self.born[oid] = (algo, len(data))
            self.log("new", algo, len(data), oid)
            return _Traced(self, real(data), oid, algo)

        return make

    def hmac(self, key: bytes, data: bytes, digest: str) -> bytes:
        self.log("hmac", len(key), len(data), digest)
        return _stdlib_hmac.digest(key, data, digest)


class _Traced:
    """A SHA-256/512 object that reports what is done to it."""

    def __init__(self, tracer: _Tracer, real: Any, oid: int, algo: str) -> None:
        self._t, self._h, self._id, self._algo = tracer, real, oid, algo

    def copy(self) -> _Traced:
        oid = len(self._t.born)
        self._t.born[oid] = (self._algo, 0)
        self._t.log("copy", self._id, oid)
        return _Traced(self._t, self._h.copy(), oid, self._algo)

    def update(self, data: bytes) -> None:
        self._t.log("update", self._id, len(data))
        self._h.update(data)

    def digest(self) -> bytes:
        self._t.log("digest", self._id)
        out: bytes = self._h.digest()
        return out

    def hexdigest(self) -> str:
        self._t.log("digest", self._id)
        out: str = self._h.hexdigest()
        return out


def _one_exchange_trace(x25519: bool) -> tuple[list[tuple[Any, ...]], dict[int, tuple[str, int]]]:
    """The hash operations the responder performs for one exchange (messages 1 and 3),
    after a first exchange in the same tick (per-tick work is not per exchange)."""
    from resume import keyschedule as ks
    from resume.events import CommitNeeded, CredentialNeeded
    from resume.initiator import Initiator, InitiatorConfig
    from resume.responder import Responder, ResponderConfig
    from resume.testing import simulated_full_ike

    tracer = _Tracer()

    class _H:  # the module's ``hashlib`` as keyschedule sees it
        sha256 = staticmethod(tracer.factory("sha256"))
        sha512 = staticmethod(tracer.factory("sha512"))

    saved = (ks._sha256, ks._sha512, dict(ks._BLOCK), ks.hashlib, ks._hmac_digest)
    ks._sha256, ks._sha512 = _H.sha256, _H.sha512  # type: ignore[assignment]
    ks._BLOCK.update({64: _H.sha256, 128: _H.sha512})  # type: ignore[dict-item]
    ks.hashlib = _H  # type: ignore[assignment]
    ks._hmac_digest = tracer.hmac
    try:
        now = 1_800_000_000.0
        secret = b"s" * 32
        resp = Responder(ResponderConfig(credential_cache_size=16), secret)
        probe = Responder(ResponderConfig(), secret)  # answers message 1 for the initiator
        for k in range(2):  # the second exchange is the one recorded
            cred = simulated_full_ike()
            addr = ("198.51.100.7", 40000 + k)
            ini = Initiator(cred, InitiatorConfig(use_x25519=x25519))
            ini.initiate(now)
            [(m1, _)] = ini.datagrams_to_send(now)
            probe.receive_datagram(m1, addr, now)
            ev = probe.next_event()
            if not isinstance(ev, CredentialNeeded):
                raise RuntimeError("probe responder asked for no credential")
            probe.provide_credential(ev.token, cred, None, now)
            [(m2, _)] = probe.datagrams_to_send(now)
            ini.receive_datagram(m2, ("203.0.113.1", 4501), now)
            ini.successor_saved(now)
            [(m3, _)] = ini.datagrams_to_send(now)
            tracer.ops = [] if k == 1 else None
            resp.receive_datagram(m1, addr, now)
            ev = resp.next_event()
            if isinstance(ev, CredentialNeeded):
                resp.provide_credential(ev.token, cred, None, now)
            resp.datagrams_to_send(now)
            resp.receive_datagram(m3, addr, now)
            ev = resp.next_event()
            if isinstance(ev, CredentialNeeded):
                resp.provide_credential(ev.token, cred, None, now)
                ev = resp.next_event()
            if not isinstance(ev, CommitNeeded):
                raise RuntimeError("the traced exchange did not reach its commit")
            ops = tracer.ops
            tracer.ops = None
    finally:
        ks._sha256, ks._sha512, ks.hashlib, ks._hmac_digest = (
            saved[0], saved[1], saved[3], saved[4],
        )  # fmt: skip
        ks._BLOCK.clear()
        ks._BLOCK.update(saved[2])
    if not ops:
        raise RuntimeError("no hash operation recorded")
    return ops, tracer.born


def _replay(ops: list[tuple[Any, ...]], born: dict[int, tuple[str, int]]) -> Callable[[], None]:
    """A function doing exactly the recorded hash work as straight-line hashlib calls.

    Generated source, so no interpretation of the trace is timed: what remains is the
    cost any Python code pays to call hashlib for this key schedule.  States the exchange
    only copies (prepared in an earlier exchange of the tick) are prepared before timing.
    """
    made = {op[3] for op in ops if op[0] == "new"} | {op[2] for op in ops if op[0] == "copy"}
    used = {op[1] for op in ops if op[0] in ("copy", "update", "digest")}
    sizes = {op[2] for op in ops if op[0] in ("new", "update")} | {0, 64, 128}
    sizes |= {op[1] for op in ops if op[0] == "hmac"} | {op[2] for op in ops if op[0] == "hmac"}
    ns: dict[str, Any] = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
    ns["hmac_digest"] = _stdlib_hmac.digest
    ns.update({f"b{n}": b"\xa5" * n for n in sizes})
    for oid in used - made:  # prepared outside the timing, like the responder's tick keys
        algo, _n = born[oid]
        ns[f"o{oid}"] = ns[algo](b"\xa5" * (64 if algo == "sha256" else 128))
    lines = ["def run():"]
    for op in ops:
        if op[0] == "new":
            lines.append(f"    o{op[3]} = {op[1]}(b{op[2]})")
        elif op[0] == "copy":
            lines.append(f"    o{op[2]} = o{op[1]}.copy()")
        elif op[0] == "update":
            lines.append(f"    o{op[1]}.update(b{op[2]})")
        elif op[0] == "digest":
            lines.append(f"    o{op[1]}.digest()")
        else:
            lines.append(f"    hmac_digest(b{op[1]}, b{op[2]}, {op[3]!r})")
    exec(compile("\n".join(lines), "<hash trace>", "exec"), ns)
    run: Callable[[], None] = ns["run"]
    return run


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    t0 = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - t0) / n * 1e6


def crypto_floor(n: int = 20_000) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    ops, born = _one_exchange_trace(x25519=False)
    hashing = _cpu_us(_replay(ops, born), n)
    priv = X25519PrivateKey.generate()
    peer = X25519PrivateKey.generate().public_key().public_bytes_raw()
    x = _cpu_us(lambda: priv.exchange(X25519PublicKey.from_public_bytes(peer)), max(2000, n // 10))
    kinds = ("new", "copy", "update", "digest", "hmac")
    counts = {k: sum(1 for op in ops if op[0] == k) for k in kinds}
    return {"hash_ops": counts, "hashing_us": round(hashing, 2), "x25519_us": round(x, 2)}


# -- 3. SQLite ------------------------------------------------------------------------------
def sqlite_floor(rows: int = 10_000, batch: int = 512, batches: int = 40) -> dict[str, float]:
    d = tempfile.mkdtemp(prefix="bench-floor-", dir="/var/tmp")
    path = os.path.join(d, "floor.db")
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE c (id INTEGER PRIMARY KEY, handle BLOB NOT NULL UNIQUE, "
        "generation INTEGER NOT NULL, secret BLOB NOT NULL, ids BLOB NOT NULL, "
        "params TEXT NOT NULL, last_used REAL NOT NULL)"
    )
    handles = [os.urandom(16) for _ in range(rows)]
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO c (handle, generation, secret, ids, params, last_used) "
        "VALUES (?, 0, ?, ?, ?, 0)",
        [(h, os.urandom(60), os.urandom(40), "x" * 300) for h in handles],
    )
    con.execute("COMMIT")
    cur = con.cursor()
    sel = "SELECT id, generation, secret, ids, params, last_used FROM c WHERE handle = ?"
    t0 = time.thread_time()
    for h in handles:
        cur.execute(sel, (h,))
        cur.fetchone()
    read_us = (time.thread_time() - t0) / rows * 1e6
    gens = dict.fromkeys(range(rows), 0)
    upd = (
        "UPDATE c SET handle = ?, generation = ?, secret = ?, last_used = ? "
        "WHERE handle = ? AND generation = ?"
    )
    per_row: list[float] = []
    for b in range(batches):
        idx = [(b * batch + k) % rows for k in range(batch)]
        params = []
        for i in idx:
            nh = os.urandom(16)
            params.append((nh, gens[i] + 1, os.urandom(60), time.time(), handles[i], gens[i]))
            handles[i] = nh
            gens[i] += 1
        t0 = time.process_time()  # this thread, plus the kernel's fsync work
        con.execute("BEGIN IMMEDIATE")
        if con.executemany(upd, params).rowcount != batch:
            raise RuntimeError("floor benchmark lost a compare-and-set")
        con.execute("COMMIT")
        per_row.append((time.process_time() - t0) / batch * 1e6)
    con.close()
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)
    return {"read_us": round(read_us, 2), "update_row_us": round(statistics.median(per_row), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the JSON result")
    args = ap.parse_args(argv)
    _pin(CLIENT_CPU)
    udp = udp_floor()
    _pin(SERVER_CPU)
    crypto = crypto_floor()
    db = sqlite_floor()
    io = 2 * udp["recv_us"] + udp["send_us"]
    base = io + crypto["hashing_us"] + db["read_us"] + db["update_row_us"]
    with_x = base + crypto["x25519_us"]
    out = {
        "benchmark": "bench_floor",
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
            "load_average": os.getloadavg(),
        },
        "udp": udp,
        "crypto": crypto,
        "sqlite": db,
        "floor_us": {"no_x25519": round(base, 1), "x25519": round(with_x, 1)},
        "target_us": TARGET_US,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_floor.json").write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = out["machine"]
    print(f"machine: {m['cpu']}, {m['logical_cpus']} CPUs, Python {m['python']}")
    print(
        f"UDP, bare non-blocking socket calls: receive {udp['recv_us']} us, "
        f"send {udp['send_us']} us -> 2 receives + 1 send = {io:.1f} us"
    )
    print(
        f"hashing of one hardened exchange ({crypto['hash_ops']}): {crypto['hashing_us']} us; "
        f"X25519 from_public_bytes + exchange: {crypto['x25519_us']} us"
    )
    print(
        f"SQLite WAL FULL: primary-key read {db['read_us']} us; one CAS row in a 512-row "
        f"durable transaction {db['update_row_us']} us"
    )
    print(
        f"floor per resumption: {base:.1f} us without X25519, {with_x:.1f} us with it; "
        f"the 25,000/s/core target allows {TARGET_US:.0f} us for everything"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
