"""The UML kernel choice: the first installed kernel that boots on this CPU, else one reason.

The logic is tested with probe verdicts handed in (both outcomes of every branch, on any
host); the real probe is then run against every installed kernel, forcing each in turn, so
that on a host where Debian stable's UML panics (AVX-512/AMX) the "cannot boot" branch is
exercised for real next to the one that boots, and on other hosts both kernels boot.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import require
from tests.testbed import kernels
from tests.testbed.kernels import Choice, Kernel, Probe
from tests.testbed.uml import cleanup, run_in_uml, uml_available

PANIC = "userspace - ptrace set fp regs failed, errno = 14"


def fake(tmp_path: Path, name: str) -> Kernel:
    binary = tmp_path / f"{name}-linux.uml"
    binary.write_bytes(name.encode())
    return Kernel(name, binary, tmp_path / "modules", "9.9.9", f"{name}-version")


def verdicts(**boots: bool) -> dict[str, Probe]:
    return {n: Probe(b, "" if b else PANIC) for n, b in boots.items()}


def choose(cands: list[Kernel], probes: dict[str, Probe], force: str | None = None) -> Choice:
    return kernels.choose(cands, lambda k: probes[k.name], force, cpu="Test CPU with amx_tile")


def test_stable_is_preferred_where_it_boots(tmp_path: Path) -> None:
    s, n = fake(tmp_path, "stable"), fake(tmp_path, "newer")
    assert choose([s, n], verdicts(stable=True, newer=True)).kernel == s


def test_newer_is_used_where_stable_panics(tmp_path: Path) -> None:
    s, n = fake(tmp_path, "stable"), fake(tmp_path, "newer")
    assert choose([s, n], verdicts(stable=False, newer=True)).kernel == n


def test_no_bootable_kernel_gives_one_line_naming_cpu_panic_and_fix(tmp_path: Path) -> None:
    s = fake(tmp_path, "stable")
    c = choose([s], verdicts(stable=False))
    assert c.kernel is None
    assert "\n" not in c.reason
    assert "cannot boot on this CPU (Test CPU with amx_tile)" in c.reason
    assert PANIC in c.reason and "stable-version" in c.reason
    assert "python -m tests.testbed.setup_uml" in c.reason


def test_both_failing_does_not_suggest_installing_again(tmp_path: Path) -> None:
    s, n = fake(tmp_path, "stable"), fake(tmp_path, "newer")
    c = choose([s, n], verdicts(stable=False, newer=False))
    assert c.kernel is None and "setup_uml" not in c.reason
    assert "stable-version" in c.reason and "newer-version" in c.reason


def test_forcing_picks_that_kernel_even_where_another_is_preferred(tmp_path: Path) -> None:
    s, n = fake(tmp_path, "stable"), fake(tmp_path, "newer")
    assert choose([s, n], verdicts(stable=True, newer=True), force="newer").kernel == n


def test_a_forced_kernel_that_cannot_boot_is_reported_not_replaced(tmp_path: Path) -> None:
    s, n = fake(tmp_path, "stable"), fake(tmp_path, "newer")
    c = choose([s, n], verdicts(stable=False, newer=True), force="stable")
    assert c.kernel is None and PANIC in c.reason and kernels.FORCE_ENV in c.reason


def test_forcing_a_kernel_that_is_not_installed(tmp_path: Path) -> None:
    c = choose([fake(tmp_path, "stable")], verdicts(stable=True), force="newer")
    assert c.kernel is None and "not installed" in c.reason and "setup_uml" in c.reason


def test_nothing_installed(tmp_path: Path) -> None:
    assert "user-mode-linux" in choose([], {}).reason


def test_probe_verdicts_are_cached_per_binary_and_only_when_definitive(tmp_path: Path) -> None:
    k = fake(tmp_path, "stable")
    calls: list[str] = []

    def probe(kernel: Kernel) -> Probe:
        calls.append(kernel.name)
        return Probe(False, PANIC)

    root = tmp_path / "cache"
    assert kernels.cached_probe(k, root=root, probe=probe) == Probe(False, PANIC)
    assert kernels.cached_probe(k, root=root, probe=probe) == Probe(False, PANIC)
    assert calls == ["stable"]
    k.binary.write_bytes(b"an upgraded package")  # new size: a new binary, probed again
    kernels.cached_probe(k, root=root, probe=probe)
    assert calls == ["stable", "stable"]

    def timeout(kernel: Kernel) -> Probe:
        calls.append("timeout")
        return Probe(False, "no boot within 90 s", definitive=False)

    other = fake(tmp_path, "newer")
    kernels.cached_probe(other, root=root, probe=timeout)
    kernels.cached_probe(other, root=root, probe=timeout)
    assert calls.count("timeout") == 2  # a timeout is not a verdict about the CPU


@pytest.mark.uml
@pytest.mark.parametrize("name", ["stable", "newer"])
def test_real_probe_of_each_installed_kernel(name: str) -> None:
    """Boot each installed kernel for real (uncached); one that boots runs a guest script,
    one that does not is reported with its panic line and never chosen when forced."""
    if os.geteuid() != 0:
        require(False, "root (UML guests)")
    installed = {k.name: k for k in kernels.installed()}
    if name not in installed:
        if name == "stable":
            require(False, "Debian's user-mode-linux package")
        pytest.skip("the newer UML is installed only where stable cannot boot (setup_uml)")
    kernel = installed[name]
    probe = kernels.boot_probe(kernel)
    assert probe.definitive, probe.reason
    choice = kernels.choose(list(installed.values()), lambda k: kernels.boot_probe(k), name)
    if probe.boots:
        assert choice.kernel == kernel
        res = run_in_uml("uname -r > $IKR_OUT/release", kernel=kernel, keep=True)
        try:
            assert res.out("release").read_text().strip() == kernel.release
        finally:
            cleanup(res)
    else:
        assert probe.reason and choice.kernel is None
        assert probe.reason in choice.reason


@pytest.mark.uml
def test_this_host_has_a_kernel_that_boots() -> None:
    ok, why = uml_available()
    require(ok, why)
    chosen = kernels.select().kernel
    assert chosen is not None and kernels.boot_probe(chosen).boots
