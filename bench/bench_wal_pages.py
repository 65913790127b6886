"""What one durable ratchet accept writes: WAL frames (pages) per accept, by batch size.

Why: the native service's group-commit thread is about a third of its CPU per resumption
(bench/README.md, issue 13).  A compare-and-set moves a random 16-byte handle in the unique
``(role, handle)`` index, the row's entry in the ``last_used_at`` index and rewrites the
row, so it dirties several b-tree pages that each go to the WAL as a full frame; a group
commit shares the fsync, and shares pages only when accepts happen to land on the same
leaves.  This counts the frames with the native store's own commit (``commit_many``) on a
cache seeded like bench_native_server's::

    python bench/bench_wal_pages.py [--pool 30000] [--n 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench_native_server import seed

from resume.credential import Credential, ProtocolMode
from resume.native import native_credential
from resume.net.native_service import native_sqlite_store
from store.codec import parse_params
from store.keys import Keyring
from store.repository import Store
from tests.store.helpers import successor

RESULTS = Path(__file__).resolve().parent / "results"


def _credential(r: dict[str, str]) -> Credential:
    return Credential(
        ProtocolMode.HARDENED, bytes.fromhex(r["handle"]), int(r["generation"]),
        bytes.fromhex(r["secret"]), bytes.fromhex(r["id_i"]), bytes.fromhex(r["id_r"]),
        parse_params(r["params"]),
    )  # fmt: skip


def _truncate_wal(db: Path) -> None:
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=30_000, help="credentials in the cache")
    ap.add_argument("--n", type=int, default=2000, help="accepts per batch size")
    ap.add_argument("--json", action="store_true", help="print JSON (also written)")
    args = ap.parse_args(argv)
    wd = Path(tempfile.mkdtemp(prefix="ikr-wal-pages-", dir="/var/tmp"))
    db, creds = wd / "responder.db", wd / "creds.jsonl"
    key = seed(f"sqlite:///{db}", args.pool, creds)
    rows = [json.loads(line) for line in creds.open()]
    random.Random(1).shuffle(rows)
    store = Store.open(f"sqlite:///{db}", Keyring.from_text(key))
    ns = native_sqlite_store(store)
    con = sqlite3.connect(db)
    page = int(con.execute("PRAGMA page_size").fetchone()[0])
    pages = int(con.execute("PRAGMA page_count").fetchone()[0])
    con.close()
    _truncate_wal(db)
    wal = Path(f"{db}-wal")
    out: dict[str, object] = {"pool": args.pool, "page_size": page, "db_pages": pages}
    per: dict[int, float] = {}
    for size in (1, 16, 100, 1000):
        batch, rows = rows[: args.n], rows[args.n :]
        w0 = wal.stat().st_size if wal.exists() else 0
        for k in range(0, len(batch), size):
            reqs = []
            for r in batch[k : k + size]:
                c = _credential(r)
                reqs.append((c.handle, c.generation, native_credential(successor(c)),
                             r["params"], time.time(), None))  # fmt: skip
            assert all(ns.commit_many(reqs))
        frames = (wal.stat().st_size - w0) / (page + 24)
        per[size] = round(frames / len(batch), 2)
        print(f"batch {size:5}: {per[size]:.2f} WAL frames ({page} B pages) per accept")
        _truncate_wal(db)
    store.close()
    out["frames_per_accept_by_batch"] = per
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "wal_pages.json").write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
