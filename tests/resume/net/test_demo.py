"""The loopback demo really resumes every client, twice, with the caches in step."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from resume.net.demo import client_addr, run_loopback_demo_async


async def test_demo_small(tmp_path: Path) -> None:
    seen: list[int] = []
    s = await run_loopback_demo_async(
        25, 2, workdir=tmp_path, progress=lambda n, _t: seen.append(n)
    )
    assert s.resumed == 50 and s.fallbacks == {} and s.ok
    # the responder was stopped mid-round 2 (no drain) and replaced: everyone came back
    fo = s.failover
    assert fo is not None and fo.recovered and fo.after_results == 12
    # message 3s sent before the stop but not committed yet died too: up to the round
    assert 0 <= fo.message3_lost <= 25 and 0 <= fo.in_flight <= 13
    # each resumption committed once; a message 3 judged lost but committed late is the
    # one attempt that commits twice (its client resumed again)
    assert s.server_commits == 50 + fo.message3_late
    assert 1 <= s.commit_transactions <= 50
    assert s.generations_match and s.keys_match
    assert s.distinct_keys == 100  # fresh keys every time, both directions
    assert seen[-1] == 50
    assert (tmp_path / "responder.db").exists()
    # post-quantum by default: every run mixed ML-KEM in, every chain ends PQ
    assert s.mlkem == "offer" and s.ke_modes == {"x25519+mlkem768": 50}
    assert s.bytes_per_resumption == {"x25519+mlkem768": 2832}
    assert s.lineage_before == {"classical": 13, "hybrid-pq": 6, "unknown": 6}
    assert s.lineage_after == {"hybrid-pq": 6, "pq-resumed": 19}
    assert s.responder_loop_us > 0 and s.responder_commit_us >= 0
    # the exit status follows: one missing resumption or disagreement fails the demo
    assert not replace(s, resumed=49).ok
    assert not replace(s, keys_match=False).ok and not replace(s, generations_match=False).ok
    assert not replace(s, failover=replace(fo, recovered=False)).ok


async def test_demo_without_restart(tmp_path: Path) -> None:
    s = await run_loopback_demo_async(10, 2, workdir=tmp_path, restart=False)
    assert s.ok and s.failover is None and s.server_commits == 20


def test_client_addresses_are_distinct_loopback() -> None:
    addrs = {client_addr(i) for i in range(70000)}
    assert len(addrs) == 70000
    assert all(a.startswith("127.") and not a.endswith(".0") for a in addrs)


async def test_demo_without_ml_kem_keeps_the_lineages(tmp_path: Path) -> None:
    s = await run_loopback_demo_async(8, 1, workdir=tmp_path, mlkem="off")
    assert s.ok and s.ke_modes == {"x25519": 8}
    assert s.lineage_after == s.lineage_before == {"classical": 4, "hybrid-pq": 2, "unknown": 2}
