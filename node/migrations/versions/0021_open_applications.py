"""授权开放 (第三十二至三十五条): open_application holds applications for 授权开放 data and
their review; open_key the key an approval issues (only its HMAC), with its scope, period and
revocation; open_use_report the holders' periodic use reports.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "open_application",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("provider_code", sa.String(18), nullable=False),
        sa.Column("entity_type", sa.String(24), nullable=False),
        sa.Column("entity_code", sa.String(18), nullable=False),
        sa.Column("entity_name", sa.String(200), nullable=False),
        sa.Column("contact", sa.String(200), nullable=False),
        sa.Column("domestic_control_declared", sa.Boolean, nullable=False),
        sa.Column("evidence_reference", sa.String(200), nullable=False),
        sa.Column("to_confirm", sa.String(300), nullable=False),
        sa.Column("use", sa.String(16), nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("submitted_by", sa.String(300), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewer", sa.String(300), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_comment", sa.Text, nullable=False),
        sa.Column("competitive_selection_ref", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_open_application_resource_code", "open_application", ["resource_code"])
    op.create_index("ix_open_application_entity_code", "open_application", ["entity_code"])
    op.create_index("ix_open_application_created_at", "open_application", ["created_at"])
    op.create_table(
        "open_key",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column(
            "application_id",
            sa.String(64),
            sa.ForeignKey("open_application.id"),
            nullable=False,
        ),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("provider_code", sa.String(18), nullable=False),
        sa.Column("entity_code", sa.String(18), nullable=False),
        sa.Column("entity_name", sa.String(200), nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.Column("use", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(300), nullable=False),
        sa.Column("revoke_reason", sa.Text, nullable=False),
    )
    op.create_index("ix_open_key_resource_code", "open_key", ["resource_code"])
    op.create_table(
        "open_use_report",
        sa.Column("key_id", sa.String(32), sa.ForeignKey("open_key.key_id"), primary_key=True),
        sa.Column("period", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("application_id", sa.String(64), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("filed_by", sa.String(300), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_open_use_report_filed_at", "open_use_report", ["filed_at"])


def downgrade() -> None:
    op.drop_index("ix_open_use_report_filed_at", table_name="open_use_report")
    op.drop_table("open_use_report")
    op.drop_index("ix_open_key_resource_code", table_name="open_key")
    op.drop_table("open_key")
    op.drop_index("ix_open_application_created_at", table_name="open_application")
    op.drop_index("ix_open_application_entity_code", table_name="open_application")
    op.drop_index("ix_open_application_resource_code", table_name="open_application")
    op.drop_table("open_application")
