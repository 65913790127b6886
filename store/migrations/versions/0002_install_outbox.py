"""The responder's install outbox: SA pairs committed with the ratchet, not yet installed.

Revision ID: 0002
Revises: 0001

See store/tables.py for the column layout (the native engine inserts into it too).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "install_outbox",
        sa.Column("uid", sa.String(32), primary_key=True),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("handle", sa.LargeBinary(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("committed_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Column("sa", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("keys_wrapped", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("install_outbox")
