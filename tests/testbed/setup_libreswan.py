"""Make libreswan's pluto available to the UML tests without installing it.

    python -m tests.testbed.setup_libreswan        # as root; a no-op once done

Debian bookworm's ``libreswan`` declares ``Conflicts: ike-server, strongswan-libcharon,
strongswan-starter`` (and ``strongswan-charon`` provides ``ike-server``): it cannot be
installed next to the strongSwan the other tests need.  So, as ``setup_uml`` does for a newer
UML, the package is fetched with ``apt-get download`` from the system's own sources and
unpacked with ``dpkg-deb -x`` under ``/var/cache/ikeresume/libreswan/root`` -- never
installed: dpkg's database and the system's strongSwan are untouched.  Libraries pluto
needs that the host lacks are unpacked beside it, and ``certutil`` (``libnss3-tools``) for
pluto's NSS database.  A UML guest then bind-mounts ``root/usr/libexec`` over
``/usr/libexec`` (pluto runs its helpers from there) and points ``LD_LIBRARY_PATH`` at
``root/usr/lib/x86_64-linux-gnu`` (:mod:`tests.testbed.libreswan`).

Exit status: 0 when pluto runs from the private root afterwards, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/ikeresume/libreswan")
ROOT = CACHE / "root"
LIBDIR = ROOT / "usr/lib/x86_64-linux-gnu"
LIBEXEC = ROOT / "usr/libexec"
PLUTO = LIBEXEC / "ipsec/pluto"
CERTUTIL = ROOT / "usr/bin/certutil"
EXTRA = ("libnss3-tools",)  # certutil, to create pluto's NSS database


class SetupError(RuntimeError):
    """A step failed; the message says which."""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SetupError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-1500:]}")
    return out.stdout


def env() -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": str(LIBDIR)}


def available() -> tuple[bool, str]:
    """(True, version) when pluto runs from the private root; else (False, why)."""
    if not PLUTO.exists() or not CERTUTIL.exists():
        return False, f"libreswan unpacked under {ROOT} (python -m tests.testbed.setup_libreswan)"
    out = subprocess.run([str(PLUTO), "--version"], capture_output=True, text=True, env=env(),
                         check=False)  # fmt: skip
    if out.returncode or "Libreswan" not in out.stdout:
        return False, f"a working pluto under {ROOT}: {out.stderr.strip()[-300:]}"
    return True, out.stdout.split()[1]


def _missing_depends(package: str) -> list[str]:
    """First-level Depends of ``package`` not installed here (first alternative each)."""
    out = _run(["apt-cache", "depends", "--no-recommends", "--no-suggests", package])
    missing = []
    for line in out.splitlines():
        line = line.strip()
        if not line.startswith("Depends:"):
            continue
        name = line.split(":", 1)[1].strip().strip("<>")
        ok = subprocess.run(["dpkg", "-s", name], capture_output=True, check=False)
        if ok.returncode and name.startswith("lib"):
            missing.append(name)
    return missing


def install() -> str:
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise SetupError(f"needs {tool}")
    debs = CACHE / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    wanted = ["libreswan", *EXTRA, *_missing_depends("libreswan")]
    try:
        _run(["apt-get", "download", *wanted], cwd=debs)
    except SetupError:  # no package lists yet on a fresh machine
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "download", *wanted], cwd=debs)
    staging = CACHE / "root.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(staging)])
    shutil.rmtree(ROOT, ignore_errors=True)
    staging.rename(ROOT)
    shutil.rmtree(debs, ignore_errors=True)
    ldd = _run(["ldd", str(PLUTO)], cwd=None) if shutil.which("ldd") else ""
    lost = [ln.split()[0] for ln in ldd.splitlines() if "not found" in ln]
    ok, why = available()
    if lost or not ok:
        raise SetupError(f"pluto under {ROOT} misses {', '.join(lost) or why}")
    return why


def main() -> int:
    if os.geteuid() != 0:
        print("setup_libreswan: run as root", file=sys.stderr)
        return 1
    ok, version = available()
    if not ok:
        try:
            version = install()
        except SetupError as e:
            print(f"setup_libreswan: {e}", file=sys.stderr)
            return 1
    print(f"setup_libreswan: libreswan {version} under {ROOT} (not installed; see module doc)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
