"""Automatic resumption with the real charon, in UML (issue 14): the gateway kills the IKE_SA,
or its charon crashes and restarts; the client's agent resumes and traffic comes back
through the resumed SAs; a refused resumption falls back to charon's full IKE.  The checks
are in ``tests/ikeshim/guest_agent.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import require
from tests.ikeshim.conftest import make_verdict, run_guest_checks
from tests.testbed.uml import strongswan_available

pytestmark = [pytest.mark.uml, pytest.mark.slow]


@pytest.fixture(scope="module")
def verdict() -> Any:
    ok, why = strongswan_available()
    require(ok, why)
    return make_verdict(run_guest_checks("tests.ikeshim.guest_agent", timeout=300))


def test_full_ike_is_harvested_and_the_agent_follows_charon(verdict: Any) -> None:
    verdict("check_1_full_ike_harvested_agent_ready")


def test_gateway_kills_the_ike_sa_the_agent_resumes_and_traffic_flows(verdict: Any) -> None:
    detail = verdict("check_2_gateway_kills_the_ike_sa_and_the_agent_resumes")
    assert detail["generation"] == 1 and all(b > 0 for b in detail["bytes"].values())


def test_native_client_request_ratchets(verdict: Any) -> None:
    assert verdict("check_3_native_client_request")["generation"] == 2


def test_resumed_sa_at_its_soft_limit_is_resumed_again(verdict: Any) -> None:
    assert (
        verdict("check_3b_resumed_sa_reaching_its_soft_limit_is_resumed_again")["generation"] == 3
    )


def test_gateway_charon_crash_and_restart_is_survived(verdict: Any) -> None:
    detail = verdict("check_4_gateway_charon_restart_is_survived")
    assert all(b > 0 for b in detail["bytes"].values())


def test_refused_resumption_falls_back_to_a_full_ike(verdict: Any) -> None:
    verdict("check_5_refusal_falls_back_to_a_full_ike")


def test_agent_stops_cleanly(verdict: Any) -> None:
    verdict("check_6_shutdown")
