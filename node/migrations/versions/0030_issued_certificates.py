"""The operator console (issue: operator console): issued_certificate records every client
certificate this node's CA issues (agencies, operators, testers, portals, the authority), so
the console and `govnode certs list` can list them and warn before they expire.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "issued_certificate",
        sa.Column("serial_hex", sa.String(64), primary_key=True),
        sa.Column("identity", sa.String(300), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(300), nullable=False),
    )
    op.create_index(
        "ix_issued_certificate_not_after", "issued_certificate", ["not_after", "serial_hex"]
    )


def downgrade() -> None:
    op.drop_index("ix_issued_certificate_not_after", table_name="issued_certificate")
    op.drop_table("issued_certificate")
