"""Notifications: what the node tells agencies and authorities (第二十五条, 第四十一条).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("recipient", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False, server_default=""),
        sa.Column("application_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("grant_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("change_request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("audit_sequence", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_notification_recipient", "notification", ["recipient", "id"])


def downgrade() -> None:
    op.drop_index("ix_notification_recipient", "notification")
    op.drop_table("notification")
