"""``ikeresume demo --in-process``: many resumptions, in-process initiators, one responder.

Why in-process: it shows the whole protocol (stateless responder, transcript MACs, fresh
ESP keys, ratchet, lost-message-3 recovery, NACK fallback) on any machine in a few seconds,
with no socket, database or root.  It prints key *fingerprints* only, never keys.

Each client starts from a simulated full IKE, then resumes once per round; the clock is
simulated (one minute per round).  A fraction of messages 3 is dropped on purpose: the
responder then never commits, and the client's next attempt is NACKed and retried with the
previous generation, which the client keeps for exactly that case.
"""

from __future__ import annotations

import collections
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from resume import keyschedule as ks
from resume.credential import Credential, ProtocolMode
from resume.errors import DecodeError
from resume.events import FallbackToFullIKE, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.kem_testing import deterministic_encapsulation
from resume.responder import Responder, ResponderConfig
from resume.testing import ConnectionPair, LossFilter, MemoryTable, simulated_full_ike
from resume.wire import message_sizes, peek_header_untrusted

START = 1_700_000_000.0


@dataclass
class _Client:
    name: str
    current: Credential
    previous: Credential | None = None


_OUTCOMES = (
    "resumed_both_sides",
    "message3_lost",
    "retried_previous_generation",
    "fallback_nack",
    "fallback_timeout",
    "key_mismatch",
)


@dataclass
class _Tally:
    """What the attempts add up to: outcome counts, per-attempt CPU, keys, sample rows."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_OUTCOMES, 0))
    r_us: list[float] = field(default_factory=list)
    i_us: list[float] = field(default_factory=list)
    esp_keys: set[bytes] = field(default_factory=set)
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: the clients' chains' lineages at the end (all begin ``unknown``: simulated full IKEs)
    lineages: dict[str, int] = field(default_factory=dict)

    def resumed(self, ev: ResumptionComplete, r_done: list[ResumptionComplete]) -> str:
        """Count a resumption the initiator completed; its outcome's words."""
        sa = ev.sa
        if r_done:
            same = (r_done[0].sa.i_to_r, r_done[0].sa.r_to_i) == (sa.i_to_r, sa.r_to_i)
            self.outcomes["resumed_both_sides" if same else "key_mismatch"] += 1
            outcome = "resumed" if same else "KEY MISMATCH"
        else:
            self.outcomes["message3_lost"] += 1
            outcome = "msg3 lost"
        self.esp_keys.update((sa.i_to_r.encr_key, sa.r_to_i.encr_key))
        return outcome

    def sample(self, c: _Client, rnd_no: int, ev: ResumptionComplete, outcome: str) -> None:
        sa = ev.sa
        self.samples.append(
            {
                "client": c.name,
                "round": rnd_no,
                "generation": ev.generation,
                "outcome": outcome,
                "handle_fp": ks.fingerprint(ev.handle),
                "spi_i2r": f"{sa.i_to_r.spi:08x}",
                "key_i2r_fp": ks.fingerprint(sa.i_to_r.encr_key),
                "spi_r2i": f"{sa.r_to_i.spi:08x}",
                "key_r2i_fp": ks.fingerprint(sa.r_to_i.encr_key),
                "next_handle_fp": ks.fingerprint(ev.successor.handle),
            }
        )


def _is_message3(data: bytes) -> bool:
    try:
        return peek_header_untrusted(data).message_id == 1
    except DecodeError:
        return False


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def paper_comparison(rounds: int, rng: Callable[[int], bytes]) -> dict[str, Any]:
    """The 2007 proposal (paper mode, enabled here on purpose) for contrast: every
    resumption installs the very same ESP keys and SPIs."""
    pair = ConnectionPair.create(ResponderConfig(allow_paper_mode=True), server_secret=rng(32))
    cred = simulated_full_ike(rng, mode=ProtocolMode.PAPER)
    pair.table.add(cred)
    keys: list[str] = []
    done = 0
    for r in range(rounds):
        init = Initiator(cred, InitiatorConfig(allow_paper_mode=True), rng)
        i_events, r_events, _ = pair.run(init, START + 60.0 * r)
        ends = [e for e in i_events + r_events if isinstance(e, ResumptionComplete)]
        if len(ends) == 2:
            done += 1
            keys.append(ks.fingerprint(ends[0].sa.i_to_r.encr_key))
            cred = ends[0].successor
    return {"resumptions": done, "distinct_esp_keys": len(set(keys)), "key_fp": sorted(set(keys))}


def _attempt(
    pair: ConnectionPair,
    c: _Client,
    icfg: InitiatorConfig,
    rng: Callable[[int], bytes],
    now: float,
    keep: LossFilter,
    tally: _Tally,
    rnd_no: int,
) -> None:
    """One client's attempt in one round, counted in ``tally``; the client's credentials
    move on (ratchet, or a fresh full IKE after a fallback)."""
    init = Initiator(c.current, icfg, rng, previous=c.previous)
    r0, i0 = pair.responder_seconds, pair.initiator_seconds
    i_events, r_events, _ = pair.run(init, now, keep)
    tally.r_us.append((pair.responder_seconds - r0) * 1e6)
    tally.i_us.append((pair.initiator_seconds - i0) * 1e6)
    retried = init.stats["retry_previous"] > 0
    tally.outcomes["retried_previous_generation"] += int(retried)
    i_done = [e for e in i_events if isinstance(e, ResumptionComplete)]
    r_done = [e for e in r_events if isinstance(e, ResumptionComplete)]
    fb = [e for e in i_events if isinstance(e, FallbackToFullIKE)]
    if fb:
        tally.outcomes[f"fallback_{fb[0].reason}"] += 1
        fresh = simulated_full_ike(rng, id_i=c.current.id_i)
        pair.table.add(fresh)
        c.current, c.previous = fresh, None
        if len(tally.samples) < 40:
            outcome = f"fallback ({fb[0].reason}): full IKE"
            tally.samples.append({"client": c.name, "round": rnd_no, "outcome": outcome})
    elif i_done:
        ev = i_done[0]
        outcome = tally.resumed(ev, r_done)
        if retried:
            outcome += " (retried previous gen)"
        c.previous, c.current = init.credential, ev.successor
        if len(tally.samples) < 12 or retried or outcome != "resumed":
            tally.sample(c, rnd_no, ev, outcome)


def run_demo(
    clients: int = 20,
    rounds: int = 15,
    loss: float = 0.05,
    x25519: bool = True,
    seed: int | None = None,
    mlkem: str = "offer",
) -> dict[str, Any]:
    """Run the scenario and return a JSON-able report (fingerprints only)."""
    rnd = random.Random(seed)  # noqa: S311 -- loss simulation, not cryptography
    rng = (lambda n: rnd.randbytes(n)) if seed is not None else os.urandom
    # a seeded run is reproducible: the ML-KEM encapsulation draws from it too
    encapsulate = deterministic_encapsulation(rng) if seed is not None else None
    responder = Responder(ResponderConfig(), rng(32), encapsulate=encapsulate)
    pair = ConnectionPair(responder, MemoryTable())
    icfg = InitiatorConfig(use_x25519=x25519, mlkem=mlkem)
    people = []
    for i in range(clients):
        cred = simulated_full_ike(rng, id_i=f"\x02client{i}.example.org".encode())
        pair.table.add(cred)
        people.append(_Client(f"client{i}", cred))
    # a client the responder has never seen: its attempt must be NACKed -> full IKE
    stranger = _Client("stranger", simulated_full_ike(rng, id_i=b"\x02stranger.example.org"))

    def keep(direction: str, data: bytes) -> bool:
        return not (direction == "i2r" and _is_message3(data) and rnd.random() < loss)

    tally = _Tally()
    wall0 = time.perf_counter()
    for rnd_no in range(rounds):
        for c in [*people, stranger] if rnd_no == 0 else people:
            _attempt(pair, c, icfg, rng, START + 60.0 * rnd_no, keep, tally, rnd_no)
    wall = time.perf_counter() - wall0
    tally.lineages = dict(collections.Counter(c.current.lineage.value for c in people))
    scenario = {
        "clients": clients,
        "rounds": rounds,
        "message3_loss": loss,
        "x25519": x25519,
        "mlkem": mlkem,
        "mode": "hardened",
        "seed": seed,
    }
    return _report(scenario, tally, pair, wall, paper_comparison(min(rounds, 10), rng))


def _report(
    scenario: dict[str, Any],
    tally: _Tally,
    pair: ConnectionPair,
    wall: float,
    paper: dict[str, Any],
) -> dict[str, Any]:
    outcomes, r_us, i_us = tally.outcomes, tally.r_us, tally.i_us
    attempts = len(r_us)
    completed_initiator = attempts - outcomes["fallback_nack"] - outcomes["fallback_timeout"]
    return {
        "scenario": scenario,
        "attempts": attempts,
        "outcomes": outcomes,
        "esp_keys_distinct": len(tally.esp_keys),
        "esp_keys_expected": 2 * completed_initiator,
        "responder_stats": dict(pair.responder.stats),
        "timings_us": {
            "responder_per_attempt_median": statistics.median(r_us),
            "responder_per_attempt_p90": _pct(r_us, 0.9),
            "initiator_per_attempt_median": statistics.median(i_us),
            "initiator_per_attempt_p90": _pct(i_us, 0.9),
        },
        "wall_seconds": wall,
        "attempts_per_second": attempts / wall if wall > 0 else float("inf"),
        "samples": tally.samples,
        "lineages_at_end": tally.lineages,
        "bytes_per_resumption": sum(message_sizes(scenario["x25519"], scenario["mlkem"] != "off")),
        "paper_mode_comparison": paper,
        "ok": outcomes["key_mismatch"] == 0
        and len(tally.esp_keys) == 2 * completed_initiator
        and outcomes["fallback_nack"] >= 1,
    }


def print_report(rep: dict[str, Any]) -> None:
    sc = rep["scenario"]
    print(
        f"ikeresume demo: {sc['clients']} clients x {sc['rounds']} rounds, hardened mode, "
        f"X25519 {'on' if sc['x25519'] else 'off'}, ML-KEM-768 {sc['mlkem']}, "
        f"{sc['message3_loss']:.0%} of messages 3 "
        "dropped on purpose (keys shown as fingerprints only)\n"
    )
    head = (
        f"{'client':<10} {'rnd':>3} {'gen':>3}  {'i->r SPI':<8} {'i->r key fp':<16}  "
        f"{'r->i SPI':<8} {'r->i key fp':<16}  outcome"
    )
    print(head)
    print("-" * len(head))
    for s in rep["samples"]:
        if "spi_i2r" in s:
            print(
                f"{s['client']:<10} {s['round']:>3} {s['generation']:>3}  {s['spi_i2r']:<8} "
                f"{s['key_i2r_fp']:<16}  {s['spi_r2i']:<8} {s['key_r2i_fp']:<16}  {s['outcome']}"
            )
        else:
            print(f"{s['client']:<10} {s['round']:>3} {'-':>3}  {'':<43}  {s['outcome']}")
    o = rep["outcomes"]
    t = rep["timings_us"]
    print(
        f"\n{rep['attempts']} attempts: {o['resumed_both_sides']} resumed with equal keys on "
        f"both sides, {o['message3_lost']} lost a message 3 (initiator done, responder never "
        f"committed), {o['retried_previous_generation']} recovered by retrying the previous "
        f"generation after a NACK, {o['fallback_nack']} NACK -> full IKE, "
        f"{o['fallback_timeout']} timeouts, {o['key_mismatch']} key mismatches"
    )
    print(
        f"distinct ESP keys: {rep['esp_keys_distinct']} of {rep['esp_keys_expected']} "
        "(fresh keys for every resumption)"
    )
    print(
        f"in-process cost per attempt (both messages, includes the in-memory table): responder "
        f"median {t['responder_per_attempt_median']:.0f} us (p90 "
        f"{t['responder_per_attempt_p90']:.0f}), initiator median "
        f"{t['initiator_per_attempt_median']:.0f} us; {rep['attempts_per_second']:.0f} "
        f"attempts/s end to end in one thread ({rep['wall_seconds']:.2f} s)"
    )
    mix = ", ".join(f"{v} {k}" for k, v in sorted(rep["lineages_at_end"].items()))
    print(
        f"{rep['bytes_per_resumption']:,} bytes on the wire per resumption; the clients' "
        f"chains at the end: {mix} (pq-resumed: an ML-KEM run made them post-quantum "
        "against a recorder)"
    )
    pc = rep["paper_mode_comparison"]
    print(
        f"for contrast, the 2007 proposal (paper mode, insecure, off by default): "
        f"{pc['resumptions']} resumptions installed {pc['distinct_esp_keys']} distinct ESP "
        f"key(s) ({', '.join(pc['key_fp'])}): the same key, with sequence numbers restarting"
    )
    print("result:", "OK" if rep["ok"] else "FAILED")
