"""Notifications across nodes: a notification another node made and delivered here keeps its
origin (region, id), stored once; notice_cursor keeps how far this node has delivered its own
notifications for each other region.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LOCAL_ONLY = sa.text("origin_region != ''")


def upgrade() -> None:
    with op.batch_alter_table("notification") as batch:
        batch.add_column(
            sa.Column("origin_region", sa.String(6), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("origin_id", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index(
        "ux_notification_origin",
        "notification",
        ["origin_region", "origin_id"],
        unique=True,
        sqlite_where=_LOCAL_ONLY,
        postgresql_where=_LOCAL_ONLY,
    )
    op.create_table(
        "notice_cursor",
        sa.Column("destination_region", sa.String(6), primary_key=True),
        sa.Column("last_delivered_id", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notice_cursor")
    op.drop_index("ux_notification_origin", table_name="notification")
    with op.batch_alter_table("notification") as batch:
        batch.drop_column("origin_id")
        batch.drop_column("origin_region")
