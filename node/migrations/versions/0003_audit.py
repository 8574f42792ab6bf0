"""The audit log (第三十九条): every call, accepted or refused, hash-chained.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per call. `sequence` is gap-free (handed out under a lock, in commit order);
    # `hash` = SHA-256 over the previous record's hash and this record's canonical fields, so
    # any change or deletion of a past record breaks the chain from there on.
    op.create_table(
        "audit_record",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.String(300), nullable=False),
        sa.Column("origin_node", sa.String(300), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_record_caller", "audit_record", ["caller"])
    op.create_index("ix_audit_record_resource_code", "audit_record", ["resource_code"])
    op.create_index("ix_audit_record_at", "audit_record", ["at"])
    op.create_index("ix_audit_record_request_id", "audit_record", ["request_id"])


def downgrade() -> None:
    op.drop_table("audit_record")
