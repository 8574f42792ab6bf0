"""Pruning the audit log past its retention (第三十九条, at least three years): audit_pruned says
where the live log starts once an operator pruned archived segments (govnode audit prune), and
the newest time among the pruned records, and
the hash of the last pruned record, which the live chain is checked from. One row, or none
while nothing was pruned. The tree (audit_tree, audit_subtree) is kept whole, so old proofs and
checkpoints still verify.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_pruned",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("first_live", sa.BigInteger, nullable=False),
        sa.Column("anchor_hash", sa.String(64), nullable=False),
        sa.Column("segment_records", sa.BigInteger, nullable=False),
        sa.Column("newest_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_pruned")
