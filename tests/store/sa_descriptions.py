"""SA descriptions written as ``specs/sa-description.md`` says, for the bootstrap tests.

Built by hand from an :class:`SAPair` (not through the library's reader or any writer of
ours), so the tests compare the reader against the spec's field list.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from resume.sa import DirectionKeys, SAPair, TrafficSelector

#: The identities the harvest tests' VICI messages carry (tests/ikeshim/test_harvest_logic.py)
ID_I = "email:carol@example.org"
ID_R = "fqdn:moon.example"


def _ts(t: TrafficSelector) -> dict[str, Any]:
    return {
        "start_addr": t.start_addr,
        "end_addr": t.end_addr,
        "protocol": t.protocol,
        "start_port": t.start_port,
        "end_port": t.end_port,
    }


def _direction(k: DirectionKeys) -> dict[str, Any]:
    out: dict[str, Any] = {"spi": f"0x{k.spi:08x}", "encr_key": k.encr_key.hex()}
    if k.integ_key:
        out["integ_key"] = k.integ_key.hex()
    return out


def description_of(pair: SAPair, *, id_i: str = ID_I, id_r: str = ID_R) -> dict[str, Any]:
    """The JSON SA description of ``pair``'s CHILD_SA (the same for both peers)."""
    p = pair.params
    return {
        "format": "ikeresume-sa-description/1",
        "id_i": id_i,
        "id_r": id_r,
        "params": {
            "mode": p.mode.value,
            "encr": int(p.encr),
            "encr_key_bits": p.encr_key_bits,
            "integ": int(p.integ),
            "initiator_addr": p.initiator_addr,
            "responder_addr": p.responder_addr,
            "tsi": [_ts(t) for t in p.tsi],
            "tsr": [_ts(t) for t in p.tsr],
            "natt_initiator_port": p.natt_initiator_port,
            "natt_responder_port": p.natt_responder_port,
            "replay_window": p.replay_window,
        },
        "i_to_r": _direction(pair.i_to_r),
        "r_to_i": _direction(pair.r_to_i),
    }


def example_description() -> dict[str, Any]:
    """A road-warrior tunnel with AES-GCM-16-256, fresh random keys, names for algorithms."""
    return {
        "id_i": "fqdn:road.example.org",
        "id_r": "fqdn:vpn.example.org",
        "params": {
            "mode": "tunnel",
            "encr": "aes-gcm-16",
            "encr_key_bits": 256,
            "integ": "none",
            "initiator_addr": "127.0.0.1",
            "responder_addr": "127.0.0.1",
            "tsi": ["10.8.0.7"],
            "tsr": ["10.0.0.0/16"],
        },
        "i_to_r": {"spi": "0xc1000001", "encr_key": os.urandom(36).hex()},
        "r_to_i": {"spi": 3238002690, "encr_key": "0x" + os.urandom(36).hex()},
        "lineage": "classical",
    }


def dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


#: ``with_field(d, path, DELETE)`` removes the field
DELETE = object()


def with_field(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of description ``d`` with the field at dotted ``path`` set to ``value``."""
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return d
