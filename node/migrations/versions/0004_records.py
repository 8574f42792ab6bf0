"""Records (汇聚, 第二十一条): current records, every version, aggregation state, batches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CODE = sa.String(15)  # resource code RRRRRR-C-NNNNNN
RECORD_KEY = sa.String(1024)  # canonical JSON array of the key items' values
BATCH_ID = sa.String(128)
IDENTITY = sa.String(300)  # SPIFFE ID of the submitting agency
UTC_TIME = sa.DateTime(timezone=True)  # always UTC (UTCDateTime in node.storage)


def upgrade() -> None:
    # The current version of each record; values are the canonical strings, as JSON.
    op.create_table(
        "record",
        sa.Column("resource_code", CODE, primary_key=True),
        sa.Column("record_key", RECORD_KEY, primary_key=True),
        sa.Column("item_values", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("data_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("temporary", sa.Boolean, nullable=False),
    )

    # Every version ever written, in data_seq order per resource (gap-free, assigned under the
    # resource's submit lock): history (第四十一条) and the change feed of Exchange/Subscribe.
    op.create_table(
        "record_version",
        sa.Column("resource_code", CODE, primary_key=True),
        sa.Column("data_seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_key", RECORD_KEY, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("item_values", sa.JSON, nullable=False),
        sa.Column("batch_id", BATCH_ID, nullable=False),
        sa.Column("submitted_by", IDENTITY, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        # Set when written under a temporary collection (临时采集, 第十二条).
        sa.Column("temporary_reason", sa.Text, nullable=True),
        sa.Column("temporary_expires_at", UTC_TIME, nullable=True),
        sa.Column("temporary_items", sa.JSON, nullable=True),
    )
    op.create_index("ix_record_version_key", "record_version", ["resource_code", "record_key"])

    # Aggregation state per resource (第二十一条).
    op.create_table(
        "resource_data",
        sa.Column("resource_code", CODE, primary_key=True),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("last_aggregated_at", UTC_TIME, nullable=True),
        sa.Column("last_batch_id", BATCH_ID, nullable=False),
        sa.Column("record_count", sa.BigInteger, nullable=False),
    )

    # One row per applied batch: the outcome a resend of the same batch_id gets back.
    op.create_table(
        "submit_batch",
        sa.Column("resource_code", CODE, primary_key=True),
        sa.Column("batch_id", BATCH_ID, primary_key=True),
        sa.Column("submitted_by", IDENTITY, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("rejections", sa.Text, nullable=False),
        sa.Column("temporary", sa.Text, nullable=True),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
    )


def downgrade() -> None:
    for table in ("submit_batch", "resource_data", "record_version", "record"):
        op.drop_table(table)
