"""Fuzz target: the JSON SA description reader of ``ikeresume cache bootstrap``.

The input is a whole description file.  ``parse_sa_description`` must end in a validated
description or in ``SADescriptionError`` (naming a field or the document); an accepted
description must derive generation 0 (``store.bootstrap.credential_from``, spec 3.1)
without error, with keys of exactly the lengths its parameters need.
Seeds: descriptions of every suite and mode, with names and with numbers, and the bad
inputs the bootstrap tests name (missing field, wrong key length, unknown algorithm, SPI
below 256).
"""

from __future__ import annotations

import json
from typing import Any

from store.bootstrap import credential_from
from store.errors import SADescriptionError
from store.sa_description import parse_sa_description


def one_input(data: bytes) -> None:
    try:
        desc = parse_sa_description(data, source="fuzz")
    except SADescriptionError as e:
        assert str(e).startswith("fuzz")
        return
    p = desc.params
    for k in (desc.i_to_r, desc.r_to_i):
        assert len(k.encr_key) == p.encr_key_len and len(k.integ_key) == p.integ.key_len
        assert 256 <= k.spi < 2**32
    c = credential_from(desc)
    assert c.generation == 0 and len(c.secret) == 32 and len(c.handle) == 16


def seeds() -> dict[str, bytes]:
    from resume.sa import Mode, TrafficSelector
    from tests.ikeshim.pairs import SUITES, make_pair, make_params
    from tests.store.sa_descriptions import (
        DELETE,
        description_of,
        example_description,
        with_field,
    )

    out: dict[str, bytes] = {}
    for suite in SUITES:
        tunnel = suite.startswith("cbc")
        params = make_params(
            suite, mode=Mode.TUNNEL if tunnel else Mode.TRANSPORT,
            tsi=(TrafficSelector("10.1.0.0", "10.1.0.255", 6, 80, 443),) if tunnel else None,
            natt=(4500, 4500) if tunnel else None,
        )  # fmt: skip
        d = description_of(make_pair(params))
        out[f"{suite}"] = json.dumps(d, indent=1).encode()
    ex = example_description()
    out["names-and-prefixes"] = json.dumps(ex).encode()

    def bad(path: str, value: Any) -> bytes:
        return json.dumps(with_field(ex, path, DELETE if value is None else value)).encode()

    out["bad-missing-encr-key"] = bad("i_to_r.encr_key", None)
    out["bad-key-length"] = bad("i_to_r.encr_key", "00" * 32)
    out["bad-unknown-algorithm"] = bad("params.encr", "aes-ccm-16")
    out["bad-spi-255"] = bad("r_to_i.spi", 255)
    out["bad-spi-2p32"] = bad("r_to_i.spi", "0x100000000")
    out["bad-identity"] = bad("id_i", "hex:0")
    out["bad-lineage"] = bad("lineage", "quantum")
    out["not-utf8"] = b"\xe7"
    out["deep-nesting"] = b"[" * 100_000
    out["infinity-spi"] = bad("r_to_i.spi", 0).replace(b'"spi": 0', b'"spi": Infinity')
    return out
