"""The whole path on a real kernel (UML): strongSwan full IKEv2 PSK -> ``ikeresume harvest`` on
both peers -> IKE_SA terminated -> ``ikeresume resume`` against ``ikeresume serve`` -> fresh
SAs (new SPIs, new keys) installed on both ends, ping flows and their counters grow -> a
second resumption ratchets -> after the cache policy's clocked lifetime, NACK and exit 3.
The same chain (full IKE, harvest, resume, fresh SAs, traffic) for the other modes and
families: tunnel IPv6, transport IPv6 and tunnel IPv4 (a new chain after the NACK).
"""

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
    return make_verdict(run_guest_checks("tests.ikeshim.guest_e2e", timeout=240))


def test_full_ike_is_harvested_and_torn_down(verdict: Any) -> None:
    verdict("check_1_full_ike_then_harvest_then_terminate")


def test_resumption_installs_fresh_sas_and_esp_flows(verdict: Any) -> None:
    detail = verdict("check_2_resume_installs_fresh_sas_and_traffic_flows")
    assert all(b > 0 for side in detail["bytes"].values() for b in side.values())


def test_second_resumption_ratchets(verdict: Any) -> None:
    assert verdict("check_3_second_resumption_ratchets")["generation"] == 2


def test_tunnel_mode_ipv6_chain_resumes(verdict: Any) -> None:
    detail = verdict("check_4_tunnel_mode_ipv6_chain")
    assert detail["mode"] == "tunnel"
    assert all(b > 0 for side in detail["bytes"].values() for b in side.values())


def test_transport_mode_ipv6_chain_resumes(verdict: Any) -> None:
    detail = verdict("check_5_transport_mode_ipv6_chain")
    assert detail["mode"] == "transport"
    assert all(b > 0 for side in detail["bytes"].values() for b in side.values())


def test_after_policy_expiry_the_server_nacks(verdict: Any) -> None:
    assert verdict("check_6_after_policy_expiry_nack_and_fallback")["outcome"] == "nack"


def test_tunnel_mode_ipv4_chain_resumes_after_the_nack(verdict: Any) -> None:
    detail = verdict("check_7_tunnel_mode_ipv4_chain")
    assert detail["mode"] == "tunnel"
    assert all(b > 0 for side in detail["bytes"].values() for b in side.values())


def test_services_stop_cleanly(verdict: Any) -> None:
    verdict("check_8_shutdown")
