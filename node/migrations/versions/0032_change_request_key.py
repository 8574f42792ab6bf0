"""Submit's held records (issue 17): change requests looked up by (resource_code, record_key).

Each batch that changes stored records looks for a pending change request with the same new
values (node.records._hold), by the keys it holds; with only the resource_code index that read
every change request of the resource, once per 500 keys, so holding slowed as requests piled up.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_change_request_record", "change_request", ["resource_code", "record_key"])


def downgrade() -> None:
    op.drop_index("ix_change_request_record", table_name="change_request")
