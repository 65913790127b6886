"""The agent's request protocol on its UNIX stream socket: one line each way.

Request (ASCII, at most :data:`MAX_REQUEST` bytes with the newline)::

    resume <peer>\\n        run the exchange for the configured peer, install, answer
    ping\\n                 is the agent up (the client's cold-start probe)

Reply: ``<exit code> <JSON object>\\n``.  The exit code is what ``ikeresume-resume`` exits
with (``resume.exitcodes``: 0 resumed, 3 refused or timed out -- run a full IKE --, 4 no
such peer, 2 a malformed request); the JSON says what happened (outcome, SPIs, no keys).
Why a line and not JSON both ways: the native client stays a few hundred lines of std-only
Rust that never parses JSON, and the agent validates a request with one regular expression.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

MAX_REQUEST = 256
#: A peer name as the config's ``[peers.<name>]`` tables may spell it.
PEER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REQUEST = re.compile(rb"(resume) (" + PEER_NAME.pattern.encode() + rb")\n|(ping)\n")


class AgentRequestError(Exception):
    """A request the agent does not understand: answered with exit 2, counted, no effect."""


@dataclass(frozen=True)
class Request:
    verb: Literal["resume", "ping"]
    peer: str = ""


def parse_request_untrusted(line: bytes) -> Request:
    """One request line (newline included) -> :class:`Request`; only AgentRequestError."""
    if len(line) > MAX_REQUEST:
        raise AgentRequestError(f"request longer than {MAX_REQUEST} bytes")
    m = _REQUEST.fullmatch(line)
    if m is None:
        raise AgentRequestError("expected 'resume <peer>' or 'ping'")
    if m.group(3):
        return Request("ping")
    return Request("resume", m.group(2).decode())


def format_request(req: Request) -> bytes:
    return b"ping\n" if req.verb == "ping" else f"resume {req.peer}\n".encode()


def format_reply(exit_code: int, body: dict[str, Any]) -> bytes:
    return f"{exit_code} {json.dumps(body, separators=(',', ':'))}\n".encode()


def parse_reply(line: bytes) -> tuple[int, dict[str, Any]]:
    """For Python callers and tests; the agent is trusted by whoever connects to it."""
    code, _, body = line.decode().rstrip("\n").partition(" ")
    parsed: dict[str, Any] = json.loads(body)
    return int(code), parsed
