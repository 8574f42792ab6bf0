"""Initial schema: the catalog, its history and change feed, 一数一源 claims, revocations.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Migrations spell their types out instead of importing node.models: a migration must keep
# meaning what it meant when it was written, whatever the models become.
CODE = sa.String(15)  # resource code RRRRRR-C-NNNNNN
CREDIT_CODE = sa.String(18)  # 统一社会信用代码
REGION = sa.String(6)  # GB/T 2260 division code
UTC_TIME = sa.DateTime(timezone=True)  # always UTC (UTCDateTime in node.storage)


def upgrade() -> None:
    # Current state of each catalog entry; `body` is the whole entry as canonical JSON.
    op.create_table(
        "catalog_entry",
        sa.Column("resource_code", CODE, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("provider_code", CREDIT_CODE, nullable=False),
        sa.Column("provider_name", sa.String(200), nullable=False),
        sa.Column("region", REGION, nullable=False),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("industry_category", sa.String(100), nullable=False),
        sa.Column("share_type", sa.String(16), nullable=False),
        sa.Column("open_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_catalog_entry_provider_code", "catalog_entry", ["provider_code"])
    op.create_index("ix_catalog_entry_region", "catalog_entry", ["region"])

    # Every version ever written, v1 included; never deleted (第四十一条).
    op.create_table(
        "catalog_entry_version",
        sa.Column(
            "resource_code",
            CODE,
            sa.ForeignKey("catalog_entry.resource_code"),
            primary_key=True,
        ),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("changed_by", sa.String(300), nullable=False),
        sa.Column("changed_at", UTC_TIME, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )

    # 一数一源 (第十三条): the primary key allows one source per element per region.
    op.create_table(
        "element_source",
        sa.Column("region", REGION, primary_key=True),
        sa.Column("standard_element", sa.String(64), primary_key=True),
        sa.Column(
            "resource_code", CODE, sa.ForeignKey("catalog_entry.resource_code"), nullable=False
        ),
        sa.Column("item_name", sa.String(63), nullable=False),
    )
    op.create_index("ix_element_source_resource_code", "element_source", ["resource_code"])

    # The ordered change feed; sequence is assigned by the catalog under a lock, gap-free.
    op.create_table(
        "catalog_change",
        sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("resource_code", CODE, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("origin_region", REGION, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_catalog_change_resource_code", "catalog_change", ["resource_code"])

    op.create_table(
        "revoked_certificate",
        sa.Column("serial_hex", sa.String(64), primary_key=True),
        sa.Column("issuer_region", REGION, nullable=False),
        sa.Column("identity", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=False),
        sa.Column("revoked_by", sa.String(300), nullable=False),
    )

    op.create_table(
        "node_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "node_meta",
        "revoked_certificate",
        "catalog_change",
        "element_source",
        "catalog_entry_version",
        "catalog_entry",
    ):
        op.drop_table(table)
