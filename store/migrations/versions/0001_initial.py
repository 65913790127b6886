"""Initial schema: credentials (one row per chain and role) and master key checks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", _PK, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("handle", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("secret_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("paper_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("prev_handle", sa.LargeBinary(), nullable=True),
        sa.Column("prev_generation", sa.BigInteger(), nullable=True),
        sa.Column("prev_key_id", sa.String(64), nullable=True),
        sa.Column("prev_secret_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("prev_paper_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("id_i", sa.LargeBinary(), nullable=False),
        sa.Column("id_r", sa.LargeBinary(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("full_ike_at", sa.Double(), nullable=False),
        sa.Column("last_used_at", sa.Double(), nullable=False),
        sa.Column("established_s", sa.Double(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("resumptions", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_credentials_role_handle", "credentials", ["role", "handle"], unique=True)
    op.create_index("ix_credentials_role_prev_handle", "credentials", ["role", "prev_handle"])
    op.create_index("ix_credentials_peers", "credentials", ["role", "id_i", "id_r"])
    op.create_index("ix_credentials_last_used", "credentials", ["last_used_at"])
    op.create_table(
        "master_keys",
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("check_blob", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("master_keys")
    op.drop_index("ix_credentials_last_used", "credentials")
    op.drop_index("ix_credentials_peers", "credentials")
    op.drop_index("ix_credentials_role_prev_handle", "credentials")
    op.drop_index("ix_credentials_role_handle", "credentials")
    op.drop_table("credentials")
