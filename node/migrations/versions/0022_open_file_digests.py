"""Open data downloads (第三十二条): open_file_digest caches the size and SHA-256 of each file a
served version is downloaded as (format, byte order mark, and the item set: a 授权开放 key's file
holds only its approved items), so that a download sends them and its receipt before the file
and can resume at a byte offset.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "open_file_digest",
        sa.Column("resource_code", sa.String(15), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("format", sa.String(8), primary_key=True),
        sa.Column("bom", sa.Boolean, primary_key=True),
        sa.Column("columns", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("open_file_digest")
