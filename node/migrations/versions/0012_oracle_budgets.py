"""Verify oracle protection in the database (第三十七条): rate limits, daily quotas and the
enumeration watch shared by every process of a node and kept across restarts.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Instants are epoch seconds (double): the bucket's arithmetic runs in SQL on both backends.
    op.create_table(
        "oracle_budget",
        sa.Column("caller", sa.String(300), primary_key=True),
        sa.Column("resource_code", sa.String(15), primary_key=True),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("refilled_at", sa.Double, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("used_today", sa.Integer, nullable=False),
        sa.Column("quiet_until", sa.Double, nullable=False),
    )
    # Pruning finds the rows of past days without reading the whole table.
    op.create_index("ix_oracle_budget_day", "oracle_budget", ["day"])
    op.create_table(
        "oracle_key",
        sa.Column("caller", sa.String(300), primary_key=True),
        sa.Column("resource_code", sa.String(15), primary_key=True),
        sa.Column("digest", sa.String(24), primary_key=True),
        sa.Column("seen_at", sa.Double, nullable=False),
    )
    op.create_index("ix_oracle_key_seen_at", "oracle_key", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_oracle_key_seen_at", "oracle_key")
    op.drop_table("oracle_key")
    op.drop_index("ix_oracle_budget_day", "oracle_budget")
    op.drop_table("oracle_budget")
