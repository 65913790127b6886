"""One unusable SA never stops the harvester (issue 21): it is reported, counted, skipped.

The inputs are the issue's: a traffic selector ``0[\\x00]``, a protocol or port written with a
non-ASCII digit, a host that is not an IP address, SPIs of 2^32 and more; plus a VICI stream
the ``vici`` package cannot parse.  The core (``Harvester``) must report each as one skipped
SA and still harvest the good SA next to it; the loop (``run_harvest``, over a Unix socket
that speaks VICI) must report them and keep following events.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ikeshim.errors import HarvestError, XfrmError
from ikeshim.harvest import Harvester, HarvestReport, run_harvest
from ikeshim.vici_map import parse_ts, read_ike_sas
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.conftest import require
from tests.ikeshim.fake_charon import FakeCharon
from tests.ikeshim.pairs import make_pair, make_params
from tests.ikeshim.test_harvest_logic import _kernel, _reader, _vici

HANG = 60.0  # bounds a hang only


def _child(msg: dict[str, Any]) -> dict[str, Any]:
    (child,) = msg["conn"]["child-sas"].values()
    return child  # type: ignore[no-any-return]


def _variant(msg: dict[str, Any], where: str, field: str, value: Any, uid: int) -> dict[str, Any]:
    m = copy.deepcopy(msg)
    target = m["conn"] if where == "ike" else _child(m)
    target[field] = value
    _child(m)["uniqueid"] = str(uid).encode()
    return m


BAD = [
    ("child", "local-ts", [b"0[\x00]"]),
    ("child", "local-ts", ["10.1.0.0/24[²]".encode()]),
    ("child", "remote-ts", ["10.2.0.0/24[tcp/8²]".encode()]),
    ("child", "remote-ts", [b"10.2.0.0/24[tcp/99999]"]),
    ("child", "spi-in", b"100000000"),
    ("child", "spi-out", b"ffffffffff"),
    ("child", "spi-in", "c000000\u0661".encode()),  # ARABIC-INDIC DIGIT ONE
    ("child", "reqid", "\u0667".encode()),  # ARABIC-INDIC DIGIT SEVEN
    ("child", "bytes-in", b"99999999999999999999"),
    ("ike", "local-host", b"moon.example"),
    ("ike", "remote-host", b"%any"),
    ("ike", "local-port", b"70000"),
    ("ike", "local-id", b"@" + b"x" * 70_000),
]


@pytest.mark.parametrize(
    ("where", "field", "value"), BAD, ids=[f"{b[1]}={b[2]!r}"[:50] for b in BAD]
)
def test_one_bad_sa_is_skipped_and_the_good_one_harvested(
    tmp_path: Path, where: str, field: str, value: Any
) -> None:
    pair = make_pair(make_params())
    good = _vici(pair, "initiator")
    bad = _variant(good, where, field, value, 8)
    with Store.open(str(tmp_path / "c.db"), Keyring([MasterKey.generate()])) as s:
        h = Harvester(s, _reader(_kernel(pair)))
        (o,) = h.on_event("child-updown", bad, 1.0)
        assert o.kind == "skipped" and field in o.detail, o
        (o2,) = h.on_event("child-updown", good, 2.0)
        assert o2.kind == "harvested", o2
        assert h.stats == {"skipped": 1, "harvested": 1}
        # both in one message: the IKE_SA's good child is still harvested
        both = copy.deepcopy(good)
        if where == "child":
            both["conn"]["child-sas"]["bad"] = _child(bad)
            both["conn"]["child-sas"]["net-7"]["uniqueid"] = b"9"  # a new CHILD_SA
            kinds = sorted(r.kind for r in h.on_event("child-updown", both, 3.0))
            assert kinds == ["harvested", "skipped"]


def test_traffic_selector_inputs_raise_only_harvest_error() -> None:
    for text in ("0[\x00]", "10.1.0.0/24[²]", "10.1.0.0/24[tcp/²]", "10.1.0.0/24[tcp/1-²]",
                 "1.2.3.4[\x00/80]", "::1[" + "a" * 10_000 + "]", "[]", "10.0.0.1..x"):  # fmt: skip
        with pytest.raises(HarvestError):
            parse_ts(text)


def test_read_ike_sas_separates_the_sas_that_do_not_parse() -> None:
    pair = make_pair(make_params())
    msg = _vici(pair, "responder")
    msg["other"] = copy.deepcopy(msg["conn"])
    msg["other"]["remote-host"] = b"not-an-ip"
    ikes, bad = read_ike_sas(msg)
    assert [i.name for i in ikes] == ["conn"]
    assert [(b.ike, b.child) for b in bad] == [("other", "")]


def _sink(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "h.db"), Keyring([MasterKey.generate()]))


def test_run_harvest_keeps_following_events(tmp_path: Path) -> None:
    """Bad SAs, then a stream the vici package cannot parse (the loop reconnects), then more
    events: every one is reported in order and the loop is still running at the end."""
    require(os.geteuid() == 0, "root (XFRM netlink socket)")
    pair = make_pair(make_params())
    good = _vici(pair, "initiator")
    first = [
        ("child-updown", _variant(good, "child", "spi-in", b"100000000", 11)),
        ("child-updown", _variant(good, "ike", "local-host", b"moon.example", 12)),
        ("child-updown", b"\x01\x04conn\x03\x02up"),  # a section cut short
    ]
    second = [
        ("child-updown", _variant(good, "child", "local-ts", [b"0[\x00]"], 13)),
        ("child-updown", _variant(good, "child", "reqid", b"2", 14)),  # fine, not in the kernel
    ]
    charon = FakeCharon(tmp_path / "charon.vici", [first, second])
    reports: list[HarvestReport] = []
    done = threading.Event()

    def seen(r: HarvestReport) -> None:
        reports.append(r)
        if "not in XFRM" in r.detail:
            done.set()

    deadline = time.monotonic() + HANG
    store = _sink(tmp_path)
    try:
        try:
            run_harvest(
                charon.uri, store, on_outcome=seen,
                stop=lambda: done.is_set() or time.monotonic() > deadline,
                reconnect_delay=0.05, poll=0.05,
            )  # fmt: skip
        except XfrmError as e:  # no XFRM netlink here at all
            require(False, f"an XFRM netlink socket ({e})")
    finally:
        store.close()
        charon.close()
    assert done.is_set(), reports
    kinds = [(r.kind, r.detail) for r in reports]
    skipped = [d for k, d in kinds if k == "skipped"]
    assert "spi-in" in skipped[0] and "local-host" in skipped[1] and "local-ts" in skipped[2]
    assert "not in XFRM" in skipped[3]
    assert any(k == "error" and "retrying" in d for k, d in kinds)  # the garbled stream
    assert [k for k, _ in kinds].count("ready") == 2  # and it came back
    assert charon.listeners == 2
