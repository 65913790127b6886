"""``serve --check`` and message 3's affinity with X25519 (spec 5.5).

With X25519 the responder's per-tick key exists only in the process that answered
message 1; another process refuses that exchange's message 3.  The check warns whenever
X25519 is allowed and message 3 could reach another process (several workers, a store
other responders share) unless ``[server] message3_affinity`` says how the deployment
handles it.  The behaviour the warning is about is shown for real by
``test_service.py::test_restart_between_messages_with_x25519_costs_one_retry``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resume.cli import EXIT_CONFIG, EXIT_OK, main
from resume.net import config as C

PG = "postgresql+psycopg://ikr@db.example/ikeresume"


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str) -> tuple[int, str]:
    p = tmp_path / "serve.toml"
    p.write_text(toml)
    rc = main(["serve", "--config", str(p), "--check"])
    out = capsys.readouterr()
    return rc, out.err + out.out


@pytest.mark.parametrize(
    ("toml", "warned"),
    [
        ("", False),  # one worker, a SQLite file: message 3 can only come back here
        ("[server]\nworkers = 4\n", True),
        (f"[store]\nurl = '{PG}'\n", True),
        (f"[server]\nworkers = 2\n[store]\nurl = '{PG}'\n", True),
        ("[server]\nworkers = 4\nmessage3_affinity = 'same-process'\n", False),
        (f"[server]\nmessage3_affinity = 'accept-retry'\n[store]\nurl = '{PG}'\n", False),
        ("[server]\nworkers = 4\n[protocol]\nallow_x25519 = false\n", False),
        ("[store]\nurl = 'sqlite:////var/lib/ikeresume/cache.db'\n", False),
    ],
)
def test_check_warns_when_message3_may_miss_its_x25519_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, warned: bool
) -> None:
    rc, text = _check(tmp_path, capsys, toml)
    assert rc == EXIT_OK  # a warning, not a refusal: the deployment may be fine
    assert ("warning:" in text) == warned, text
    if warned:
        assert "message3_affinity" in text and "spec 5.5" in text
        assert "(1 warning)" in text


def test_affinity_value_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, text = _check(tmp_path, capsys, "[server]\nmessage3_affinity = 'sticky'\n")
    assert rc == EXIT_CONFIG and "same-process" in text


def test_the_example_says_what_x25519_does_to_a_restart() -> None:
    """The example config once promised that keeping the server secret lets an exchange
    whose message 2 came from a previous process complete; with X25519 it does not."""
    text = C.EXAMPLE.read_text()
    before = text[: text.index("server_secret_file =")].rstrip("\n").splitlines()
    comment = []
    while before and before[-1].startswith("#"):
        comment.insert(0, before.pop())
    secret_doc = " ".join(comment)
    assert "X25519" in secret_doc and "refused" in secret_doc, secret_doc
    assert "message3_affinity" in text
    cfg = C.load_config(C.EXAMPLE)
    assert C.affinity_warning(cfg, C.responder_config(cfg.protocol)) is None
