"""Routing and revocation propagation: assertion nonces, ordered revocations.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nonces of signed caller assertions this node accepted, kept until they expire: a second
    # use of one is a replay (state in the database, so every process of the node agrees).
    op.create_table(
        "assertion_nonce",
        sa.Column("nonce_hex", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_assertion_nonce_expires_at", "assertion_nonce", ["expires_at"])
    # Revocations in the order this node learned them (its own and those propagated from the
    # province), so peers can fetch "everything after N" and nothing is lost or applied twice.
    with op.batch_alter_table("revoked_certificate") as batch:
        batch.add_column(sa.Column("sequence", sa.BigInteger, nullable=True))
        batch.create_index("ix_revoked_certificate_sequence", ["sequence"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("revoked_certificate") as batch:
        batch.drop_index("ix_revoked_certificate_sequence")
        batch.drop_column("sequence")
    op.drop_table("assertion_nonce")
