"""The catalog feed's rows stop copying their entry's body (issue 17).

Every change of the catalog feed names the version it made (resource_code, version), and that
version's row in catalog_entry_version holds the same canonical JSON; versions are never
deleted. A change written from now on leaves ``body`` NULL and the feed reads the version's
body instead (node.catalog.Catalog.changes_of), so storing an entry writes its JSON twice
(current row, version) rather than three times: a city taking in a province catalog of
100,000 entries writes about 230 MB less. The copies rows written before hold are dropped
where their version's row holds the same text (the space is reused by later writes); a row
whose version is missing or differs (never, unless the database was edited by hand) keeps
its own, which the feed then reads.

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0033"
down_revision: str | None = "0032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("catalog_change") as batch:
        batch.alter_column("body", existing_type=sa.Text, nullable=True)
    op.execute(
        "UPDATE catalog_change SET body = NULL WHERE EXISTS (SELECT 1 FROM "
        "catalog_entry_version v WHERE v.resource_code = catalog_change.resource_code "
        "AND v.version = catalog_change.version AND v.body = catalog_change.body)"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE catalog_change SET body = (SELECT v.body FROM catalog_entry_version v "
        "WHERE v.resource_code = catalog_change.resource_code "
        "AND v.version = catalog_change.version) WHERE body IS NULL"
    )
    with op.batch_alter_table("catalog_change") as batch:
        batch.alter_column("body", existing_type=sa.Text, nullable=False)
