"""Fixtures for the store suite: every repository test runs on SQLite AND PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.keys import Keyring, MasterKey
from store.policy import Policy
from store.repository import Store
from tests.facilities import PostgresCluster, postgres_cluster, postgres_url  # noqa: F401
from tests.store.helpers import make_credential  # noqa: F401

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "cache.db")
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([MasterKey.generate()])


@pytest.fixture
def open_store(db_url: str, keyring: Keyring) -> Iterator[Callable[..., Store]]:
    """Factory: open the parametrized database (default keyring/policy); closes them all."""
    opened: list[Store] = []

    def make(policy: Policy | None = None, kr: Keyring | None = keyring, **kw: object) -> Store:
        s = Store.open(db_url, kr, policy or Policy(), **kw)  # type: ignore[arg-type]
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[..., Store]) -> Store:
    return open_store()
