"""The serve configuration: the documented example is complete and bad input is refused clearly."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from resume.net import config as C
from resume.net.config import ConfigError, from_mapping, load_config, parse_hostport


def test_example_parses_and_equals_defaults() -> None:
    cfg = load_config(C.EXAMPLE)
    defaults = from_mapping({}, source=str(C.EXAMPLE))
    for section in ("server", "store", "limits", "install", "http", "log", "policy"):
        assert getattr(cfg, section) == getattr(defaults, section), section
    # the documented [protocol] values are the service's defaults too
    assert C.responder_config(cfg.protocol) == C.responder_config(defaults.protocol)


def test_example_documents_every_option() -> None:
    doc = tomllib.loads(C.EXAMPLE.read_text())
    for name, cls in C._SECTIONS.items():
        assert set(doc[name]) == {f.name for f in fields(cls)}, name
    assert set(doc["policy"]) == {f.name for f in fields(C.Policy)}
    text = C.EXAMPLE.read_text()
    # every key is preceded by a comment (documentation), not just present
    for m in re.finditer(r"^(\w+) = ", text, flags=re.M):
        before = text[: m.start()].rstrip("\n").splitlines()[-1]
        trailing = text[m.start() :].splitlines()[0]
        assert before.startswith("#") or "#" in trailing, m.group(1)


def test_full_file(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text(
        """
[server]
listen = ["127.0.0.1:7000", "[::1]:7001", "10.0.0.1"]
natt_framing = true
socket_buffer = "1MiB"
shutdown_grace = "2m"
[policy]
clocked = "2h"
data = "20MB"
[protocol]
allow_paper_mode = true
[install]
mode = "hook"
hook = "/bin/true --x"
"""
    )
    cfg = load_config(p)
    assert [str(a) for a in cfg.server.listen] == ["127.0.0.1:7000", "[::1]:7001", "10.0.0.1:4501"]
    assert cfg.server.natt_framing and cfg.server.socket_buffer == 2**20
    assert cfg.server.shutdown_grace == 120.0
    assert cfg.policy.clocked == 7200.0 and cfg.policy.data == 20_000_000
    assert cfg.protocol == {"allow_paper_mode": True}
    assert cfg.install.hook == "/bin/true --x"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server]\nlisten = 5\n", "[server] listen"),
        ("[server]\nlisten = ['localhost:1']\n", "not an IP address"),
        ("[server]\nlisten = ['1.2.3.4:99999']\n", "bad port"),
        ("[server]\nworkers = 0\n", "[server] workers: must be positive"),
        ("[server]\nworkres = 2\n", "did you mean 'workers'"),
        ("[server]\nnatt_framing = 'yes'\n", "expected true or false"),
        ("[servre]\n", "unknown section [servre]"),
        ("[policy]\nclocked = 'soon'\n", "[policy] not a duration"),
        ("[policy]\nbogus = 1\n", "unknown policy keys: bogus"),
        ("[install]\nmode = 'hook'\n", "needs hook"),
        ("[install]\nmode = 'magic'\n", "not one of none, hook, xfrm"),
        ("[install]\nhook = '/bin/true'\n", "set mode = 'hook'"),
        ("[limits]\nper_source_rate = -1\n", "[limits] per_source_rate"),
        ("[limits]\nipv6_prefix = 200\n", "ipv6_prefix"),
        ("[http]\nlisten = 'nowhere'\n", "[http] listen"),
        ("[log]\nlevel = 'loud'\n", "[log] level"),
        ("[server\n", "TOML syntax error"),
        ("[server]\nworkers = 2\nlisten = ['127.0.0.1:0']\n", "needs explicit ports"),
        ("[store]\nlookup_reuse_seconds = 2.0\n", "credential_cache_size"),
    ],
)
def test_errors_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert needle in str(ei.value)
    assert str(p) in str(ei.value)


def test_unreadable_and_binary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_parse_hostport() -> None:
    assert parse_hostport("[fe80::1%lo]:5", 1) == C.ListenAddr("fe80::1%lo", 5)
    assert parse_hostport("::", 9) == C.ListenAddr("::", 9)
    for bad in ("[::1", "[::1]x", "1.2.3.4:", "1.2.3.4:-1"):
        with pytest.raises(ValueError):
            parse_hostport(bad, 1)


def test_a_clients_server_may_be_a_name_a_listening_address_may_not() -> None:
    from resume.net.config import resolve_hostport

    assert resolve_hostport("192.0.2.7:99", 1) == C.ListenAddr("192.0.2.7", 99)
    assert resolve_hostport("[::1]", 4) == C.ListenAddr("::1", 4)
    local = resolve_hostport("localhost:4501", 1)
    assert local.port == 4501 and ipaddress.ip_address(local.host).is_loopback
    assert resolve_hostport("localhost", 7).port == 7
    with pytest.raises(ValueError, match="cannot resolve"):
        resolve_hostport("no-such-host.invalid", 1)
    with pytest.raises(ValueError, match="bad port"):
        resolve_hostport("localhost:70000", 1)
    with pytest.raises(ValueError, match="names are not resolved"):
        parse_hostport("localhost:4501", 1)
