"""Federation: one-time invitations and the cities that joined (第十九条).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An invitation province ops mint for one city. Only the SHA-256 of the token is stored:
    # the token itself is shown once and travels to the city operator out of band.
    op.create_table(
        "invitation",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(6), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_invitation_region", "invitation", ["region"])
    # A city sub-platform known to the province: joined online or admitted by file.
    op.create_table(
        "federation_member",
        sa.Column("region", sa.String(6), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(300), nullable=False),
        sa.Column("ca_serial_hex", sa.String(64), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_sub_platform", sa.Boolean, nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("federation_member")
    op.drop_table("invitation")
