"""The agent's TOML file, validated strictly (unknown keys are errors naming the key).

``ikeresume agent --print-example`` prints :data:`EXAMPLE` (``example.toml``), every option
documented; a test keeps the two in sync.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ikeshim.agent.wire import PEER_NAME
from resume.identity import parse_identity
from store.policy import Policy

#: ``resume.initiator.MLKEM_POLICIES``, not imported from there: the one-shot client path
#: reads this module without the protocol core's imports (a test keeps the two equal).
MLKEM_POLICIES = ("off", "offer", "require")

EXAMPLE = Path(__file__).with_name("example.toml")
DEFAULT_SOCKET = "/run/ikeresume/agent.sock"
DEFAULT_CONFIG = "/etc/ikeresume/agent.toml"
DEFAULT_PORT = 4501


class AgentConfigError(Exception):
    """The configuration is unusable; the message names the key (exit code 4)."""


@dataclass(frozen=True)
class PeerConfig:
    """One responder the agent resumes with (``[peers.<name>]``)."""

    name: str
    server: tuple[str, int]
    id_r: bytes
    id_i: bytes | None = None
    natt: bool = False
    install: bool = True
    timeout: float = 4.0
    rto: float = 0.5
    retransmits: int = 3
    keep_up: bool = False
    ike: str = ""
    children: tuple[str, ...] = ()
    fallback: bool = True
    #: ML-KEM-768 in the exchange: "off", "offer" or "require" (``InitiatorConfig.mlkem``)
    mlkem: str = "off"


@dataclass(frozen=True)
class AgentConfig:
    socket: str = DEFAULT_SOCKET
    socket_mode: int = 0o600
    socket_group: str = ""
    vici: str = ""
    core: bool | None = None
    db: str = ""
    key_file: str | None = None
    policy: Policy = field(default_factory=Policy)
    peers: Mapping[str, PeerConfig] = field(default_factory=dict)
    source: str = "<defaults>"


Spec = Mapping[str, type | tuple[type, ...]]


def _take(table: Mapping[str, Any], where: str, spec: Spec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in spec:
            raise AgentConfigError(f"{where}: unknown key {key!r} (known: {', '.join(spec)})")
        want = spec[key]
        if isinstance(value, bool) and want in (int, float, (int, float)):
            raise AgentConfigError(f"{where}.{key}: expected a number, not {value!r}")
        if not isinstance(value, want):
            raise AgentConfigError(f"{where}.{key}: wrong type {type(value).__name__}")
        out[key] = value
    return out


def _server(text: str, where: str) -> tuple[str, int]:
    from resume.net.config import parse_hostport

    try:
        hp = parse_hostport(text, DEFAULT_PORT)
    except ValueError as e:
        raise AgentConfigError(f"{where}.server: {e}") from None
    return hp.host, hp.port


def _peer(name: str, t: Mapping[str, Any]) -> PeerConfig:
    where = f"[peers.{name}]"
    if not PEER_NAME.fullmatch(name):
        raise AgentConfigError(f"{where}: a peer name is letters, digits, '.', '_', '-' (<= 64)")
    v = _take(t, where, {
        "server": str, "peer": str, "id": str, "natt": bool, "install": str,
        "timeout": (int, float), "rto": (int, float), "retransmits": int, "keep_up": bool,
        "ike": str, "children": list, "fallback": bool, "mlkem": str,
    })  # fmt: skip
    for key in ("server", "peer"):
        if key not in v:
            raise AgentConfigError(f"{where}: {key} is required")
    try:
        id_r = parse_identity(v["peer"], bare=True)
        id_i = parse_identity(v["id"], bare=True) if v.get("id") else None
    except ValueError as e:
        raise AgentConfigError(f"{where}: {e}") from None
    install = v.get("install", "xfrm")
    if install not in ("xfrm", "none"):
        raise AgentConfigError(f"{where}.install: 'xfrm' or 'none', not {install!r}")
    children = v.get("children", [])
    if not all(isinstance(c, str) and c for c in children):
        raise AgentConfigError(f"{where}.children: a list of CHILD_SA names")
    keep_up = v.get("keep_up", False)
    if keep_up and not v.get("ike"):
        raise AgentConfigError(f"{where}: keep_up needs ike (the strongSwan connection name)")
    mlkem = v.get("mlkem", "off")
    if mlkem not in MLKEM_POLICIES:
        raise AgentConfigError(f"{where}.mlkem: one of {', '.join(MLKEM_POLICIES)}, not {mlkem!r}")
    timeout, rto = float(v.get("timeout", 4.0)), float(v.get("rto", 0.5))
    if not 0 < rto <= timeout <= 60:
        raise AgentConfigError(f"{where}: need 0 < rto <= timeout <= 60")
    return PeerConfig(
        name, _server(v["server"], where), id_r, id_i, v.get("natt", False), install == "xfrm",
        timeout, rto, v.get("retransmits", 3), keep_up, v.get("ike", ""), tuple(children),
        v.get("fallback", True), mlkem,
    )  # fmt: skip


def parse_config(data: Mapping[str, Any], source: str = "<string>") -> AgentConfig:
    try:
        top = _take(data, source, {"agent": dict, "store": dict, "policy": dict, "peers": dict})
        a = _take(top.get("agent", {}), "[agent]", {
            "socket": str, "socket_mode": str, "socket_group": str, "vici": str, "core": str,
        })  # fmt: skip
        s = _take(top.get("store", {}), "[store]", {"url": str, "key_file": str})
        mode = int(a.get("socket_mode", "0600"), 8)
    except ValueError:
        raise AgentConfigError(f"{source}: [agent].socket_mode: octal like '0660'") from None
    except AgentConfigError as e:
        raise AgentConfigError(f"{source}: {e}") from None
    if mode & ~0o770:
        raise AgentConfigError(f"{source}: [agent].socket_mode: owner and group bits only")
    try:
        policy = Policy.from_mapping(top.get("policy", {}))
    except (ValueError, TypeError) as e:
        raise AgentConfigError(f"{source}: [policy]: {e}") from None
    core = {"auto": None, "native": True, "python": False}.get(a.get("core", "auto"), "bad")
    if core == "bad":
        raise AgentConfigError(f"{source}: [agent].core: 'auto', 'native' or 'python'")
    peers: dict[str, PeerConfig] = {}
    for name, t in top.get("peers", {}).items():
        if not isinstance(t, dict):
            raise AgentConfigError(f"{source}: [peers.{name}] must be a table")
        try:
            peers[name] = _peer(name, t)
        except AgentConfigError as e:
            raise AgentConfigError(f"{source}: {e}") from None
    return AgentConfig(
        socket=a.get("socket", DEFAULT_SOCKET), socket_mode=mode,
        socket_group=a.get("socket_group", ""), vici=a.get("vici", ""),
        core=core if core is None else bool(core), db=s.get("url", ""),
        key_file=s.get("key_file") or None, policy=policy, peers=peers, source=source,
    )  # fmt: skip


def load_config(path: str) -> AgentConfig:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise AgentConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise AgentConfigError(f"{path}: {e}") from None
    return parse_config(data, path)
