"""Maintenance mode outside the console (issue: maintenance mode survives restarts):
maintenance_mode holds the switch in one row, so a restarted node comes up in maintenance if it
was on, and ``govnode maintenance`` and every process of the node see the same switch.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "maintenance_mode",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("switched_by", sa.String(300), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    # The one row every switch updates (off, never switched).
    op.bulk_insert(
        table,
        [{"id": 1, "active": False, "since": None, "switched_by": "", "reason": "", "version": 0}],
    )


def downgrade() -> None:
    op.drop_table("maintenance_mode")
