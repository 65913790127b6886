"""Generate the JSON test vectors in specs/vectors/ (``python specs/make_vectors.py``).

Each vector is one complete run between ``resume.initiator.Initiator`` and
``resume.responder.Responder`` with injected randomness: every random draw is listed (in
draw order) so an independent implementation can replay it, and every intermediate value of
the key schedule is recorded next to every message's bytes.  ``tests/resume/test_vectors.py``
checks the files against the implementation and regenerates them to prove they are current.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from resume import keyschedule as ks
from resume.credential import Credential, ProtocolMode
from resume.events import CommitNeeded, CredentialNeeded, ResumptionComplete, SaveSuccessor
from resume.initiator import Initiator, InitiatorConfig
from resume.kem_testing import deterministic_encapsulation
from resume.responder import Responder, ResponderConfig
from resume.sa import DirectionKeys, Encr, Integ, Lifetimes, Mode, SAParams, TrafficSelector
from resume.wire import (
    MAC_LEN,
    HardenedInit,
    HardenedResp,
    compact_message,
    parse_request_untrusted,
    parse_response_untrusted,
)

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"
CLIENT = ("198.51.100.7", 4500)
SERVER = ("192.0.2.1", 4500)
NOW = 1_750_000_003.5
TICK_SECONDS = 10.0


class ListRng:
    """Deterministic rng for vectors: bytes from SHA-256(label | counter), recorded in order."""

    def __init__(self, label: str) -> None:
        self.label = label.encode()
        self.counter = 0
        self.draws: list[str] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.label + self.counter.to_bytes(4, "big")).digest()
            self.counter += 1
        out = out[:n]
        self.draws.append(out.hex())
        return out


class ReplayRng:
    """Replays a vector's recorded draws (used by the tests)."""

    def __init__(self, draws: list[str]) -> None:
        self.draws = [bytes.fromhex(d) for d in draws]

    def __call__(self, n: int) -> bytes:
        if not self.draws or len(self.draws[0]) != n:
            raise AssertionError(f"unexpected draw of {n} bytes")
        return self.draws.pop(0)


def vector_params(cbc: bool) -> SAParams:
    return SAParams(
        mode=Mode.TUNNEL,
        encr=Encr.AES_CBC if cbc else Encr.AES_GCM_16,
        encr_key_bits=256 if not cbc else 128,
        integ=Integ.HMAC_SHA2_256_128 if cbc else Integ.NONE,
        initiator_addr=CLIENT[0],
        responder_addr=SERVER[0],
        tsi=(TrafficSelector.host("10.8.0.7"),),
        tsr=(
            TrafficSelector.from_network("10.0.0.0/16"),
            TrafficSelector.from_network("2001:db8::/48"),
        ),
        natt_initiator_port=CLIENT[1],
        natt_responder_port=SERVER[1],
    )


def _dk(d: DirectionKeys) -> dict[str, Any]:
    return {"spi": d.spi, "encr_key": d.encr_key.hex(), "integ_key": d.integ_key.hex()}


def _bootstrap_inputs(mode: ProtocolMode, cbc: bool) -> tuple[Credential, dict[str, Any]]:
    rng = ListRng(f"ikeresume vectors bootstrap {mode.value} {cbc}")
    p = vector_params(cbc)
    i2r = DirectionKeys(ks.esp_spi_from(rng(4)), rng(p.encr_key_len), rng(p.integ.key_len))
    r2i = DirectionKeys(ks.esp_spi_from(rng(4)), rng(p.encr_key_len), rng(p.integ.key_len))
    id_i = b"\x03alice@example.org"  # ID_RFC822_ADDR
    id_r = b"\x02vpn.example.org"  # ID_FQDN
    if mode is ProtocolMode.PAPER:
        cred = ks.bootstrap_paper_credential(p, i2r, r2i, id_i, id_r)
    else:
        cred = ks.bootstrap_credential(p, i2r, r2i, id_i, id_r)
    info = {
        "params": p.to_json(),
        "params_bytes": ks.params_bytes(p).hex(),
        "params_digest": ks.params_digest(p).hex(),
        "i_to_r": _dk(i2r),
        "r_to_i": _dk(r2i),
        "id_i": id_i.hex(),
        "id_r": id_r.hex(),
        "secret": cred.secret.hex(),
        "handle": cred.handle.hex(),
    }
    return cred, info


def _run(
    cred: Credential, x25519: bool, paper: bool, mlkem: bool = False
) -> tuple[dict[str, Any], list[bytes], ResumptionComplete, ResumptionComplete]:
    # the labels of the modes that existed before ML-KEM are unchanged (their draws too)
    tag = f"{cred.mode.value} {x25519}" + (" mlkem768" if mlkem else "")
    irng = ListRng(f"ikeresume vectors initiator {tag}")
    rrng = ListRng(f"ikeresume vectors responder {tag}")
    krng = ListRng(f"ikeresume vectors responder kem {tag}")
    server_secret = hashlib.sha256(b"ikeresume vectors server secret").digest()
    lifetimes = Lifetimes(soft_seconds=3240, hard_seconds=3600)
    resp = Responder(
        ResponderConfig(allow_paper_mode=paper, cookie_tick_seconds=TICK_SECONDS),
        server_secret,
        rng=rrng,
        encapsulate=deterministic_encapsulation(krng),
    )
    init = Initiator(
        cred,
        InitiatorConfig(
            allow_paper_mode=paper, use_x25519=x25519, mlkem="require" if mlkem else "off"
        ),
        irng,
        peer=SERVER,
        lifetimes=lifetimes,
    )
    init.initiate(NOW)
    messages: list[bytes] = []
    r_done: list[ResumptionComplete] = []
    i_done: list[ResumptionComplete] = []
    for _ in range(4):
        for data, _a in init.datagrams_to_send(NOW):
            messages.append(data)
            resp.receive_datagram(data, CLIENT, NOW)
        while (ev := resp.next_event()) is not None:
            if isinstance(ev, CredentialNeeded):
                resp.provide_credential(ev.token, cred, lifetimes, NOW)
            elif isinstance(ev, CommitNeeded):
                resp.commit_result(ev.token, True, NOW)
            elif isinstance(ev, ResumptionComplete):
                r_done.append(ev)
        for data, _a in resp.datagrams_to_send(NOW):
            messages.append(data)
            init.receive_datagram(data, SERVER, NOW)
        while (ev := init.next_event()) is not None:
            if isinstance(ev, SaveSuccessor):
                init.successor_saved(NOW)  # write-ahead: message 3 leaves after the save
            elif isinstance(ev, ResumptionComplete):
                i_done.append(ev)
    if len(messages) != 3 or len(i_done) != 1 or len(r_done) != 1:
        raise RuntimeError("vector run did not complete")
    run = {
        "server_secret": server_secret.hex(),
        "tick_seconds": TICK_SECONDS,
        "now": NOW,
        "tick": int(NOW // TICK_SECONDS),
        "initiator_addr": list(CLIENT),
        "responder_addr": list(SERVER),
        "initiator_random": irng.draws,
        "responder_random": rrng.draws,
        "lifetimes": lifetimes.to_json(),
    }
    if mlkem:  # the 32-byte m of each FIPS 203 Encaps_internal, in order
        run["responder_kem_random"] = krng.draws
    return run, messages, i_done[0], r_done[0]


def hardened_vector(x25519: bool, cbc: bool, mlkem: bool = False) -> dict[str, Any]:
    cred, boot = _bootstrap_inputs(ProtocolMode.HARDENED, cbc)
    run, (m1, m2, m3), ev_i, ev_r = _run(cred, x25519, paper=False, mlkem=mlkem)
    r1 = parse_request_untrusted(m1)
    r2 = parse_response_untrusted(m2)
    c1, c2 = compact_message(m1), compact_message(m2)
    values = ks.responder_values(bytes.fromhex(run["server_secret"]), run["tick"], CLIENT, c1)
    dh = ss = b""
    inter: dict[str, Any] = {}
    if x25519:
        i_priv = bytes.fromhex(run["initiator_random"][3])
        r_priv = bytes.fromhex(run["responder_random"][0])
        priv, pub_i = ks.x25519_keypair(i_priv)
        _p, pub_r = ks.x25519_keypair(r_priv)
        dh = ks.x25519_shared_untrusted(priv, pub_r)
        inter.update(
            {"x25519_public_i": pub_i.hex(), "x25519_public_r": pub_r.hex(), "dh": dh.hex()}
        )
    if not isinstance(r1, HardenedInit) or not isinstance(r2, HardenedResp):
        raise RuntimeError("unexpected message kinds")
    if mlkem:
        seed = bytes.fromhex(run["initiator_random"][4 if x25519 else 3])
        key, ek = ks.mlkem_keypair(seed)
        if r1.mlkem != ek or r2.mlkem is None:
            raise RuntimeError("ML-KEM payloads missing")
        ct = r2.mlkem
        ss = ks.mlkem_decapsulate(key, ct)  # the check: decapsulation gives the recorded SS
        inter.update(
            {
                "mlkem_ek": ek.hex(),
                "mlkem_ek_digest": ks.ke_digest(ek).hex(),
                "mlkem_ct": ct.hex(),
                "mlkem_ct_digest": ks.ke_digest(ct).hex(),
                "mlkem_shared_secret": ss.hex(),
                "msg1_compact": c1.hex(),
                "msg2_compact": c2.hex(),
            }
        )
    n_i, n_r, spi_r2i = r1.nonce, r2.nonce, r1.sa.spi
    keys = ks.derive_run(cred, n_i, n_r, dh, values.esp_spi, spi_r2i, ss)
    inter.update(
        {
            "responder_prf": ks.responder_prf(
                bytes.fromhex(run["server_secret"]), run["tick"], CLIENT, c1
            ).hex(),
            "nonce_r": values.nonce_r.hex(),
            "spi_r": values.spi_r.hex(),
            "esp_spi_i2r": values.esp_spi,
            "esp_spi_r2i": spi_r2i,
            "context": ks.context(cred).hex(),
            "prk": keys.prk.hex(),
            "mac_key_i": keys.mac_i.hex(),
            "mac_key_r": keys.mac_r.hex(),
            "keymat": keys.keymat.hex(),
            "mac_msg2": m2[-MAC_LEN:].hex(),
            "mac_msg3": m3[-MAC_LEN:].hex(),
            "successor_secret": keys.successor_secret.hex(),
            "successor_handle": keys.successor_handle.hex(),
        }
    )
    if ev_i.sa.i_to_r != ev_r.sa.i_to_r or ev_i.sa.r_to_i != ev_r.sa.r_to_i:
        raise RuntimeError("sides disagree")
    # the NACK a refusal of message 1 produces (the same for every reason)
    nack = Responder(ResponderConfig(), bytes(32))
    nack.receive_datagram(m1, CLIENT, NOW)
    tok = nack.next_event()
    if not isinstance(tok, CredentialNeeded):
        raise RuntimeError("no credential request")
    nack.provide_credential(tok.token, None, None, NOW)
    nack_bytes = nack.datagrams_to_send(NOW)[0][0]
    return {
        "description": "hardened mode"
        + (" with X25519" if x25519 else " without X25519")
        + (" and ML-KEM-768" if mlkem else "")
        + (", AES-CBC + HMAC-SHA2-256-128" if cbc else ", AES-GCM-16 256"),
        "mode": "hardened",
        "credential": boot | {"generation": cred.generation},
        "run": run,
        "intermediate": inter,
        "messages": {
            "msg1": m1.hex(),
            "msg2": m2.hex(),
            "msg3": m3.hex(),
            "nack1": nack_bytes.hex(),
        },
        "result": {
            "i_to_r": _dk(ev_i.sa.i_to_r),
            "r_to_i": _dk(ev_i.sa.r_to_i),
            "successor_generation": ev_i.successor.generation,
        }
        | ({"successor_lineage": ev_i.successor.lineage.value} if mlkem else {}),
    }


def paper_vector() -> dict[str, Any]:
    cred, boot = _bootstrap_inputs(ProtocolMode.PAPER, cbc=True)
    run, (m1, m2, m3), ev_i, _ev_r = _run(cred, x25519=False, paper=True)
    values = ks.responder_values(bytes.fromhex(run["server_secret"]), run["tick"], CLIENT, m1)
    pk = cred.paper_keys
    if pk is None:
        raise RuntimeError("paper credential without keys")
    n_i = bytes.fromhex(run["initiator_random"][1])
    return {
        "description": "paper mode (2007 proposal; INSECURE: reuses the cached ESP keys)",
        "mode": "paper",
        "credential": boot | {"generation": cred.generation},
        "run": run,
        "intermediate": {
            "nonce_r": values.nonce_r.hex(),
            "spi_r": values.spi_r.hex(),
            "sk_i": ks.paper_auth_key(pk.i_to_r).hex(),
            "sk_r": ks.paper_auth_key(pk.r_to_i).hex(),
            "mac_msg2": ks.paper_mac(
                ks.paper_auth_key(pk.r_to_i), cred.id_r, n_i, values.nonce_r
            ).hex(),
            "mac_msg3": ks.paper_mac(
                ks.paper_auth_key(pk.i_to_r), cred.id_i, n_i, values.nonce_r
            ).hex(),
        },
        "messages": {"msg1": m1.hex(), "msg2": m2.hex(), "msg3": m3.hex()},
        "result": {"i_to_r": _dk(ev_i.sa.i_to_r), "r_to_i": _dk(ev_i.sa.r_to_i)},
    }


def all_vectors() -> dict[str, list[dict[str, Any]]]:
    return {
        "hardened.json": [hardened_vector(False, False), hardened_vector(False, True)],
        "hardened-x25519.json": [hardened_vector(True, False), hardened_vector(True, True)],
        "hardened-mlkem768.json": [
            hardened_vector(False, False, mlkem=True),
            hardened_vector(False, True, mlkem=True),
        ],
        "hardened-x25519-mlkem768.json": [
            hardened_vector(True, False, mlkem=True),
            hardened_vector(True, True, mlkem=True),
        ],
        "paper.json": [paper_vector()],
    }


def render(vectors: list[dict[str, Any]]) -> str:
    return json.dumps(vectors, indent=2, sort_keys=True) + "\n"


def main() -> int:
    VECTOR_DIR.mkdir(exist_ok=True)
    for name, vecs in all_vectors().items():
        (VECTOR_DIR / name).write_text(render(vecs))
        print(f"wrote {VECTOR_DIR / name} ({len(vecs)} vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
