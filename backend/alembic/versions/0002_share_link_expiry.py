"""share links may expire

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("share_links") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("share_links") as batch:
        batch.drop_column("expires_at")
