"""Approved changes and deletions (第四十一条): change requests, and records marked deleted.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A deleted record keeps its row (pointing at its "delete" version); reads pass it by.
    with op.batch_alter_table("record") as batch:
        batch.add_column(
            sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "change_request",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requester", sa.String(300), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("provider_code", sa.String(18), nullable=False),
        sa.Column("probe", sa.Boolean, nullable=False),
        sa.Column("record_key", sa.String(1024), nullable=False),
        sa.Column("key_values", sa.Text, nullable=False),
        sa.Column("new_values", sa.Text, nullable=False),
        sa.Column("new_entry", sa.Text, nullable=False),
        sa.Column("previous_values", sa.Text, nullable=False),
        sa.Column("previous_version", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewer", sa.String(300), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_comment", sa.Text, nullable=False),
        sa.Column("applied_version", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_change_request_requester", "change_request", ["requester"])
    op.create_index("ix_change_request_resource_code", "change_request", ["resource_code"])
    op.create_index("ix_change_request_created_at", "change_request", ["created_at"])


def downgrade() -> None:
    op.drop_table("change_request")
    with op.batch_alter_table("record") as batch:
        batch.drop_column("deleted")
