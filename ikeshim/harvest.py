"""Turn CHILD_SAs negotiated by strongSwan into cached resumption credentials.

Keys and SPIs come from XFRM (the kernel is the only place the keys are visible), identities,
roles, traffic selectors and lifecycle from strongSwan's VICI event stream.  Both peers run a
harvester; each calls ``resume.keyschedule.bootstrap_credential`` with what it sees and, since
both see the same SA from opposite sides, both get the same handle and secret without talking
to each other.

Lifecycle: ``child-updown`` up -> ``upsert_full_ike`` (a full IKE starts a resumption chain);
down (or a rekey's old SA, or the IKE_SA going down) -> ``record_session`` with the session's
duration and bytes so that established-time and data lifetimes are enforced, and the record
stays available for the next connection to resume.

Anything wrong with one CHILD_SA (a field VICI reported that does not parse, unsupported
algorithm, SA gone from the kernel, store error) is reported as a :class:`HarvestReport`,
counted in :attr:`Harvester.stats` and skipped; the other SAs, and the harvester, go on: a
harvest failure only means the next connection runs a full IKE.  Secrets are never part of
an outcome.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import vici

from ikeshim.algorithms import child_sa_from_states
from ikeshim.errors import HarvestError, XfrmError, XfrmNotFoundError
from ikeshim.vici_map import ChildInfo, IkeInfo, identity_payload, read_ike_sas
from ikeshim.xfrm import IPPROTO_ESP, SAKey, XfrmSocket, XfrmState
from resume.credential import Credential
from resume.keyschedule import bootstrap_credential, bootstrap_paper_credential

Role = Literal["initiator", "responder"]
VICI_EVENTS = ("child-updown", "child-rekey", "ike-updown")
#: What the ``vici`` package raises for a stream it cannot follow (a truncated or garbled
#: packet, a non-UTF-8 name): the connection is dropped and made again, as after a restart.
VICI_STREAM_ERRORS: tuple[type[Exception], ...] = (
    vici.exception.SessionException,
    vici.exception.DeserializationException,
    vici.exception.CommandException,
    vici.exception.EventUnknownException,
    struct.error,
    UnicodeDecodeError,
)
_RECONNECT: tuple[type[Exception], ...] = (OSError, *VICI_STREAM_ERRORS)


class CredentialSink(Protocol):
    """The part of ``store.repository.Store`` the harvester writes to."""

    def upsert_full_ike(self, role: Role, credential: Credential, now: float) -> str: ...

    def record_session(
        self, role: Role, handle: bytes, *, duration_s: float, nbytes: int, ended_at: float
    ) -> bool: ...


StateReader = Callable[[str, int], XfrmState | None]


@dataclass(frozen=True)
class Harvested:
    """A CHILD_SA mapped to a cache record (``credential`` holds the secret)."""

    role: Role
    credential: Credential
    ike: IkeInfo
    child: ChildInfo


@dataclass(frozen=True)
class HarvestReport:
    """What the harvester did with one event; safe to log (no secrets)."""

    kind: Literal["harvested", "session", "skipped", "error", "ready"]
    ike: str
    child: str
    role: str = ""
    handle: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return dict(self.__dict__)


def _same_addr(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def harvest_child(
    ike: IkeInfo,
    child: ChildInfo,
    read_state: StateReader,
    *,
    replay_window: int = 128,
    paper: bool = False,
) -> Harvested:
    """Map one established CHILD_SA to generation 0 of a credential; HarvestError if not."""
    if child.protocol != "ESP":
        raise HarvestError(f"CHILD_SA {child.name} uses {child.protocol}, only ESP resumes")
    inbound = read_state(ike.local_host, child.spi_in)
    outbound = read_state(ike.remote_host, child.spi_out)
    if inbound is None or outbound is None:
        raise HarvestError(
            f"CHILD_SA {child.name}: SPIs {child.spi_in:08x}/{child.spi_out:08x} not in XFRM "
            "(harvester in another network namespace than the daemon?)"
        )
    initiator = ike.initiator
    role: Role = "initiator" if initiator else "responder"
    i_addr, r_addr = (
        (ike.local_host, ike.remote_host) if initiator else (ike.remote_host, ike.local_host)
    )
    tsi, tsr = (child.local_ts, child.remote_ts) if initiator else (child.remote_ts, child.local_ts)
    i_to_r_state, r_to_i_state = (outbound, inbound) if initiator else (inbound, outbound)
    try:
        params, i_to_r, r_to_i = child_sa_from_states(
            i_to_r_state, r_to_i_state, mode=child.mode, initiator_addr=i_addr,
            responder_addr=r_addr, tsi=tsi, tsr=tsr, replay_window=replay_window,
        )  # fmt: skip
    except HarvestError as exc:
        raise HarvestError(f"CHILD_SA {child.name}: {exc}") from None
    ids = []
    for field_name, text in (("local-id", ike.local_id), ("remote-id", ike.remote_id)):
        try:
            ids.append(identity_payload(text))
        except HarvestError as exc:
            raise HarvestError(f"IKE_SA {ike.name}: {field_name}: {exc}") from None
    local_id, remote_id = ids
    id_i, id_r = (local_id, remote_id) if initiator else (remote_id, local_id)
    make = bootstrap_paper_credential if paper else bootstrap_credential
    # the lineage: what the daemon reports about the IKE_SA's key exchanges, never a guess
    credential = dataclasses.replace(make(params, i_to_r, r_to_i, id_i, id_r), lineage=ike.lineage)
    return Harvested(role, credential, ike, child)


def xfrm_state_reader(x: XfrmSocket) -> StateReader:
    """Read one SA by (dst, SPI); falls back to a dump for SAs with marks."""

    def read(dst: str, spi: int) -> XfrmState | None:
        try:
            return x.get_sa(SAKey(str(ipaddress.ip_address(dst)), spi, IPPROTO_ESP))
        except XfrmNotFoundError:
            for s in x.dump_sas():
                if s.spi == spi and s.proto == IPPROTO_ESP and _same_addr(s.dst, dst):
                    return s
            return None

    return read


@dataclass
class _Live:
    """A harvested CHILD_SA still up: what its session record needs when it ends."""

    role: Role
    handle: bytes
    ike_uid: int
    ike_name: str
    child_name: str
    started_at: float
    local_host: str
    remote_host: str
    spi_in: int
    spi_out: int
    last_bytes: int = 0
    ike_down_at: float | None = None


@dataclass
class Harvester:
    """Event-driven core of ``ikeresume harvest`` (no VICI I/O: events in, outcomes out)."""

    sink: CredentialSink
    read_state: StateReader
    replay_window: int = 128
    paper: bool = False
    ike_down_grace: float = 2.0
    live: dict[int, _Live] = field(default_factory=dict)
    #: reports by kind since start ("harvested", "skipped", "error", "session")
    stats: Counter[str] = field(default_factory=Counter)

    def on_event(self, name: str, msg: Mapping[str, Any], now: float) -> list[HarvestReport]:
        """Outcomes of one VICI event; an SA that cannot be used is one "skipped" report,
        the event's other SAs are still handled."""
        out: list[HarvestReport] = []
        try:
            if not isinstance(msg, Mapping):
                raise HarvestError(f"VICI {name} event is not a section")
            if name == "child-updown":
                up = msg.get("up") in (b"yes", "yes")
                out = self._updown(msg, up, now)
            elif name == "child-rekey":
                out = self._rekey(msg, now)
            elif name == "ike-updown" and msg.get("up") not in (b"yes", "yes"):
                out = self._ike_down(msg, now)
        except HarvestError as exc:
            out = [HarvestReport("error", "?", "?", detail=str(exc))]
        return self._count(out)

    def _count(self, reports: list[HarvestReport]) -> list[HarvestReport]:
        self.stats.update(r.kind for r in reports)
        return reports

    def _read(self, msg: Mapping[str, Any]) -> tuple[list[IkeInfo], list[HarvestReport]]:
        """The message's usable IKE_SAs, and a "skipped" report per SA that did not parse."""
        ikes, bad = read_ike_sas(msg)
        return ikes, [HarvestReport("skipped", b.ike, b.child, detail=b.reason) for b in bad]

    def sync(self, list_sas: Iterable[Mapping[str, Any]], now: float) -> list[HarvestReport]:
        """Harvest every installed CHILD_SA not yet known (at start and after reconnects)."""
        out: list[HarvestReport] = []
        for msg in list_sas:
            if not isinstance(msg, Mapping):
                out.append(HarvestReport("error", "?", "?", detail="list-sa is not a section"))
                continue
            ikes, skipped = self._read(msg)
            out += skipped
            for ike in ikes:
                for child in ike.children:
                    if child.uniqueid not in self.live:
                        out.append(self._harvest(ike, child, now))
        return self._count(out)

    def _harvest(self, ike: IkeInfo, child: ChildInfo, now: float) -> HarvestReport:
        try:
            h = harvest_child(
                ike, child, self.read_state, replay_window=self.replay_window, paper=self.paper
            )
        except (HarvestError, XfrmError) as exc:
            return HarvestReport("skipped", ike.name, child.name, detail=str(exc))
        try:
            self.sink.upsert_full_ike(h.role, h.credential, now)
        except Exception as exc:  # store failure: not cached, full IKE next
            return HarvestReport("error", ike.name, child.name, h.role, detail=f"store: {exc}")
        self.live[child.uniqueid] = _Live(
            h.role,
            h.credential.handle,
            ike.uniqueid,
            ike.name,
            child.name,
            now - child.install_time,
            ike.local_host,
            ike.remote_host,
            child.spi_in,
            child.spi_out,
        )
        return HarvestReport(
            "harvested",
            ike.name,
            child.name,
            h.role,
            h.credential.handle.hex(),
            f"lineage {h.credential.lineage.value}",
        )

    def refresh_counters(self) -> None:
        """Remember each live CHILD_SA's kernel byte counters.

        strongSwan does not report a CHILD_SA's final bytes when the whole IKE_SA goes down
        (no child-updown then), and the kernel SAs are gone by the time ike-updown arrives;
        the last reading taken here is what the session record gets in that case.
        """
        for live in self.live.values():
            self._read_counters(live)

    def _read_counters(self, live: _Live) -> None:
        total = 0
        for dst, spi in ((live.local_host, live.spi_in), (live.remote_host, live.spi_out)):
            try:
                st = self.read_state(dst, spi)
            except XfrmError:
                st = None
            if st is not None:
                total += st.curlft.bytes
        live.last_bytes = max(live.last_bytes, total)

    def _session_end(self, child: ChildInfo | None, uid: int, now: float) -> HarvestReport | None:
        live = self.live.pop(uid, None)
        if live is None:
            return None
        self._read_counters(live)  # in case the kernel SAs are still there
        if child is not None and child.install_time:
            duration = float(child.install_time)
        else:
            duration = max(0.0, now - live.started_at)
        nbytes = live.last_bytes
        if child is not None:
            nbytes = max(nbytes, child.bytes_in + child.bytes_out)
        try:
            found = self.sink.record_session(
                live.role, live.handle, duration_s=duration, nbytes=nbytes, ended_at=now
            )
        except Exception as exc:  # accounting lost: policy stays stricter
            return HarvestReport(
                "error",
                live.ike_name,
                live.child_name,
                live.role,
                live.handle.hex(),
                f"store: {exc}",
            )
        detail = f"{duration:.0f}s {nbytes}B" + ("" if found else " (record gone)")
        return HarvestReport(
            "session", live.ike_name, live.child_name, live.role, live.handle.hex(), detail
        )

    def _updown(self, msg: Mapping[str, Any], up: bool, now: float) -> list[HarvestReport]:
        ikes, out = self._read(msg)
        for ike in ikes:
            for child in ike.children:
                if up:
                    out.append(self._harvest(ike, child, now))
                else:
                    o = self._session_end(child, child.uniqueid, now)
                    if o is not None:
                        out.append(o)
        return out

    def _rekey(self, msg: Mapping[str, Any], now: float) -> list[HarvestReport]:
        """``child-rekey``: children are ``{name: {old: {...}, new: {...}}}``."""
        out: list[HarvestReport] = []
        for ike_name, d in msg.items():
            if not isinstance(d, Mapping):
                continue
            children = d.get("child-sas", {})
            if not isinstance(children, Mapping):
                continue
            for cname, c in children.items():
                if not isinstance(c, Mapping):
                    continue
                for part in ("old", "new"):
                    if not isinstance(c.get(part), Mapping):
                        continue
                    flat = dict(d)
                    flat["child-sas"] = {f"{cname}-{part}": c[part]}
                    ikes, skipped = self._read({ike_name: flat})
                    out += skipped
                    for ike in ikes:
                        for child in ike.children:
                            if part == "old":
                                o = self._session_end(child, child.uniqueid, now)
                                if o is not None:
                                    out.append(o)
                            else:
                                out.append(self._harvest(ike, child, now))
        return out

    def _ike_down(self, msg: Mapping[str, Any], now: float) -> list[HarvestReport]:
        """The IKE_SA went down.  strongSwan sends ike-updown first and a child-updown (with
        the final byte counts) per CHILD_SA after it; wait for those, for at most
        :attr:`ike_down_grace` seconds (see :meth:`tick`)."""
        ikes, out = self._read(msg)
        for ike in ikes:
            listed = {c.uniqueid: c for c in ike.children}
            for uid, live in list(self.live.items()):
                if live.ike_uid != ike.uniqueid:
                    continue
                if uid in listed:
                    o = self._session_end(listed[uid], uid, now)
                    if o is not None:
                        out.append(o)
                elif live.ike_down_at is None:
                    live.ike_down_at = now
        return out

    def tick(self, now: float) -> list[HarvestReport]:
        """End sessions whose IKE_SA went down without a child-updown within the grace."""
        out: list[HarvestReport] = []
        for uid, live in list(self.live.items()):
            if live.ike_down_at is not None and now - live.ike_down_at >= self.ike_down_grace:
                o = self._session_end(None, uid, now)
                if o is not None:
                    out.append(o)
        return self._count(out)


def vici_socket(uri: str, timeout: float = 5.0) -> socket.socket:
    """Connect to a VICI endpoint (``unix:///path``, a bare path, or ``tcp://host:port``)."""
    if uri.startswith("tcp://"):
        host, _, port = uri[6:].rpartition(":")
        s = socket.create_connection((host, int(port)), timeout=timeout)
    else:
        path = uri[7:] if uri.startswith("unix://") else uri
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
    s.settimeout(None)
    return s


def run_harvest(
    vici_uri: str,
    sink: CredentialSink,
    *,
    on_outcome: Callable[[HarvestReport], None],
    stop: Callable[[], bool] = lambda: False,
    once: bool = False,
    replay_window: int = 128,
    paper: bool = False,
    clock: Callable[[], float] = time.time,
    reconnect_delay: float = 1.0,
    poll: float = 0.5,
    counter_interval: float = 5.0,
) -> Harvester:
    """The long-running harvest loop: sync installed SAs, then follow VICI events.

    Reconnects after the daemon restarts (re-syncing what it missed).  ``once`` harvests the
    currently installed CHILD_SAs and returns.  Runs in the daemon's network namespace.
    """
    with XfrmSocket() as x:
        h = Harvester(sink, xfrm_state_reader(x), replay_window, paper)
        while not stop():
            try:
                listener = vici.Session(vici_socket(vici_uri))
                events = listener.listen(list(VICI_EVENTS), timeout=poll)
                synced = once
                next_refresh = time.monotonic() + counter_interval
                if once:
                    _sync(vici_uri, h, clock, on_outcome)
                    return h
                for name, msg in events:
                    if not synced:
                        # Registered for events first, then sync: nothing falls in between.
                        _sync(vici_uri, h, clock, on_outcome)
                        synced = True
                        live = f"{len(h.live)} live"
                        on_outcome(HarvestReport("ready", vici_uri, "", detail=live))
                    if name is not None:
                        ev = name.decode() if isinstance(name, bytes) else str(name)
                        for o in h.on_event(ev, msg, clock()):
                            on_outcome(o)
                    for o in h.tick(clock()):
                        on_outcome(o)
                    if time.monotonic() >= next_refresh:
                        h.refresh_counters()
                        next_refresh = time.monotonic() + counter_interval
                    if stop():
                        break
            except _RECONNECT as exc:
                if once:
                    raise HarvestError(f"VICI {vici_uri}: {exc}") from exc
                detail = f"VICI {vici_uri}: {exc}; retrying"
                on_outcome(HarvestReport("error", "", "", detail=detail))
                time.sleep(reconnect_delay)
        return h


def _sync(
    uri: str, h: Harvester, clock: Callable[[], float], on_outcome: Callable[[HarvestReport], None]
) -> None:
    s = vici.Session(vici_socket(uri))
    try:
        listed: Sequence[Mapping[str, Any]] = list(s.list_sas())
    finally:
        s.transport.close()
    for o in h.sync(listed, clock()):
        on_outcome(o)
