"""Structured logs refuse anything that could carry a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from resume.net import logs


def test_json_lines_and_refusals() -> None:
    buf = io.StringIO()
    logs.setup("info", "json", stream=buf)
    logs.event(logging.INFO, "resumed", peer="192.0.2.1", port=500, ok=True)
    rec = json.loads(buf.getvalue().splitlines()[-1])
    assert rec["event"] == "resumed" and rec["peer"] == "192.0.2.1" and rec["port"] == 500
    for bad in ({"handle": "ab"}, {"master_key": "x"}, {"secret_hint": 1}, {"data": b"\x01"}):
        with pytest.raises(ValueError):
            logs.event(logging.INFO, "oops", **bad)
    logs.event(logging.DEBUG, "hidden", x=1)  # below the level: not even formatted
    assert "hidden" not in buf.getvalue()
    logs.setup("debug", "text", stream=buf)
    logs.event(logging.DEBUG, "shown", x=1)
    assert buf.getvalue().rstrip().endswith("debug shown x=1")
