"""Real components for tests, shared by every package's tests.

``PostgresCluster`` starts a private PostgreSQL server (Debian's packaged binaries) with
``initdb`` in a temporary directory, listening only on a unix socket inside that directory,
so tests never touch a system server or the network.  PostgreSQL refuses to run as root:
under root the server runs as the ``postgres`` user and the directory is handed to it.

Use from any test module::

    from tests.facilities import postgres_cluster, postgres_url  # noqa: F401 (fixtures)

    def test_x(postgres_url: str) -> None: ...   # a fresh, empty database per test

Missing binaries call :func:`tests.conftest.require`: skip on a dev box, fail under CI.
``fsync`` is off by default (tests check logic and process crashes, not power loss; it
makes CREATE DATABASE cheap); benchmarks pass ``fsync=True`` to measure durable commits.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

PG_USER = "postgres"


def find_pg_bindir() -> Path | None:
    """Directory holding initdb/pg_ctl (newest Debian version first), or None."""
    for env in ("IKERESUME_PG_BINDIR",):
        if os.environ.get(env):
            return Path(os.environ[env])
    cands = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for c in cands:
        if Path(c, "initdb").exists() and Path(c, "pg_ctl").exists():
            return Path(c)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def pg_available() -> tuple[bool, str]:
    bindir = find_pg_bindir()
    if bindir is None:
        return False, "PostgreSQL server binaries (Debian package postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return False, "a 'postgres' system user to run PostgreSQL as (root cannot)"
    return True, str(bindir)


class PostgresCluster:
    """A throw-away PostgreSQL server on a unix socket in a private temporary directory."""

    def __init__(self, *, fsync: bool = False, base: str | None = None) -> None:
        ok, what = pg_available()
        if not ok:
            raise RuntimeError(f"needs {what}")
        self.bindir = Path(what)
        self.fsync = fsync
        self.base = Path(tempfile.mkdtemp(prefix="ikeresume-pg-", dir=base))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self._as_pg = os.geteuid() == 0
        self._counter = itertools.count()
        self.started = False

    # -- process plumbing ------------------------------------------------------------
    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self._as_pg:
            kw = {"user": PG_USER, "group": PG_USER, "extra_groups": []}
        return subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
            **kw,
        )

    @property
    def socket_dir(self) -> str:
        return str(self.base)

    def start(self) -> PostgresCluster:
        if self._as_pg:
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.base.chmod(0o700)
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
            self._pg_ctl_start()
        except subprocess.CalledProcessError as e:
            log = self.log.read_text() if self.log.exists() else ""
            self.cleanup()
            raise RuntimeError(f"PostgreSQL failed to start: {e.stderr}\n{log}") from None
        self.started = True
        return self

    def _pg_ctl_start(self) -> None:
        opts = (
            f"-k {self.base} -c listen_addresses='' -c fsync={'on' if self.fsync else 'off'}"
            " -c max_connections=200 -c shared_buffers=64MB"
        )
        if not self.fsync:
            # WAL still reaches the kernel at every commit (synchronous_commit stays on), so
            # a server killed with -m immediate keeps every acknowledged commit.
            opts += " -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "-t", "60", "start")  # fmt: skip

    def start_again(self) -> None:
        """Restart a stopped server on the same data (outage tests)."""
        self._pg_ctl_start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- databases -------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of a database on this server."""
        return f"postgresql+psycopg://{PG_USER}@/{dbname}?host={self.socket_dir}"

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} user={PG_USER} dbname={dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        name = name or f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One private PostgreSQL server for the whole test session."""
    ok, what = pg_available()
    require(ok, what)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """URL of a fresh, empty database on the session's private server."""
    return postgres_cluster.create_database()
