"""Write a target's named seeds into its corpus: ``python -m tests.fuzz.seeds NAME...``.

Targets that build their seeds (a ``seeds()`` function returning ``{file name: bytes}``)
keep them reproducible this way; the files are committed like any corpus input, and an
existing file is never overwritten (a committed input stays what it was).
"""

from __future__ import annotations

import sys

from tests.fuzz import harness


def write(name: str) -> list[str]:
    make = getattr(harness.load(name), "seeds", None)
    if make is None:
        raise SystemExit(f"target {name} has no seeds()")
    d = harness.corpus_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, data in make().items():
        path = d / fname
        if not path.exists():
            path.write_bytes(data)
            written.append(str(path))
    return written


def main(argv: list[str]) -> int:
    for name in argv or harness.target_names():
        if hasattr(harness.load(name), "seeds"):
            for p in write(name):
                print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
