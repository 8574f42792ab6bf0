"""Restored nodes and new log origins (第三十九条): audit_restore marks a database that
`govnode backup restore` put back, so the node asks its witnesses what they cosigned before it
signs a checkpoint; audit_epoch holds each new origin the log went on under when records the
witnesses had cosigned were lost, with the witnessed checkpoint that shows the gap.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_epoch",
        sa.Column("epoch", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("first_sequence", sa.BigInteger, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_origin", sa.String(300), nullable=False),
        sa.Column("previous_size", sa.BigInteger, nullable=False),
        sa.Column("previous_root", sa.String(64), nullable=False),
        sa.Column("previous_note", sa.Text, nullable=False),
        sa.Column("restored_size", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_restore",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("restored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("audit_restore")
    op.drop_table("audit_epoch")
