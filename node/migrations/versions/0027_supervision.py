"""Supervision (第八、四十二条): compliance_report keeps each compliance report as generated,
with the audit head it was computed at; rectification_notice the notices (责令限期改正) and
their outcome (rectified, or 通报批评 past the deadline).

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "compliance_report",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agency_code", sa.String(18), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("generated_by", sa.String(300), nullable=False),
        sa.Column("head_size", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("window_first", sa.BigInteger, nullable=False),
        sa.Column("window_last", sa.BigInteger, nullable=False),
        sa.Column("figures", sa.Text, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_compliance_report_agency", "compliance_report", ["agency_code", "generated_at"]
    )
    op.create_table(
        "rectification_notice",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("agency_code", sa.String(18), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(300), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at_sequence", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_rectification_notice_agency", "rectification_notice", ["agency_code", "issued_at"]
    )
    op.create_index("ix_rectification_notice_status", "rectification_notice", ["status"])


def downgrade() -> None:
    op.drop_index("ix_rectification_notice_status", table_name="rectification_notice")
    op.drop_index("ix_rectification_notice_agency", table_name="rectification_notice")
    op.drop_table("rectification_notice")
    op.drop_index("ix_compliance_report_agency", table_name="compliance_report")
    op.drop_table("compliance_report")
