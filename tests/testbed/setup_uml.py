"""Make a UML kernel that boots on this host available: ``python -m tests.testbed.setup_uml``.

Run as root, after ``apt-get install user-mode-linux patchelf``.  Where Debian stable's UML
boots (the probe of :mod:`tests.testbed.kernels`) there is nothing to do.  Where it cannot
(a CPU whose XSAVE area is larger than its fixed buffer: AVX-512 with AMX), this installs
Debian unstable's ``user-mode-linux`` (pinned to the version known to boot there, while the
archive still serves it) under ``/var/cache/ikeresume/uml/newer`` without touching the
system: apt reads a private sources list and private lists/cache directories, the packages
are unpacked with ``dpkg-deb -x`` (never installed), and a copy of the binary is pointed at
the private glibc it needs with ``patchelf`` (running it through ``ld.so`` instead makes UML
miscompute its memory).  The packages' signatures are checked by apt as for any download.

``--force`` installs the newer kernel even where stable boots (to test that branch).
Exit status: 0 when a kernel that boots here is available afterwards, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.testbed import kernels

MIRROR = os.environ.get("IKERESUME_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LIBDIR = Path("usr/lib/x86_64-linux-gnu")


class SetupError(RuntimeError):
    """A step failed; the message says which and how to fix it."""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SetupError(f"cannot run {cmd[0]}: {exc}") from exc
    if out.returncode:
        raise SetupError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return out.stdout


class PrivateApt:
    """apt-get against Debian unstable with every state file under ``root`` (not the system's)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("lists/partial", "cache/archives/partial"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} sid main\n")

    def _opts(self) -> list[str]:
        r = self.root
        return [
            "-q",
            "-o", f"Dir::Etc::SourceList={r / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={r / 'lists'}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def update(self) -> None:
        _run(["apt-get", *self._opts(), "update"])

    def candidate(self, package: str) -> str:
        out = _run(["apt-cache", *self._opts(), "policy", package])
        for line in out.splitlines():
            if line.strip().startswith("Candidate:"):
                return line.split(":", 1)[1].strip()
        raise SetupError(f"{package} is not in Debian unstable at {MIRROR}")

    def download(self, package: str, version: str, dest: Path) -> Path:
        _run(["apt-get", *self._opts(), "download", f"{package}={version}"], cwd=dest)
        debs = sorted(dest.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
        if not debs:
            raise SetupError(f"apt-get download {package}={version} left no .deb in {dest}")
        return debs[-1]


def install_newer(root: Path = kernels.CACHE_ROOT, pin: str = kernels.NEWER_VERSION) -> str:
    """Install the newer UML under ``root/newer``; returns its package version."""
    for tool in ("apt-get", "dpkg-deb", "patchelf"):
        if shutil.which(tool) is None:
            hint = " (apt-get install patchelf)" if tool == "patchelf" else ""
            raise SetupError(f"needs {tool}{hint}")
    apt = PrivateApt(root / "apt")
    print("setup_uml: reading Debian unstable's package lists (private apt state)", flush=True)
    apt.update()
    version = apt.candidate("user-mode-linux")
    if version != pin:
        # The archive keeps only its current version; say so rather than fail forever.
        print(f"setup_uml: pinned {pin} no longer served; using {version}", flush=True)
    libc = apt.candidate("libc6")
    downloads = root / "downloads"
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir(parents=True)
    uml_deb = apt.download("user-mode-linux", version, downloads)
    libc_deb = apt.download("libc6", libc, downloads)

    final = kernels.newer_dir(root)
    staging = final.with_name("newer.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "root").mkdir(parents=True)
    for deb in (uml_deb, libc_deb):
        _run(["dpkg-deb", "-x", str(deb), str(staging / "root")])
    binary = staging / "linux.uml"
    shutil.copy2(staging / "root" / "usr" / "bin" / "linux.uml", binary)
    # The paths must be the final ones: the staging directory is renamed into place below.
    _run(
        [
            "patchelf",
            "--set-interpreter",
            str(final / "root" / LIBDIR / "ld-linux-x86-64.so.2"),
            "--set-rpath",
            str(final / "root" / LIBDIR),
            str(binary),
        ]
    )
    meta = {"version": version, "libc6": libc, "mirror": MIRROR, "installed": int(time.time())}
    (staging / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    shutil.rmtree(downloads, ignore_errors=True)
    kernel = kernels.newer_kernel(root)
    if kernel is None:
        raise SetupError(f"{final} is incomplete after unpacking")
    kernels.ensure_modules_link(kernel)
    if shutil.which("depmod"):
        _run(["depmod", kernel.release])
    return version


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.testbed.setup_uml", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--force", action="store_true", help="install the newer UML even if stable boots"
    )
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("setup_uml: run as root", file=sys.stderr)
        return 1
    stable = kernels.stable_kernel()
    if stable is not None and not a.force:
        probe = kernels.cached_probe(stable)
        if probe.boots:
            print(f"setup_uml: Debian stable's UML {stable.version} boots here; nothing to do")
            return 0
        print(
            f"setup_uml: UML {stable.version} cannot boot on {kernels.cpu_note()}: {probe.reason}"
        )
    newer = kernels.newer_kernel()
    if newer is None or a.force:
        try:
            install_newer()
        except SetupError as exc:
            print(f"setup_uml: {exc}", file=sys.stderr)
            return 1
        newer = kernels.newer_kernel()
    if newer is None:
        print("setup_uml: the newer UML did not install", file=sys.stderr)
        return 1
    probe = kernels.cached_probe(newer)
    if not probe.boots:
        print(
            f"setup_uml: UML {newer.version} does not boot either: {probe.reason}", file=sys.stderr
        )
        return 1
    print(f"setup_uml: UML {newer.version} ({newer.release}) boots here: {newer.binary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
