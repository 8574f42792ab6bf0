"""Catalog exchange: how far each peer's catalog change feed has been applied.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per peer whose feed this node follows: the province keeps one per city (the
    # city's sequence), a city one for its province. Advanced in the same transaction as the
    # change it records, so a change is applied at most once and resumed after exactly.
    op.create_table(
        "feed_cursor",
        sa.Column("peer_region", sa.String(6), primary_key=True),
        sa.Column("last_applied_sequence", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feed_cursor")
