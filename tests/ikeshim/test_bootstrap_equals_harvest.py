"""A bootstrapped record equals the harvested one for the same SA, row for row.

The harvest side is the harvester core fed the VICI message and kernel SAs of the harvest
tests (``test_harvest_logic``); the bootstrap side is ``ikeresume cache bootstrap`` fed the
JSON SA description of the same SA, written as the spec lists its fields.  Both run for
both roles; the stored rows must agree on everything the protocol uses (handle, generation,
secret, identities, the parameters' text) and on the lineage (hybrid: VICI's key exchange
methods, the description's ``lineage``) for every suite and mode the harvest tests cover.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ikeshim.harvest import Harvester
from resume.cli import EXIT_OK, main
from resume.sa import Mode, TrafficSelector
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.ikeshim.pairs import make_pair, make_params
from tests.ikeshim.test_harvest_logic import _kernel, _reader, _vici
from tests.store.sa_descriptions import description_of

NOW = 1_700_000_000.0
_ROW = "SELECT role, mode, handle, generation, id_i, id_r, params, lineage FROM credentials"
#: what strongSwan reports for a hybrid IKE_SA, and the description's word for it
HYBRID = {"dh-group": b"CURVE_25519", "ake1": b"ML_KEM_768"}


def _row(db: Path) -> tuple[Any, ...]:
    con = sqlite3.connect(db)
    try:
        (row,) = con.execute(_ROW).fetchall()
    finally:
        con.close()
    return tuple(row)


@pytest.mark.parametrize(
    ("suite", "mode", "natt"),
    [
        ("gcm128", Mode.TRANSPORT, None),
        ("cbc-sha384", Mode.TUNNEL, None),
        ("chacha", Mode.TUNNEL, (4500, 4500)),
        ("cbc-sha512", Mode.TRANSPORT, (4500, 4501)),
    ],
)
def test_bootstrap_equals_harvest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite: str, mode: Mode, natt: Any
) -> None:
    tunnel = mode is Mode.TUNNEL
    params = make_params(
        suite,
        mode=mode,
        tsi=(TrafficSelector.from_network("10.1.0.0/24"),) if tunnel else None,
        tsr=(TrafficSelector("10.2.0.0", "10.2.0.9"),) if tunnel else None,
        natt=natt,
    )
    pair = make_pair(params)
    kernel = _kernel(pair)  # with NAT-T, its SAs carry the encapsulation ports
    key = MasterKey.generate()
    kf = tmp_path / "master.key"
    kf.write_text(key.to_line() + "\n")
    monkeypatch.setenv("IKERESUME_MASTER_KEY_FILE", str(kf))
    kr = Keyring([key])
    sa_file = tmp_path / "sa.json"
    sa_file.write_text(json.dumps({**description_of(pair), "lineage": "hybrid-pq"}))
    for role in ("initiator", "responder"):
        harvested = tmp_path / f"harvest-{role}.db"
        with Store.open(str(harvested), kr) as s:
            msg = _vici(pair, role, ike=HYBRID)
            (o,) = Harvester(s, _reader(kernel)).on_event("child-updown", msg, NOW)
            assert o.kind == "harvested", o
        booted = tmp_path / f"bootstrap-{role}.db"
        args = ["cache", "bootstrap", "--role", role, str(sa_file), "--db", str(booted)]
        assert main([*args, "--now", str(NOW)]) == EXIT_OK
        assert _row(booted) == _row(harvested)
        handle = _row(booted)[2]
        creds = []
        for db in (harvested, booted):
            with Store.open(str(db), kr) as s:
                got = s.lookup(handle, NOW + 1, role=role)  # type: ignore[arg-type]
                assert got is not None and got.credential is not None
                creds.append(got.credential)
        assert creds[0] == creds[1]  # secret, handle, identities, parameters, lineage
        assert creds[0].lineage.value == "hybrid-pq"
        assert creds[0].params == params
