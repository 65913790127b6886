"""Row <-> object encoding: canonical SA-parameter text and the paper-mode key blob.

The wrapping AAD covers the stored parameter text byte for byte, so the text must be
canonical (sorted keys, no spaces): the same :class:`SAParams` always serializes the same
way, and a ratchet commit can check that a successor carries exactly the row's parameters
by comparing text.  Parsing and serializing are memoized (:mod:`resume.memo`) because both
sit on the per-resumption path and the set of distinct parameter sets is small.
"""

from __future__ import annotations

import json

from resume.credential import PaperKeys
from resume.memo import IdentityMemo, Memo
from resume.sa import DirectionKeys, SAParams

_TEXT_BY_OBJECT: IdentityMemo[SAParams, str] = IdentityMemo(4096)
_PARSED: Memo[str, SAParams] = Memo(4096)


def params_text(p: SAParams) -> str:
    hit = _TEXT_BY_OBJECT.get(p)
    if hit is not None:
        return hit
    return _TEXT_BY_OBJECT.put(p, json.dumps(p.to_json(), sort_keys=True, separators=(",", ":")))


def parse_params(text: str) -> SAParams:
    """Decode stored parameters; ValueError (only) for text that does not decode.

    The text comes from a database row, which the store must not trust to be well formed:
    whatever ``json`` or :meth:`SAParams.from_json` raise on it (a missing key, a wrong
    type, nesting deep enough to exhaust the recursion limit) becomes the one ValueError.
    """
    p = _PARSED.get(text)
    if p is None:
        try:
            p = SAParams.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError,
                OverflowError) as e:  # fmt: skip
            raise ValueError(f"undecodable SA parameters: {type(e).__name__}: {e}") from None
        p = _PARSED.put(text, p)
        _TEXT_BY_OBJECT.put(p, text)
    return p


def paper_keys_bytes(pk: PaperKeys) -> bytes:
    def d(k: DirectionKeys) -> dict[str, object]:
        return {"spi": k.spi, "encr_key": k.encr_key.hex(), "integ_key": k.integ_key.hex()}

    return json.dumps({"i_to_r": d(pk.i_to_r), "r_to_i": d(pk.r_to_i)}).encode()


def paper_keys_from_bytes(b: bytes) -> PaperKeys:
    obj = json.loads(b)

    def k(d: dict[str, object]) -> DirectionKeys:
        spi, ek, ik = int(str(d["spi"])), str(d["encr_key"]), str(d["integ_key"])
        return DirectionKeys(spi, bytes.fromhex(ek), bytes.fromhex(ik))

    return PaperKeys(k(obj["i_to_r"]), k(obj["r_to_i"]))
