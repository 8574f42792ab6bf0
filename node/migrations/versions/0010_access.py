"""Access control: 有条件共享 applications, grants, and idempotent access requests
(第二十五条, 第三十七条).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_application",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("applicant", sa.String(300), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("provider_code", sa.String(18), nullable=False),
        sa.Column("region", sa.String(6), nullable=False),
        sa.Column("probe", sa.Boolean, nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.Column("share_methods", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reviewer", sa.String(300), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_comment", sa.Text, nullable=False),
        sa.Column("grant_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_access_application_applicant", "access_application", ["applicant"])
    op.create_index("ix_access_application_resource_code", "access_application", ["resource_code"])
    op.create_index("ix_access_application_created_at", "access_application", ["created_at"])

    op.create_table(
        "access_grant",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "application_id",
            sa.String(64),
            sa.ForeignKey("access_application.id"),
            nullable=False,
        ),
        sa.Column("grantee", sa.String(300), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("provider_code", sa.String(18), nullable=False),
        sa.Column("region", sa.String(6), nullable=False),
        sa.Column("probe", sa.Boolean, nullable=False),
        sa.Column("items", sa.Text, nullable=False),
        sa.Column("clear_text_items", sa.Text, nullable=False),
        sa.Column("share_methods", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("justification", sa.Text, nullable=False),
        sa.Column("granted_by", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=False),
        sa.Column("revoked_by", sa.String(300), nullable=False),
    )
    # Every sharing call on a 有条件共享 resource reads its caller's grants for the resource.
    op.create_index(
        "ix_access_grant_grantee_resource", "access_grant", ["grantee", "resource_code"]
    )
    op.create_index("ix_access_grant_resource_code", "access_grant", ["resource_code"])
    op.create_index("ix_access_grant_created_at", "access_grant", ["created_at"])

    op.create_table(
        "access_request",
        sa.Column("caller", sa.String(300), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("access_request")
    op.drop_index("ix_access_grant_created_at", "access_grant")
    op.drop_index("ix_access_grant_resource_code", "access_grant")
    op.drop_index("ix_access_grant_grantee_resource", "access_grant")
    op.drop_table("access_grant")
    op.drop_index("ix_access_application_created_at", "access_application")
    op.drop_index("ix_access_application_resource_code", "access_application")
    op.drop_index("ix_access_application_applicant", "access_application")
    op.drop_table("access_application")
