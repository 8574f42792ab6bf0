"""Open data (第二十九条): open_dataset says which catalog entries the authority published and
which version of their data is served; open_version keeps each publication attempt with its
de-identification report; open_row holds the de-identified snapshot rows with their class key
over the quasi-identifiers, which the k-anonymity check groups by.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "open_dataset",
        sa.Column("resource_code", sa.String(15), primary_key=True),
        sa.Column("published", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("changed_by", sa.String(300), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "open_version",
        sa.Column("resource_code", sa.String(15), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("entry_version", sa.Integer, nullable=False),
        sa.Column("data_version", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("made_by", sa.String(300), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
    )
    op.create_table(
        "open_row",
        sa.Column("resource_code", sa.String(15), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("row", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("class_key", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_open_row_class", "open_row", ["resource_code", "version", "class_key"])


def downgrade() -> None:
    op.drop_index("ix_open_row_class", table_name="open_row")
    op.drop_table("open_row")
    op.drop_table("open_version")
    op.drop_table("open_dataset")
