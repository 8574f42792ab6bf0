"""Signed checkpoints of the audit tree and witnessing (第三十九条; C2SP tlog-checkpoint,
tlog-witness): audit_checkpoint holds this node's checkpoints with their cosignatures,
audit_cosigner the keys of the witnesses that made them;
witness_state what this node last cosigned of each other node's log; witness_evidence the
checkpoints it refused because they contradict what it cosigned (a rollback or a fork).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("cosigned_by", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "audit_cosigner",
        sa.Column("identity", sa.String(300), primary_key=True),
        sa.Column("witness_name", sa.String(300), nullable=False),
        sa.Column("chain_pem", sa.Text, nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "witness_state",
        sa.Column("origin", sa.String(300), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "witness_evidence",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("origin", sa.String(300), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("cosigned", sa.Text, nullable=False),
    )
    op.create_index("ix_witness_evidence_origin", "witness_evidence", ["origin"])


def downgrade() -> None:
    op.drop_index("ix_witness_evidence_origin", "witness_evidence")
    op.drop_table("witness_evidence")
    op.drop_table("witness_state")
    op.drop_table("audit_cosigner")
    op.drop_table("audit_checkpoint")
