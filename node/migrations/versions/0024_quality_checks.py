"""Data quality (第十五、十六条): quality_check keeps every check of every resource, its scores
and its report, the dated history the daily check adds to and drops are measured against.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quality_check",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("entry_version", sa.Integer, nullable=False),
        sa.Column("overall", sa.Double(), nullable=True),
        sa.Column("grade", sa.String(1), nullable=False),
        sa.Column("scores", sa.Text, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("checked_by", sa.String(300), nullable=False),
    )
    op.create_index("ix_quality_check_resource", "quality_check", ["resource_code", "checked_at"])


def downgrade() -> None:
    op.drop_index("ix_quality_check_resource", table_name="quality_check")
    op.drop_table("quality_check")
