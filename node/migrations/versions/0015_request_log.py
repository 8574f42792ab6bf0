"""One request log for every write that carries a request_id (node.idempotency): request_log
replaces catalog_request (catalog writes, 0002) and access_request (applications, reviews,
revocations and change requests, 0010). Their rows are copied; an id both tables hold (an old
node did not check across them) keeps its earliest use, as a retry of it meant that one.

Operations get the names node.idempotency uses (``withdraw`` was both a catalog withdrawal and
an application's); the object an id acted on is recorded next to its outcome, so an id reused
on another object is refused rather than replayed. Applications and change requests made
before carried only the id they made; their object is read back from access_application and
change_request.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: catalog_request.operation -> request_log.operation
CATALOG_OPERATIONS = {
    "register": "register_resource",
    "update": "update_resource",
    "withdraw": "withdraw_resource",
}
#: access_request.operation -> request_log.operation
ACCESS_OPERATIONS = {
    "apply": "apply",
    "withdraw": "withdraw_application",
    "review": "review_application",
    "revoke": "revoke_grant",
    "change_request": "request_change",
    "change_review": "review_change",
}

_TEXT = sa.String()
request_log = sa.table(
    "request_log",
    *(sa.column(name, _TEXT) for name in ("caller", "request_id", "operation", "object_ref")),
    sa.column("outcome", _TEXT),
    sa.column("created_at"),
)
catalog_request = sa.table(
    "catalog_request",
    *(sa.column(name, _TEXT) for name in ("caller", "request_id", "operation", "resource_code")),
    sa.column("version", sa.Integer()),
    sa.column("created_at"),
)
access_request = sa.table(
    "access_request",
    *(sa.column(name, _TEXT) for name in ("caller", "request_id", "operation", "object_id")),
    sa.column("created_at"),
)
access_application = sa.table(
    "access_application", sa.column("id", _TEXT), sa.column("resource_code", _TEXT)
)
change_request = sa.table(
    "change_request",
    sa.column("id", _TEXT),
    sa.column("resource_code", _TEXT),
    sa.column("record_key", _TEXT),
)
LOG_COLUMNS = ["caller", "request_id", "operation", "object_ref", "outcome", "created_at"]


def _renamed(column: sa.ColumnElement[str], names: dict[str, str]) -> sa.ColumnElement[str]:
    return sa.case(names, value=column, else_=column)


def upgrade() -> None:
    op.create_table(
        "request_log",
        sa.Column("caller", sa.String(300), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("object_ref", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # An application's object is its resource; a change request's, the resource and, for a
    # record, the record's key (as node.governance._changes records them).
    a, c, log = access_request.c, catalog_request.c, request_log.c
    applied = sa.select(access_application.c.resource_code).where(
        access_application.c.id == a.object_id
    )
    ch = change_request.c
    changed = sa.select(
        sa.case(
            (ch.record_key == "", ch.resource_code),
            else_=ch.resource_code + " record " + ch.record_key,
        )
    ).where(ch.id == a.object_id)
    object_ref = sa.case(
        (a.operation == "apply", sa.func.coalesce(applied.scalar_subquery(), a.object_id)),
        (a.operation == "change_request", sa.func.coalesce(changed.scalar_subquery(), a.object_id)),
        else_=a.object_id,
    )
    op.execute(
        request_log.insert().from_select(
            LOG_COLUMNS,
            sa.select(
                a.caller,
                a.request_id,
                _renamed(a.operation, ACCESS_OPERATIONS),
                object_ref,
                a.object_id,
                a.created_at,
            ),
        )
    )
    # An id in both tables: its earlier use wins (the catalog write on a tie).
    op.execute(
        request_log.delete().where(
            sa.exists().where(
                c.caller == log.caller,
                c.request_id == log.request_id,
                c.created_at <= log.created_at,
            )
        )
    )
    kept = request_log.alias("kept")
    op.execute(
        request_log.insert().from_select(
            LOG_COLUMNS,
            sa.select(
                c.caller,
                c.request_id,
                _renamed(c.operation, CATALOG_OPERATIONS),
                c.resource_code,
                sa.cast(c.version, sa.String(20)),
                c.created_at,
            ).where(
                ~sa.exists().where(kept.c.caller == c.caller, kept.c.request_id == c.request_id)
            ),
        )
    )
    op.drop_table("catalog_request")
    op.drop_table("access_request")


def downgrade() -> None:
    op.create_table(
        "catalog_request",
        sa.Column("caller", sa.String(300), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("resource_code", sa.String(15), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "access_request",
        sa.Column("caller", sa.String(300), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    log = request_log.c
    to_catalog = {new: old for old, new in CATALOG_OPERATIONS.items()}
    to_access = {new: old for old, new in ACCESS_OPERATIONS.items()}
    op.execute(
        catalog_request.insert().from_select(
            ["caller", "request_id", "operation", "resource_code", "version", "created_at"],
            sa.select(
                log.caller,
                log.request_id,
                _renamed(log.operation, to_catalog),
                log.object_ref,
                sa.cast(log.outcome, sa.Integer()),
                log.created_at,
            ).where(log.operation.in_(to_catalog)),
        )
    )
    # access_request kept what a write made (its object_id), which is the outcome.
    op.execute(
        access_request.insert().from_select(
            ["caller", "request_id", "operation", "object_id", "created_at"],
            sa.select(
                log.caller,
                log.request_id,
                _renamed(log.operation, to_access),
                log.outcome,
                log.created_at,
            ).where(log.operation.in_(to_access)),
        )
    )
    op.drop_table("request_log")
