"""The Merkle tree over the audit log (第三十九条; RFC 6962, node.tlog): audit_tree holds its
size and frontier, audit_subtree its complete subtrees of 256 records and more. The leaves are
the records' chain hashes, so no record changes; a log written before this revision is taken
into the tree when the node starts (node.audit.AuditLog.start), not here, in bounded steps.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_tree",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_subtree",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_subtree")
    op.drop_table("audit_tree")
