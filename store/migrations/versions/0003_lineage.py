"""Credential lineage: how each chain began and what its resumptions added (issue 22).

Revision ID: 0003
Revises: 0002

Existing rows get ``unknown``: nothing reliable is known about how their chain began
(spec 12.3 never guesses PQ).  Follows issue 20's ``0002`` (the install outbox).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(
            sa.Column("lineage", sa.String(16), nullable=False, server_default="unknown")
        )
        batch.add_column(sa.Column("prev_lineage", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("prev_lineage")
        batch.drop_column("lineage")
