"""The server secret: the key of the responder's stateless message-1 answers (cookies).

Why a file of its own on disk: every SO_REUSEPORT worker and every restart must answer a
message 3 whose message 2 another worker (or the previous process) computed, so the secret
is created once (0600, fsynced) and shared; the first of several racing workers wins.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from resume.net.config import ConfigError
from resume.responder import MIN_SERVER_SECRET


def load_server_secret(path: str | os.PathLike[str]) -> bytes:
    """Read the cookie key, creating it (0600, 32 random bytes) on first start."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        p.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(MIN_SERVER_SECRET)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker created it first: use theirs
            return load_server_secret(p)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return data
    except OSError as e:
        raise ConfigError(f"[server] server_secret_file {p}: {e.strerror or e}") from None
    if len(data) < MIN_SERVER_SECRET:
        raise ConfigError(
            f"[server] server_secret_file {p}: {len(data)} bytes, need at least {MIN_SERVER_SECRET}"
        )
    return data
