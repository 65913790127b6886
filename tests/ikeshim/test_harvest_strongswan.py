"""``ikeresume harvest`` on both ends of a real strongSwan IKEv2 PSK connection (UML).

Both harvests run independently and must store the same credential (handle and secret),
for transport and tunnel mode, IPv4 and IPv6, from the initial sync and from VICI events;
the disconnect is recorded with the session's bytes.
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
    return make_verdict(run_guest_checks("tests.ikeshim.guest_harvest", timeout=200))


def test_sync_harvest_gives_both_peers_the_same_credential(verdict: Any) -> None:
    assert len(verdict("check_1_testbed_and_sync_of_existing_child")["handle"]) == 16


def test_event_harvest_for_tunnel_transport_ipv4_ipv6(verdict: Any) -> None:
    handles = verdict("check_2_event_path_v4_v6_tunnel_transport")
    assert set(handles) == {"host", "tun", "host6", "tun6"}
    assert len(set(handles.values())) == 4


def test_disconnect_is_recorded_with_bytes_on_both_sides(verdict: Any) -> None:
    detail = verdict("check_3_disconnect_records_the_session")
    assert set(detail) == {"a", "b"}


def test_harvesters_exit_cleanly_on_sigterm(verdict: Any) -> None:
    verdict("check_4_harvesters_stop_cleanly")
