"""SQLAlchemy 2 models of the credential cache (the alembic migrations mirror them).

One row is one resumption *chain* for one role: it starts with a full IKE
(:meth:`store.repository.Store.upsert_full_ike`) and its handle, generation and wrapped
secret are replaced in place by every accepted resumption (the ratchet), so a stolen copy
of an old generation is useless once the chain moved on.  Initiator rows also keep the
previous generation (``prev_*``) until the responder is known to have the new one: if
message 3 is lost the responder is still at g while the initiator is at g+1.

Times are POSIX seconds as floats (what :class:`store.policy.Counters` holds), secrets are
only ever stored wrapped (see :mod:`store.keys`), SA parameters are canonical JSON text
(the wrapping AAD covers that exact text).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

_PK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class CredentialRow(Base):
    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(_PK, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(32), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    handle: Mapped[bytes] = mapped_column(LargeBinary)
    generation: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(64))
    secret_wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    paper_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    prev_handle: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    prev_generation: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    prev_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_secret_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    prev_paper_wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    id_i: Mapped[bytes] = mapped_column(LargeBinary)
    id_r: Mapped[bytes] = mapped_column(LargeBinary)
    params: Mapped[str] = mapped_column(Text)
    full_ike_at: Mapped[float] = mapped_column(Double)
    last_used_at: Mapped[float] = mapped_column(Double)
    established_s: Mapped[float] = mapped_column(Double, default=0.0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    resumptions: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_credentials_role_handle", "role", "handle", unique=True),
        Index("ix_credentials_role_prev_handle", "role", "prev_handle"),
        Index("ix_credentials_peers", "role", "id_i", "id_r"),
        Index("ix_credentials_last_used", "last_used_at"),
    )


class MasterKeyCheck(Base):
    """One wrapped known value per master key id: a wrong key is caught at open time."""

    __tablename__ = "master_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    check_blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Double)
