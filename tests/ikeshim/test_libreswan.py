"""libreswan (pluto 4.10) + the recipe of ``specs/libreswan.md``, in UML (``guest_libreswan.py``).

libreswan is unpacked privately by ``python -m tests.testbed.setup_libreswan`` (it conflicts
with strongSwan as a Debian package, so it is never installed); ``.ci/run`` does that.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import require
from tests.ikeshim.conftest import make_verdict, run_guest_checks
from tests.testbed.setup_libreswan import available

pytestmark = [pytest.mark.uml, pytest.mark.slow]


@pytest.fixture(scope="module")
def verdict() -> Any:
    ok, why = available()
    require(ok, why)
    return make_verdict(run_guest_checks("tests.ikeshim.guest_libreswan", timeout=240))


def test_the_updown_hook_gives_both_peers_the_same_credential(verdict: Any) -> None:
    detail = verdict("check_1_updown_hook_provisions_both_peers")
    assert len(detail["handle"]) == 32 and "type=ESP" in detail["trafficstatus"]


def test_the_manual_recipe_from_ip_xfrm_state_agrees(verdict: Any) -> None:
    assert verdict("check_2_the_manual_recipe_gives_the_same_credential")["spi_i2r"]


def test_the_credential_carries_the_connections_parameters(verdict: Any) -> None:
    assert verdict("check_3_parameters_are_the_connections")["mode"] == "tunnel"


def test_plutos_stop(verdict: Any) -> None:
    verdict("check_4_plutos_stop")
