"""ESP traffic through SAs our installer put in two namespaces (UML, one boot)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ikeshim.conftest import make_verdict, run_guest_checks

pytestmark = [pytest.mark.uml, pytest.mark.slow]

CASES = [
    "check_transport_v4_gcm128",
    "check_tunnel_v4_cbc_sha256",
    "check_transport_v6_chacha",
    "check_tunnel_v6_gcm256",
    "check_transport_v4_cbc_sha512",
]


@pytest.fixture(scope="module")
def verdict() -> Any:
    return make_verdict(run_guest_checks("tests.ikeshim.guest_esp"))


@pytest.mark.parametrize("case", CASES)
def test_ping_flows_and_all_four_sa_counters_grow(verdict: Any, case: str) -> None:
    counters = verdict(case)
    for side in ("a", "b"):
        assert len(counters[side]) == 2
        assert all(b > 0 and p >= 3 for b, p in counters[side].values())


def test_negative_control_no_sa_no_traffic(verdict: Any) -> None:
    verdict("check_policy_without_sa_blocks_traffic")


def test_bypass_socket_keeps_the_resumption_channel_clear(verdict: Any) -> None:
    assert verdict("check_bypass_socket_keeps_a_channel_clear_under_a_blocking_policy") == {
        "without": False,
        "with": True,
    }
