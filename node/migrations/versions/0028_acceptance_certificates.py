"""Project acceptance certificates (第九、二十二条): acceptance_certificate keeps every
certificate the node issued, the signed file as given with what it certifies.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "acceptance_certificate",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("agency_code", sa.String(18), nullable=False),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("resources", sa.Text, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(300), nullable=False),
        sa.Column("audit_size", sa.BigInteger, nullable=False),
        sa.Column("audit_root", sa.String(64), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_acceptance_certificate_agency",
        "acceptance_certificate",
        ["agency_code", "issued_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_acceptance_certificate_agency", table_name="acceptance_certificate")
    op.drop_table("acceptance_certificate")
