"""A digest of each Submit batch's content: a batch id resent with other records is refused
instead of acknowledged as a duplicate. Batches stored before have none (NULL).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("submit_batch") as batch:
        batch.add_column(sa.Column("content_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("submit_batch") as batch:
        batch.drop_column("content_digest")
