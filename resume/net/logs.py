"""Structured logs for the service: one JSON object (or one key=value line) per event.

Why a helper rather than f-strings at call sites: log lines are an exfiltration channel, so
the only way to log a field is through :func:`event`, which refuses bytes (keys, secrets,
handles are bytes) and anything whose name says it is secret.  Peer addresses are logged
(operators need them); credential handles are not (they would link a user's sessions).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "ikeresume"
_FORBIDDEN = ("key", "secret", "handle", "psk", "token_bytes", "nonce", "mac")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        return json.dumps(out, separators=(",", ":"), default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = getattr(record, "fields", None) or {}
        kv = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{ts} {record.levelname.lower()} {record.getMessage()} {kv}".rstrip()


def setup(level: str = "info", fmt: str = "json", stream: Any = None) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    logger.addHandler(h)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def _check(name: str, value: Any) -> Any:
    low = name.lower()
    if any(f in low for f in _FORBIDDEN):
        raise ValueError(f"refusing to log field {name!r}: it may hold a secret")
    if isinstance(value, bytes | bytearray | memoryview):
        raise ValueError(f"refusing to log raw bytes in field {name!r}")
    return value


def event(level: int, name: str, **fields: Any) -> None:
    """Log ``name`` with ``fields`` (str/int/float/bool/None only; never bytes or secrets)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.isEnabledFor(level):
        return
    checked = {k: _check(k, v) for k, v in fields.items()}
    logger.log(level, name, extra={"fields": checked})
