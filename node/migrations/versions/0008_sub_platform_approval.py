"""Sub-platform approvals: a city that passed the conformance suite, and its signed report.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # At the province: every approval (第三十一条) with the report it rests on, never deleted.
    op.create_table(
        "sub_platform_approval",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("region", sa.String(6), nullable=False),
        sa.Column("node_identity", sa.String(300), nullable=False),
        sa.Column("tester_identity", sa.String(300), nullable=False),
        sa.Column("suite_version", sa.String(20), nullable=False),
        sa.Column("report_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sub_platform_approval_region", "sub_platform_approval", ["region"])


def downgrade() -> None:
    op.drop_index("ix_sub_platform_approval_region", "sub_platform_approval")
    op.drop_table("sub_platform_approval")
