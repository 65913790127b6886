"""The ``ikeresume serve`` configuration file (TOML), validated strictly.

Why strict: a typo in a security-relevant option (``alow_paper_mode``) silently ignored is
worse than a refusal to start, so unknown sections and keys are errors, every value is
type-checked, and every error names the file, the section and the key.  The documented
example with every option is ``resume/net/example.toml`` (a test keeps the two in sync).
:class:`ConfigError` maps to exit code 4 (``EXIT_CONFIG``).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume.errors import LocalProtocolError
from resume.responder import ResponderConfig
from store.policy import Policy, parse_duration, parse_size

if TYPE_CHECKING:
    from resume.responder import ResponderConfig

DEFAULT_PORT = 4501  # a dedicated port: resumption traffic never collides with the IKE daemon's
NATT_PORT = 4500
EXAMPLE = Path(__file__).with_name("example.toml")


class ConfigError(Exception):
    """The configuration is unusable; the message says where and why."""


@dataclass(frozen=True)
class ListenAddr:
    host: str
    port: int

    @property
    def family_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family_v6 else f"{self.host}:{self.port}"


def _split_hostport(value: str) -> tuple[str, str | None]:
    """``"h:p"``, ``"[v6]:p"``, ``"h"``, ``"v6"`` -> (host, port text or None)."""
    v = value.strip()
    host, port_s = v, None
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {value!r}")
        host, rest = v[1:end], v[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':port' after ']' in {value!r}")
            port_s = rest[1:]
    elif v.count(":") == 1:
        host, port_s = v.split(":")
    return host, port_s


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _port(port_s: str | None, default_port: int, value: str) -> int:
    if port_s is None:
        return default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bad port {port_s!r} in {value!r}")
    return int(port_s)


def parse_hostport(value: str, default_port: int) -> ListenAddr:
    """``"0.0.0.0:4501"``, ``"[::]:4501"``, ``"::1"``, ``"127.0.0.1"`` -> :class:`ListenAddr`."""
    host, port_s = _split_hostport(value)
    if not _is_ip(host):
        raise ValueError(f"{host!r} is not an IP address (names are not resolved)")
    return ListenAddr(host, _port(port_s, default_port, value))


def resolve_hostport(value: str, default_port: int) -> ListenAddr:
    """Like :func:`parse_hostport`, but a client's ``--server`` may also be a DNS name.

    A listening address must be literal (a name could change under a running server); the
    address a client sends to is looked up once, here, before the exchange starts, so that
    ``ikeresume resume --server vpn.example.net`` works.  A name that does not resolve is a
    ``ValueError`` (exit 2), never a late failure inside the exchange.
    """
    host, port_s = _split_hostport(value)
    port = _port(port_s, default_port, value)
    if _is_ip(host):
        return ListenAddr(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise ValueError(f"cannot resolve {host!r}: {e}") from None
    for family in (socket.AF_INET, socket.AF_INET6):  # IPv4 first: what NAT-T peers expect
        for fam, _, _, _, sockaddr in infos:
            if fam == family:
                return ListenAddr(str(sockaddr[0]), port)
    raise ValueError(f"{host!r} has no IPv4 or IPv6 address")


@dataclass(frozen=True)
class ServerSection:
    listen: tuple[ListenAddr, ...] = (ListenAddr("0.0.0.0", DEFAULT_PORT),)  # noqa: S104
    natt_framing: bool = False
    workers: int = 1
    recv_batch: int = 64
    socket_buffer: int = 4 * 2**20
    server_secret_file: str = "/var/lib/ikeresume/server.key"  # noqa: S105 (a path)
    shutdown_grace: float = 5.0
    ipsec_bypass: bool = True
    engine: str = "auto"
    message3_affinity: str = ""


@dataclass(frozen=True)
class StoreSection:
    url: str = "sqlite:////var/lib/ikeresume/cache.db"
    key_file: str = ""
    sqlite_synchronous: str = "FULL"
    group_commit_max: int = 256
    miss_reuse_seconds: float = 1.0


@dataclass(frozen=True)
class LimitsSection:
    per_source_rate: float = 20.0
    per_source_burst: float = 40.0
    ipv6_prefix: int = 64
    max_sources: int = 65536
    new_exchange_rate: float = 0.0
    max_pending: int = 4096


@dataclass(frozen=True)
class InstallSection:
    mode: str = "none"
    hook: str = ""
    hook_timeout: float = 5.0
    max_concurrent: int = 64
    node: str = ""


@dataclass(frozen=True)
class HttpSection:
    listen: str = "127.0.0.1:9751"


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class ServeConfig:
    server: ServerSection = field(default_factory=ServerSection)
    store: StoreSection = field(default_factory=StoreSection)
    policy: Policy = field(default_factory=Policy)
    protocol: Mapping[str, Any] = field(default_factory=dict)
    limits: LimitsSection = field(default_factory=LimitsSection)
    install: InstallSection = field(default_factory=InstallSection)
    http: HttpSection = field(default_factory=HttpSection)
    log: LogSection = field(default_factory=LogSection)
    source: str = "<defaults>"


_SECTIONS: dict[str, type] = {
    "server": ServerSection,
    "store": StoreSection,
    "limits": LimitsSection,
    "install": InstallSection,
    "http": HttpSection,
    "log": LogSection,
}
_DURATIONS = {"shutdown_grace", "hook_timeout"}
#: keys that existed once: a config that still has one gets told what replaced it
_REPLACED = {
    ("store", "lookup_reuse_seconds"): (
        "was replaced: message 3 now reuses message 1's credential inside the protocol "
        "core ([protocol] credential_cache_size, on by default); delete the line"
    ),
}
_SIZES = {"socket_buffer"}
_CHOICES = {
    ("install", "mode"): ("none", "hook", "xfrm"),
    ("log", "level"): ("debug", "info", "warning", "error"),
    ("log", "format"): ("json", "text"),
    ("store", "sqlite_synchronous"): ("FULL", "NORMAL"),
    ("server", "engine"): ("auto", "native", "python"),
    ("server", "message3_affinity"): ("", "same-process", "accept-retry"),
}
_POSITIVE = {"workers", "recv_batch", "group_commit_max", "max_sources", "max_pending"}
_POSITIVE |= {"per_source_rate", "per_source_burst", "max_concurrent"}


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    where = f"[{section}] {key}"
    if key in _DURATIONS:
        try:
            return parse_duration(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None
    if key in _SIZES:
        try:
            return parse_size(value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: {e}") from None
    if section == "server" and key == "listen":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where}: expected an address string or a non-empty list of them")
        try:
            return tuple(parse_hostport(i, DEFAULT_PORT) for i in items)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"{where}: must be positive, got {value}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value}")
        return value
    if isinstance(default, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value) or value < 0 or (key in _POSITIVE and value == 0):
            raise ConfigError(f"{where}: out of range: {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    raise ConfigError(f"{where}: unsupported value {value!r}")  # pragma: no cover


def _section(name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    defaults = cls()
    known = [f.name for f in fields(cls)]
    kw: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            if (name, key) in _REPLACED:
                raise ConfigError(f"[{name}] {key} {_REPLACED[name, key]}")
            raise ConfigError(f"[{name}] unknown key {key!r}{_suggest(key, known)}")
        kw[key] = _coerce(name, key, value, getattr(defaults, key))
    return cls(**kw)


def from_mapping(doc: Mapping[str, Any], source: str = "<mapping>") -> ServeConfig:
    """Validate a parsed TOML document; raise :class:`ConfigError` naming what is wrong."""
    known = [*_SECTIONS, "policy", "protocol"]
    kw: dict[str, Any] = {"source": source}
    for name, table in doc.items():
        if name not in known:
            raise ConfigError(f"unknown section [{name}]{_suggest(name, known)}")
        if name == "policy":
            if not isinstance(table, dict):
                raise ConfigError("[policy] must be a table")
            try:
                kw["policy"] = Policy.from_mapping(table)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"[policy] {e}") from None
        elif name == "protocol":
            if not isinstance(table, dict):
                raise ConfigError("[protocol] must be a table")
            kw["protocol"] = dict(table)  # checked against ResponderConfig by the server
        else:
            kw[name] = _section(name, _SECTIONS[name], table)
    cfg = ServeConfig(**kw)
    _cross_checks(cfg)
    return cfg


def _cross_checks(cfg: ServeConfig) -> None:
    inst = cfg.install
    if inst.mode == "hook" and not inst.hook:
        raise ConfigError(
            "[install] mode = 'hook' needs hook = '/path/to/exe' or 'python:mod:func'"
        )
    if inst.mode != "hook" and inst.hook:
        raise ConfigError(f"[install] hook is set but mode = {inst.mode!r}; set mode = 'hook'")
    if not 1 <= cfg.limits.ipv6_prefix <= 128:
        raise ConfigError("[limits] ipv6_prefix: must be between 1 and 128")
    if cfg.limits.per_source_burst < 1:
        raise ConfigError("[limits] per_source_burst: must be at least 1")
    if cfg.http.listen:
        try:
            parse_hostport(cfg.http.listen, 9751)
        except ValueError as e:
            raise ConfigError(f"[http] listen: {e}") from None
    if cfg.server.workers > 1 and any(a.port == 0 for a in cfg.server.listen):
        raise ConfigError("[server] workers > 1 share one port: listen needs explicit ports")
    if not cfg.store.url:
        raise ConfigError("[store] url: must not be empty")


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a TOML file; every failure is a :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: TOML syntax error: {e}") from None
    try:
        return from_mapping(doc, source=str(p))
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def shares_responders(cfg: ServeConfig) -> list[str]:
    """Why message 3 might reach another responder process than message 1's: several
    workers, or a store other responders can share (anything but a SQLite file)."""
    why = []
    if cfg.server.workers > 1:
        why.append(f"[server] workers = {cfg.server.workers}")
    if not cfg.store.url.startswith(("sqlite:", "sqlite+")) and "://" in cfg.store.url:
        why.append("a shared (PostgreSQL) store")
    return why


def affinity_warning(cfg: ServeConfig, rcfg: ResponderConfig) -> str | None:
    """The warning ``serve --check`` (and the service at start-up) gives when X25519 is
    allowed, message 3 may reach another process, and the operator has not stated what
    keeps it on the process that answered message 1 (``[server] message3_affinity``).

    Why it matters (spec 5.5): the responder's X25519 key is random per tick and lives
    only in the memory of the process that answered message 1 (it is never derived from
    the server secret, so recorded runs stay secret if that leaks).  Another process
    cannot rebuild message 2 and refuses message 3; the client, which installed its SAs
    when it sent message 3, has a dead tunnel until its next attempt retries the kept
    previous generation.
    """
    if not rcfg.allow_x25519 or cfg.server.message3_affinity:
        return None
    why = shares_responders(cfg)
    if not why:
        return None
    return (
        f"X25519 is allowed and {' and '.join(why)}: an X25519 message 3 must reach the "
        "process that answered message 1 (spec 5.5; its X25519 key exists only there).  "
        "SO_REUSEPORT keeps a peer on one worker only while the set of workers does not "
        "change; a load balancer must hash on source address and port.  Otherwise that "
        "client's new SAs stay dead until its next attempt (one retry, never stranded).  "
        "Say which holds: [server] message3_affinity = \"same-process\" or "
        "\"accept-retry\" (or [protocol] allow_x25519 = false)."
    )


#: the service's ``[protocol] credential_cache_size`` unless configured (the library's is 0)
SERVICE_CREDENTIAL_CACHE = 65536


def responder_config(protocol: Mapping[str, Any]) -> ResponderConfig:
    """Build the core's ``ResponderConfig`` from the ``[protocol]`` table (ConfigError).

    Every key must be a field of the core's config with a value of its type: the core's
    options are security-relevant (``allow_paper_mode``), so nothing is guessed.  One
    default differs from the library's: the service turns ``credential_cache_size`` on
    (:data:`SERVICE_CREDENTIAL_CACHE`), so message 3 needs no second lookup.
    """
    allowed = {f.name: f for f in fields(ResponderConfig) if f.name != "default_lifetimes"}
    kw: dict[str, Any] = {"credential_cache_size": SERVICE_CREDENTIAL_CACHE}
    defaults = ResponderConfig()
    for key, value in dict(protocol).items():
        if key not in allowed:
            raise ConfigError(
                f"[protocol] unknown key {key!r} (known: {', '.join(sorted(allowed))})"
            )
        default = getattr(defaults, key)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default) if not isinstance(default, float) else int | float
        ):
            raise ConfigError(f"[protocol] {key}: expected {type(default).__name__}, got {value!r}")
        kw[key] = value
    try:
        return ResponderConfig(**kw)
    except (LocalProtocolError, ValueError, TypeError) as e:
        raise ConfigError(f"[protocol] {e}") from None
