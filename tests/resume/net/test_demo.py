"""The loopback demo really resumes every client, twice, with the caches in step."""

from __future__ import annotations

from pathlib import Path

from resume.net.demo import client_addr, run_loopback_demo_async


async def test_demo_small(tmp_path: Path) -> None:
    s = await run_loopback_demo_async(25, 2, workdir=tmp_path)
    assert s.resumed == 50 and s.fallbacks == {}
    assert s.server_commits == 50
    assert 1 <= s.commit_transactions <= 50
    assert s.generations_match
    assert (tmp_path / "responder.db").exists()


def test_client_addresses_are_distinct_loopback() -> None:
    addrs = {client_addr(i) for i in range(70000)}
    assert len(addrs) == 70000
    assert all(a.startswith("127.") and not a.endswith(".0") for a in addrs)
