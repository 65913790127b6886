"""SQLAlchemy 2 ORM classes of the credential cache, mapped onto :mod:`store.tables`.

The schema is declared once, in Core (:mod:`store.tables`), because the store and the
``ikeresume resume`` start-up path must not pay for importing ``sqlalchemy.orm``.  These
classes are for ad-hoc ORM use and the alembic environment (``Base.metadata``); see
:mod:`store.tables` for what a row means.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase, Mapped

from store.tables import credentials, install_outbox, master_keys, metadata


class Base(DeclarativeBase):
    metadata = metadata


class CredentialRow(Base):
    __table__ = credentials

    id: Mapped[int]
    uid: Mapped[str]
    role: Mapped[str]
    mode: Mapped[str]
    handle: Mapped[bytes]
    generation: Mapped[int]
    key_id: Mapped[str]
    secret_wrapped: Mapped[bytes]
    paper_wrapped: Mapped[bytes | None]
    prev_handle: Mapped[bytes | None]
    prev_generation: Mapped[int | None]
    prev_key_id: Mapped[str | None]
    prev_secret_wrapped: Mapped[bytes | None]
    prev_paper_wrapped: Mapped[bytes | None]
    id_i: Mapped[bytes]
    id_r: Mapped[bytes]
    params: Mapped[str]
    full_ike_at: Mapped[float]
    last_used_at: Mapped[float]
    established_s: Mapped[float]
    bytes_total: Mapped[int]
    resumptions: Mapped[int]
    created_at: Mapped[float]
    lineage: Mapped[str]
    prev_lineage: Mapped[str | None]


class MasterKeyCheck(Base):
    """One wrapped known value per master key id: a wrong key is caught at open time."""

    __table__ = master_keys

    key_id: Mapped[str]
    check_blob: Mapped[bytes]
    created_at: Mapped[float]


class InstallOutboxRow(Base):
    """An SA pair committed with the ratchet and not yet known to be installed."""

    __table__ = install_outbox

    uid: Mapped[str]
    node: Mapped[str]
    handle: Mapped[bytes]
    generation: Mapped[int]
    committed_at: Mapped[float]
    expires_at: Mapped[float | None]
    sa: Mapped[str]
    key_id: Mapped[str]
    keys_wrapped: Mapped[bytes]
