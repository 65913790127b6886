"""The credential cache's tables in SQLAlchemy Core (the alembic migrations mirror them).

The store itself only builds Core statements, so it imports these plain ``Table``
objects: declaring them through the ORM (:mod:`store.models`) pulls in
``sqlalchemy.orm``, about 0.15 s per process, paid by every ``ikeresume resume``.
:mod:`store.models` maps its ORM classes onto these same tables, so there is one schema.

One row is one resumption *chain* for one role: it starts with a full IKE
(:meth:`store.repository.Store.upsert_full_ike`) and its handle, generation and wrapped
secret are replaced in place by every accepted resumption (the ratchet), so a stolen copy
of an old generation is useless once the chain moved on.  Initiator rows also keep the
previous generation (``prev_*``) until the responder is known to have the new one: if
message 3 is lost the responder is still at g while the initiator is at g+1.

``lineage`` is how the chain began and what its resumptions added (``classical``,
``hybrid-pq``, ``ppk``, ``pq-resumed``, ``unknown``; :class:`resume.credential.Lineage`):
set with the full IKE, advanced by each ratchet commit.  Like the policy counters it is
not under the wrapping AAD (specs/cache-format.md says what that means).

Times are POSIX seconds as floats (what :class:`store.policy.Counters` holds), secrets are
only ever stored wrapped (see :mod:`store.keys`), SA parameters are canonical JSON text
(the wrapping AAD covers that exact text).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

_PK = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

credentials = Table(
    "credentials",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column("uid", String(32), unique=True, nullable=False),
    Column("role", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("handle", LargeBinary, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("secret_wrapped", LargeBinary, nullable=False),
    Column("paper_wrapped", LargeBinary, nullable=True),
    Column("prev_handle", LargeBinary, nullable=True),
    Column("prev_generation", BigInteger, nullable=True),
    Column("prev_key_id", String(64), nullable=True),
    Column("prev_secret_wrapped", LargeBinary, nullable=True),
    Column("prev_paper_wrapped", LargeBinary, nullable=True),
    Column("id_i", LargeBinary, nullable=False),
    Column("id_r", LargeBinary, nullable=False),
    Column("params", Text, nullable=False),
    Column("full_ike_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=False),
    Column("established_s", Double, nullable=False, default=0.0),
    Column("bytes_total", BigInteger, nullable=False, default=0),
    Column("resumptions", Integer, nullable=False, default=0),
    Column("created_at", Double, nullable=False),
    Column("lineage", String(16), nullable=False, default="unknown", server_default="unknown"),
    #: the lineage of the kept previous generation (initiator rows)
    Column("prev_lineage", String(16), nullable=True),
    Index("ix_credentials_role_handle", "role", "handle", unique=True),
    Index("ix_credentials_role_prev_handle", "role", "prev_handle"),
    Index("ix_credentials_peers", "role", "id_i", "id_r"),
    Index("ix_credentials_last_used", "last_used_at"),
)

#: One wrapped known value per master key id: a wrong key is caught at open time.
master_keys = Table(
    "master_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("check_blob", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
)
