"""``ikeresume xfrm describe | ikeresume cache bootstrap`` on kernel SAs a daemon installed (UML).

The path for libreswan and every other daemon that keeps its CHILD_SAs in XFRM
(``specs/libreswan.md``); the checks run in ``guest_describe.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.ikeshim.conftest import make_verdict, run_guest_checks

pytestmark = [pytest.mark.uml, pytest.mark.slow]


@pytest.fixture(scope="module")
def verdict() -> Any:
    return make_verdict(run_guest_checks("tests.ikeshim.guest_describe", timeout=200))


@pytest.mark.parametrize(
    "check",
    ["check_transport_gcm", "check_tunnel_cbc_sha256_natt", "check_tunnel_chacha_two_selectors"],
)
def test_both_peers_bootstrap_the_credential_of_the_installed_sas(verdict: Any, check: str) -> None:
    assert len(verdict(check)["handle"]) == 32


def test_a_missing_sa_is_reported_and_nothing_printed(verdict: Any) -> None:
    assert "no ESP SA" in verdict("check_missing_sa_is_reported")


def test_a_reqid_with_two_sas_each_way_is_refused(verdict: Any) -> None:
    assert "rekey" in verdict("check_reqid_during_a_rekey_is_ambiguous")
