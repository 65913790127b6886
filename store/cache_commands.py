"""The handlers of ``ikeresume cache ...`` (registered by :mod:`store.cli`).

A module of its own so that its imports can sit at the top: :mod:`store.cli` imports it
only when a ``cache`` subcommand runs, never for ``ikeresume --help`` or another command.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from resume.exitcodes import EXIT_CONFIG, EXIT_ERROR
from store.bootstrap import bootstrap
from store.engine import ENV_DB
from store.errors import MasterKeyError, StoreConfigError, StoreError
from store.keys import ENV_KEY, ENV_KEY_FILE, Keyring, MasterKey
from store.maintenance import PQ_LINEAGES, find_record, list_records, purge, rotate_key, stats
from store.policy import Policy
from store.repository import Store
from store.sa_description import parse_sa_description
from store.transfer import export_jsonl, import_jsonl


# -- plumbing --------------------------------------------------------------------------
def _config(args: argparse.Namespace) -> dict[str, Any]:

    if not args.config:
        return {}
    try:
        return tomllib.loads(Path(args.config).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise StoreConfigError(f"config {args.config}: {e}") from None


def _open(args: argparse.Namespace, *, need_key: bool) -> Any:

    cfg = _config(args)
    st = cfg.get("store", {})
    url = args.db or os.environ.get(ENV_DB) or st.get("url")
    if not url:
        raise StoreConfigError(f"no database: pass --db or set ${ENV_DB}")
    try:
        policy = Policy.from_mapping(cfg.get("policy", {}))
    except ValueError as e:
        raise StoreConfigError(f"policy: {e}") from None
    keyring = None
    key_file = args.key_file or (None if _env_key() else st.get("key_file"))
    if need_key or key_file or _env_key():
        keyring = Keyring.load(key_file)
    return Store.open(
        url,
        keyring,
        policy,
        sqlite_synchronous=str(st.get("sqlite_synchronous", "FULL")),
    )


def _env_key() -> bool:

    return bool(os.environ.get(ENV_KEY) or os.environ.get(ENV_KEY_FILE))


def _now(args: argparse.Namespace) -> float:
    return float(args.now) if args.now is not None else time.time()


def _run(args: argparse.Namespace, body: Any) -> int:
    """Run ``body``; map store errors to exit codes and a clear message (JSON with --json)."""

    try:
        return int(body() or 0)
    except StoreError as e:
        rc = EXIT_CONFIG if isinstance(e, StoreConfigError | MasterKeyError) else EXIT_ERROR
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e), "type": type(e).__name__}))
        print(f"ikeresume cache: {type(e).__name__}: {e}", file=sys.stderr)
        return rc


def _emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True) if args.json else human)


def _ts(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


# -- commands --------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    def body() -> int:

        with _open(args, need_key=False) as store:
            recs = list_records(store, _now(args), role=args.role, limit=args.limit)
        if args.json:
            print(json.dumps([r.to_json() for r in recs], indent=2, sort_keys=True))
            return 0

        t = Table(
            "uid", "role", "peer (id_i -> id_r)", "gen", "lineage", "resumed", "last used",
            "usable",
        )  # fmt: skip
        for r in recs:
            t.add_row(
                r.uid[:12],
                r.role,
                f"{r.id_i} -> {r.id_r}",
                str(r.generation),
                r.lineage + (" (PQ)" if r.lineage in PQ_LINEAGES else ""),
                str(r.counters.resumptions),
                _ts(r.counters.last_used_at),
                "yes" if r.refusal is None else f"no ({r.refusal.value})",
            )
        Console().print(t)
        mix = collections.Counter(r.lineage for r in recs)
        print(f"{len(recs)} record(s)" + ("; lineage: " if mix else "")
              + ", ".join(f"{n} {lin}" for lin, n in sorted(mix.items())))  # fmt: skip
        return 0

    return _run(args, body)


def _cmd_show(args: argparse.Namespace) -> int:
    def body() -> int:

        with _open(args, need_key=args.verify) as store:
            rec = find_record(store, args.ref, _now(args))
            if rec is None:
                if args.json:
                    print(json.dumps({"error": f"no record {args.ref}", "type": "NotFound"}))
                print(f"ikeresume cache: no record {args.ref}", file=sys.stderr)
                return EXIT_ERROR
            out = rec.to_json()
            if args.verify:
                try:
                    # unwraps current (and previous) generation; never prints the secret
                    out["secret_verified"] = store.verify_record(rec.uid)
                except StoreError as e:
                    out["secret_verified"] = False
                    out["verify_error"] = str(e)
        human = "\n".join(f"{k:20} {v}" for k, v in out.items() if k != "params")
        human += "\nparams               " + json.dumps(out["params"], sort_keys=True)
        _emit(args, out, human)
        return 0 if out.get("secret_verified", True) else EXIT_ERROR

    return _run(args, body)


def _cmd_revoke(args: argparse.Namespace) -> int:
    def body() -> int:

        with _open(args, need_key=False) as store:
            rec = find_record(store, args.ref, _now(args))
            n = 0 if rec is None else store.revoke(uid=rec.uid)
        _emit(args, {"revoked": n, "uid": None if rec is None else rec.uid},
              f"revoked {n} record(s)")  # fmt: skip
        return 0 if n else EXIT_ERROR

    return _run(args, body)


def _cmd_purge(args: argparse.Namespace) -> int:
    def body() -> int:

        with _open(args, need_key=False) as store:
            n = purge(store, _now(args), dry_run=args.dry_run)
        verb = "would purge" if args.dry_run else "purged"
        _emit(args, {"purged": n, "dry_run": args.dry_run}, f"{verb} {n} record(s)")
        return 0

    return _run(args, body)


def _cmd_stats(args: argparse.Namespace) -> int:
    def body() -> int:

        with _open(args, need_key=False) as store:
            s = stats(store, _now(args))
        human = "\n".join(f"{k:24} {v}" for k, v in s.items())
        _emit(args, s, human)
        return 0

    return _run(args, body)


def _cmd_rotate(args: argparse.Namespace) -> int:
    def body() -> int:

        with _open(args, need_key=True) as store:
            res = rotate_key(store, batch=args.batch)
            cur = store.keyring.current_id
        out = {**res.to_json(), "current_key_id": cur}
        _emit(args, out, f"rewrapped {res.rewrapped}, already current {res.already_current}, "
              f"failed {len(res.failed)} (current key {cur})")  # fmt: skip
        return EXIT_ERROR if res.failed else 0

    return _run(args, body)


def _cmd_export(args: argparse.Namespace) -> int:
    def body() -> int:

        target = Keyring.from_file(args.rewrap_key_file) if args.rewrap_key_file else None
        with _open(args, need_key=target is not None) as store:
            if args.output:
                fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fp:
                    n = export_jsonl(store, fp, rewrap_to=target)
            else:
                n = export_jsonl(store, sys.stdout, rewrap_to=target)
        if args.output:
            _emit(args, {"exported": n, "output": args.output}, f"exported {n} record(s)")
        return 0

    return _run(args, body)


def _read_input(path: str) -> bytes:
    """The bytes of FILE, or of stdin for ``-`` (decoding is the reader's job)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as e:
        raise StoreConfigError(f"cannot read {path}: {e.strerror}") from None


def _cmd_import(args: argparse.Namespace) -> int:
    def body() -> int:

        source = Keyring.from_file(args.source_key_file) if args.source_key_file else None
        data = _read_input(args.input)
        with _open(args, need_key=True) as store:
            res = import_jsonl(
                store, data.splitlines(), source=source, replace=args.replace, name=args.input
            )
        _emit(args, res.to_json(), f"imported {res.imported} (replaced {res.replaced}, "
              f"skipped existing {res.skipped_existing})")  # fmt: skip
        return 0

    return _run(args, body)


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    def body() -> int:

        # Validated before the store is even opened: a bad description writes nothing.
        desc = parse_sa_description(_read_input(args.input), source=args.input)
        with _open(args, need_key=True) as store:
            res = bootstrap(store, args.role, desc, _now(args))
        out = res.to_json()
        _emit(args, out, f"bootstrapped {res.role} generation {res.generation} "
              f"handle {out['handle']} (uid {res.uid}, lineage {res.lineage})")  # fmt: skip
        return 0

    return _run(args, body)


def _cmd_keygen(args: argparse.Namespace) -> int:
    def body() -> int:

        k = MasterKey.generate(args.key_id)
        if args.output:
            try:
                fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as e:
                raise StoreConfigError(f"cannot create {args.output}: {e.strerror}") from None
            with os.fdopen(fd, "w") as fp:
                fp.write(k.to_line() + "\n")
            _emit(args, {"key_id": k.key_id, "output": args.output},
                  f"wrote key {k.key_id} to {args.output}")  # fmt: skip
        else:
            _emit(args, {"key_id": k.key_id, "key_line": k.to_line()}, k.to_line())
        return 0

    return _run(args, body)
