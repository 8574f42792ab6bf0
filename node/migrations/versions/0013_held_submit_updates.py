"""Aggregation updates held for approval (第四十一条): the batch a held record change came
from, and the held records of each Submit batch.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("change_request") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(128), nullable=False, server_default=""))
    with op.batch_alter_table("submit_batch") as batch:
        batch.add_column(sa.Column("held", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submit_batch") as batch:
        batch.drop_column("held")
    with op.batch_alter_table("change_request") as batch:
        batch.drop_column("batch_id")
