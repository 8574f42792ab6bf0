"""Error correction (纠错, 第十六条): data_error keeps consumers' reports of wrong records;
record.open_disputes counts the open ones per record (the disputed mark Verify, Compare and
Query carry); notification.data_error_id names the report a notification is about.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_error",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("provider_code", sa.String(32), nullable=False),
        sa.Column("record_key", sa.String(1024), nullable=False),
        sa.Column("key_values", sa.Text, nullable=False),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("suggested_value", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("reporter", sa.String(300), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(300), nullable=False),
        sa.Column("resolution_note", sa.Text, nullable=False),
        sa.Column("change_request_id", sa.String(64), nullable=False),
        sa.Column("corrected_version", sa.Integer, nullable=False),
    )
    op.create_index("ix_data_error_record", "data_error", ["resource_code", "record_key", "status"])
    op.create_index("ix_data_error_reporter", "data_error", ["reporter", "reported_at"])
    op.create_index("ix_data_error_provider", "data_error", ["provider_code", "reported_at"])
    op.create_index("ix_data_error_change", "data_error", ["change_request_id"])
    with op.batch_alter_table("record") as batch:
        batch.add_column(sa.Column("open_disputes", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("notification") as batch:
        batch.add_column(
            sa.Column("data_error_id", sa.String(64), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("notification") as batch:
        batch.drop_column("data_error_id")
    with op.batch_alter_table("record") as batch:
        batch.drop_column("open_disputes")
    op.drop_index("ix_data_error_change", table_name="data_error")
    op.drop_index("ix_data_error_provider", table_name="data_error")
    op.drop_index("ix_data_error_reporter", table_name="data_error")
    op.drop_index("ix_data_error_record", table_name="data_error")
    op.drop_table("data_error")
