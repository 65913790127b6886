"""Our XFRM client against a real ESP-capable kernel (User-Mode Linux, one boot per module).

The checks themselves live in ``guest_xfrm.py`` and run inside the guest; each test here
reports one of them.  Under CI a missing UML fails these tests (``require``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.ikeshim.conftest import make_verdict, run_guest_checks

pytestmark = [pytest.mark.uml, pytest.mark.slow]


@pytest.fixture(scope="module")
def verdict() -> Any:
    return make_verdict(run_guest_checks("tests.ikeshim.guest_xfrm"))


def test_sa_encoding_round_trips_every_field_through_the_kernel(verdict: Any) -> None:
    assert verdict("check_sa_roundtrip_every_field")["sas"] == 24


def test_policy_encoding_round_trips_every_field(verdict: Any) -> None:
    assert verdict("check_policy_roundtrip_every_field")["policies"] == 2


def test_kernel_errors_are_typed(verdict: Any) -> None:
    verdict("check_typed_errors")


def test_update_sa_replaces_lifetimes(verdict: Any) -> None:
    verdict("check_update_sa")


def test_dump_of_2000_sas_spans_many_datagrams(verdict: Any) -> None:
    detail = verdict("check_dump_many_sas_multipart")
    assert detail["n"] == 2000 and detail["datagrams"] > 1
    assert detail["filtered"] == 1  # the kernel's address filter returns one of the 2000


def test_install_and_remove_leave_the_kernel_as_found(verdict: Any) -> None:
    assert verdict("check_install_and_remove")["policies"] == 6


def test_failure_at_every_step_rolls_back_everything(verdict: Any) -> None:
    assert verdict("check_rollback_at_every_step")["steps"] == 8


def test_kernel_conflict_rolls_back(verdict: Any) -> None:
    verdict("check_rollback_on_kernel_conflict")


def test_reinstall_of_the_same_pair_is_idempotent(verdict: Any) -> None:
    assert verdict("check_reinstall_is_idempotent")["sas"] == 2


def test_replace_is_make_before_break(verdict: Any) -> None:
    verdict("check_replace_make_before_break")


def test_ipv6_transport_with_mark_and_if_id(verdict: Any) -> None:
    verdict("check_ipv6_transport_install")


def test_natt_udp_encapsulation_ports_per_direction(verdict: Any) -> None:
    verdict("check_natt_encap_install")


def test_multicast_events_for_sa_policy_and_soft_hard_expiry(verdict: Any) -> None:
    verdict("check_events_sa_policy_expire")


def test_permission_error_names_cap_net_admin(verdict: Any) -> None:
    assert "CAP_NET_ADMIN" in verdict("check_permission_error_without_cap_net_admin")


def test_trio_socket_and_async_installer(verdict: Any) -> None:
    verdict("check_trio_async_socket")


def test_every_supported_suite_is_accepted_by_the_kernel(verdict: Any) -> None:
    assert len(verdict("check_suites_accepted_by_kernel")) == 12


def test_superseded_session_sas_are_removed(verdict: Any) -> None:
    assert verdict("check_superseded_sas_of_a_replaced_session_are_removed")["removed"] == 2


def test_service_entry_point(verdict: Any) -> None:
    verdict("check_service_entry_point_ikeshim_install")
