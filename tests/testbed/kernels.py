"""Which User-Mode Linux kernel boots on this host: candidates, a cached boot probe, the choice.

Why this exists: Debian stable's UML (6.1) passes a fixed-size buffer to
PTRACE_SETREGSET(NT_X86_XSTATE); on a CPU whose XSAVE area is larger (AVX-512 with AMX, seen
on Intel Xeons) the host kernel answers EFAULT and the guest panics before init ("ptrace set
fp regs failed, errno = 14").  Debian unstable's UML 7.2 sizes the buffer from the host and
boots there, but its binary needs a newer glibc than stable has, so it is installed privately
(``python -m tests.testbed.setup_uml``: a copy of the binary pointed at a private glibc, never
the system's).  Whether a kernel boots depends on the CPU, not on what is installed, so the
only reliable test is a tiny boot, cached per (binary, CPU, host kernel).

Preference: the stable package where it boots (what Debian users have), the private newer one
where it does not.  ``IKERESUME_UML=stable|newer`` forces one (to test the other branch);
a forced kernel that cannot boot is reported, never silently replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Debian stable's package, as installed by apt.
STABLE_BINARY = Path("/usr/bin/linux.uml")
STABLE_MODULES = Path("/usr/lib/uml/modules")
#: Where ``setup_uml`` puts the newer kernel and where probe verdicts are cached.
CACHE_ROOT = Path(os.environ.get("IKERESUME_UML_CACHE", "/var/cache/ikeresume/uml"))
NEWER_VERSION = "7.2um1"  # Debian unstable's user-mode-linux known to boot on AMX hosts
PROBE_MARKER = "IKR-UML-PROBE-OK"
FORCE_ENV = "IKERESUME_UML"
#: CPU features that make the XSAVE area larger than stable UML's buffer.
XSAVE_HEAVY_FLAGS = ("avx512f", "amx_tile")
SETUP_HINT = "run `python -m tests.testbed.setup_uml` as root (installs UML {v} privately)"


@dataclass(frozen=True)
class Kernel:
    """One UML kernel: its binary, its module tree and where it came from."""

    name: str  # "stable" or "newer"
    binary: Path
    modules: Path  # the directory holding <release>/
    release: str
    version: str  # Debian package version, for messages

    def fingerprint(self) -> str:
        """Identity of the binary for the probe cache (path, size, mtime)."""
        st = self.binary.stat()
        return f"{self.binary}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class Probe:
    """Outcome of one tiny boot."""

    boots: bool
    reason: str  # empty when it boots; else the panic line or what went wrong
    definitive: bool = True  # False for a timeout or a failure to start: not cached


def _release_in(modules: Path) -> str | None:
    if not modules.is_dir():
        return None
    releases = sorted(p.name for p in modules.iterdir() if p.is_dir())
    return releases[-1] if releases else None


def _dpkg_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def stable_kernel() -> Kernel | None:
    """Debian's packaged UML, if installed."""
    release = _release_in(STABLE_MODULES)
    if not STABLE_BINARY.exists() or release is None:
        return None
    version = _dpkg_version("user-mode-linux")
    return Kernel("stable", STABLE_BINARY, STABLE_MODULES, release, version)


def newer_dir(root: Path = CACHE_ROOT) -> Path:
    return root / "newer"


def newer_kernel(root: Path = CACHE_ROOT) -> Kernel | None:
    """The privately installed newer UML (``setup_uml``), if present."""
    base = newer_dir(root)
    try:
        meta = json.loads((base / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    binary = base / "linux.uml"
    modules = base / "root" / "usr" / "lib" / "uml" / "modules"
    release = _release_in(modules)
    if not binary.exists() or release is None:
        return None
    return Kernel("newer", binary, modules, release, str(meta.get("version", "unknown")))


def installed() -> list[Kernel]:
    """Every installed candidate, in order of preference."""
    return [k for k in (stable_kernel(), newer_kernel()) if k is not None]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def host_key() -> str:
    """What decides whether a given binary boots: the CPU's features and the host kernel."""
    flags = " ".join(sorted(cpu_flags()))
    raw = f"{cpu_model()}|{flags}|{platform.release()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def ensure_modules_link(kernel: Kernel) -> None:
    """Make ``/lib/modules/<release>`` resolve to the kernel's modules inside the guest.

    The guest's root is the host's ``/``, and the guest kernel itself calls modprobe for
    crypto templates, so the path must exist; the host has no modules of that release, so a
    link to the UML package's directory is harmless.  A stale link (another install of the
    same release) is repointed.
    """
    target = kernel.modules / kernel.release
    link = Path("/lib/modules") / kernel.release
    if link.is_symlink() and Path(os.readlink(link)) != target:
        link.unlink()
    if link.exists() or link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        link.symlink_to(target)


def _panic_reason(console: str) -> str:
    keys = ("ptrace set fp regs failed", "Kernel panic", "panic", "error", "not found")
    for key in keys:
        for line in console.splitlines():
            if key in line:
                return line.strip()
    tail = console.strip().splitlines()
    return tail[-1].strip() if tail else "no console output"


def boot_probe(kernel: Kernel, timeout: float = 90.0) -> Probe:
    """Boot ``kernel`` with an init that prints a marker and powers off (a few seconds)."""
    ensure_modules_link(kernel)
    base = Path(tempfile.mkdtemp(prefix="ikeresume-uml-probe-", dir="/var/tmp"))
    try:
        init = base / "init.sh"
        init.write_text(f"#!/bin/sh\necho {PROBE_MARKER}\n/sbin/poweroff -f\n")
        init.chmod(0o755)
        cmd = [
            str(kernel.binary),
            "mem=256M",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            f"init={init}",
            "con=null",
            "con0=fd:0,fd:1",
        ]
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": "/dev/shm", "HOME": str(base)}
        try:
            out = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return Probe(False, f"no boot within {timeout:.0f} s", definitive=False)
        except OSError as exc:
            return Probe(False, f"cannot start {kernel.binary}: {exc}", definitive=False)
        console = (out.stdout + out.stderr).decode(errors="replace")
        if PROBE_MARKER in console:
            return Probe(True, "")
        return Probe(False, _panic_reason(console))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cache_file(root: Path = CACHE_ROOT) -> Path:
    return root / "probe.json"


def _load_cache(root: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_cache_file(root).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_probe(
    kernel: Kernel,
    *,
    root: Path = CACHE_ROOT,
    probe: Callable[[Kernel], Probe] = boot_probe,
) -> Probe:
    """``probe(kernel)``, remembered per (binary, CPU, host kernel) under ``root``."""
    key = f"{kernel.fingerprint()}|{host_key()}"
    cache = _load_cache(root)
    hit = cache.get(key)
    if isinstance(hit, dict) and isinstance(hit.get("boots"), bool):
        return Probe(bool(hit["boots"]), str(hit.get("reason", "")))
    result = probe(kernel)
    if result.definitive:
        cache[key] = {"boots": result.boots, "reason": result.reason, "kernel": kernel.name}
        with contextlib.suppress(OSError):
            root.mkdir(parents=True, exist_ok=True)
            tmp = _cache_file(root).with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            tmp.replace(_cache_file(root))
    return result


@dataclass(frozen=True)
class Choice:
    """The kernel to use, or why there is none (a one-line reason for skip/fail)."""

    kernel: Kernel | None
    reason: str


def cpu_note(flags: set[str] | None = None) -> str:
    have = [f for f in XSAVE_HEAVY_FLAGS if f in (cpu_flags() if flags is None else flags)]
    return f"{cpu_model()} with {', '.join(have)}" if have else cpu_model()


def choose(
    candidates: Sequence[Kernel],
    probe: Callable[[Kernel], Probe],
    force: str | None = None,
    cpu: str | None = None,
) -> Choice:
    """The first candidate that boots (or the forced one), else a reason naming the fix."""
    cpu = cpu if cpu is not None else cpu_note()
    pool = list(candidates)
    if force:
        pool = [k for k in candidates if k.name == force]
        if not pool:
            hint = SETUP_HINT.format(v=NEWER_VERSION) if force == "newer" else "apt install"
            return Choice(None, f"{FORCE_ENV}={force}, but that UML is not installed ({hint})")
    if not pool:
        return Choice(None, "User-Mode Linux (Debian package user-mode-linux)")
    failures = []
    for kernel in pool:
        result = probe(kernel)
        if result.boots:
            return Choice(kernel, "")
        failures.append(f"UML {kernel.version} ({kernel.name}): {result.reason}")
    fix = (
        f"force another with {FORCE_ENV}"
        if force
        else (
            SETUP_HINT.format(v=NEWER_VERSION)
            if not any(k.name == "newer" for k in pool)
            else "no installed UML boots here; see tests/testbed/kernels.py"
        )
    )
    return Choice(
        None,
        f"UML installed but cannot boot on this CPU ({cpu}): {'; '.join(failures)}; fix: {fix}",
    )


_chosen: Choice | None = None


def select(refresh: bool = False) -> Choice:
    """The kernel for this process's guests (probed once per machine, cached on disk)."""
    global _chosen
    if _chosen is None or refresh:
        force = os.environ.get(FORCE_ENV) or None
        _chosen = choose(installed(), cached_probe, force)
    return _chosen
