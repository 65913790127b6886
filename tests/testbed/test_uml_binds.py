"""The UML harness's host-/tmp pass-through (no UML needed: it only builds shell lines)."""

from __future__ import annotations

from pathlib import Path

from tests.testbed import uml as testbed


def test_entries_under_host_tmp_are_found_once_and_others_ignored() -> None:
    got = testbed._host_tmp_entries(
        ["/tmp/ci/main", "/tmp/ci/main/tests", "/tmp/venv/bin/python", "/usr/lib/python3", "/tmp"]
    )
    assert got == ["ci", "venv"]


def test_binds_keep_a_tmp_checkout_visible_inside_the_guest(tmp_path: Path) -> None:
    lines = testbed._tmp_binds(tmp_path, "/tmp/some-ci-clone/main").splitlines()
    # the host's /tmp is kept reachable before tmpfs hides it, then the entry is bound back
    assert lines[0] == f"mount --bind /tmp {tmp_path / 'host-tmp'}"
    assert lines[1] == "mount -t tmpfs tmpfs /tmp"
    assert f"mount --bind {tmp_path / 'host-tmp' / 'some-ci-clone'} /tmp/some-ci-clone" in lines
    assert (tmp_path / "host-tmp").is_dir()
