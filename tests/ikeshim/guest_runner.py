"""Runs ``check_*`` functions of a guest module inside UML and writes their outcomes as JSON.

Host tests (see ``uml_results`` in ``tests/ikeshim/conftest.py``) boot UML once per module,
run this, and turn each check's outcome into one pytest test.  The assertions run in the
guest, against the real kernel; only their verdicts cross the boundary.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback


def main(module_name: str, out_path: str, only: str = "") -> int:
    mod = importlib.import_module(module_name)
    setup = getattr(mod, "setup_each", None)
    results: dict[str, dict[str, object]] = {}
    names = [n for n in dir(mod) if n.startswith("check_")]
    if only:
        names = [n for n in names if n in only.split(",")]
    for name in sorted(names, key=lambda n: getattr(mod, n).__code__.co_firstlineno):
        start = time.monotonic()
        try:
            if setup is not None:
                setup()
            detail = getattr(mod, name)()
            results[name] = {"ok": True, "detail": detail}
        except BaseException:
            results[name] = {"ok": False, "detail": traceback.format_exc()}
        results[name]["seconds"] = round(time.monotonic() - start, 3)
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(name, "ok" if results[name]["ok"] else "FAILED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))
