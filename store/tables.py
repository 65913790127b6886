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

``install_outbox`` is the responder's install intent, written in the SAME transaction as
the ratchet compare-and-set that accepted the exchange (spec 6.2.1): a responder killed
between its commit and the kernel install finds the SA pair here at start-up and installs
it.  It is a plain table so that any engine committing the ratchet (the native one
included) can insert into it in that transaction.  One row per accepted exchange:

=============  ==============  ==========================================================
column         type            meaning
=============  ==============  ==========================================================
uid            text(32), key   32 lowercase hex digits (16 random bytes), chosen by the
                               writer; the service deletes the row by it once installed
node           text(128)       the responder whose kernel installs it (``[install] node``,
                               default the host name): responders sharing PostgreSQL
                               replay only their own rows
handle         bytes           the consumed credential's handle (the CAS key) ...
generation     int64           ... and generation: the AAD binds the keys to both
committed_at   float64         the commit's ``now`` (POSIX seconds)
expires_at     float64 / NULL  ``committed_at + sa.lifetimes.hard_seconds``: the SA pair's
                               hard expiry; NULL when it has no time limit.  A row whose
                               expiry has passed is deleted at start-up, never installed
sa             text            the SA pair without its keys, as JSON: ``role``,
                               ``params`` (:meth:`SAParams.to_json`), ``lifetimes``,
                               ``reqid``, ``i_to_r_spi``, ``r_to_i_spi``.  Any JSON
                               spelling: the AAD covers the stored text byte for byte
key_id         text(64)        the master key that wrapped ``keys_wrapped``
keys_wrapped   bytes           ``nonce(12) || AES-256-GCM(master key, K, AAD)`` with
                               ``K = lp(i_to_r encr) | lp(i_to_r integ) | lp(r_to_i encr)
                               | lp(r_to_i integ)`` (``lp``: u16 big-endian length, then
                               the bytes) and ``AAD = record_aad("install", "responder",
                               "esp", handle, generation, B)``,
                               ``B = SHA-256("ikeresume-store install v1" 0x00 | u32(len
                               sa) | sa | [f64 big-endian expires_at, absent when NULL])``
=============  ==============  ==========================================================

(:mod:`store.keys` defines ``record_aad``; :mod:`store.outbox` encodes and decodes rows.)
No index besides the key: a row lives from a commit until its install finished (well under
a second), so the table holds about as many rows as installs in flight, and start-up reads
it whole.
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

install_outbox = Table(
    "install_outbox",
    metadata,
    Column("uid", String(32), primary_key=True),
    Column("node", String(128), nullable=False),
    Column("handle", LargeBinary, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("committed_at", Double, nullable=False),
    Column("expires_at", Double, nullable=True),
    Column("sa", Text, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("keys_wrapped", LargeBinary, nullable=False),
)

#: One wrapped known value per master key id: a wrong key is caught at open time.
master_keys = Table(
    "master_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("check_blob", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
)
