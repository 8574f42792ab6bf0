"""The disputed mark of records (异议标注, 纠错 第十六条): which open error reports name them.

A record's ``open_disputes`` column (node.models.RecordRow) says whether it is disputed; it rides
on the read Verify, Compare and Query already do, so an undisputed record costs nothing more.
Only for the disputed records of one answer does :func:`disputes_of` read ``data_error``, once
per 500 keys. The reports themselves are node.quality's (node.quality._errors).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from node.records._types import Dispute
from node.storage import in_chunks

__all__ = ["MAX_DISPUTE_IDS", "OPEN_STATUSES", "disputes_of"]

ERRORS = SQLModel.metadata.tables["data_error"]
#: Statuses of a report that keep its record disputed.
OPEN_STATUSES = ("open", "correction_requested")
#: Report ids one mark names; ``Dispute.open_reports`` counts them all.
MAX_DISPUTE_IDS = 10


async def disputes_of(conn: AsyncConnection, code: str, keys: Sequence[str]) -> dict[str, Dispute]:
    """The marks of the records of ``code`` with ``keys`` that have open reports."""
    found: dict[str, list[tuple[str, str, dt.datetime]]] = {}
    for chunk in in_chunks(list(keys)):
        rows = await conn.execute(
            sa.select(ERRORS.c.record_key, ERRORS.c.id, ERRORS.c.item, ERRORS.c.reported_at)
            .where(
                ERRORS.c.resource_code == code,
                ERRORS.c.record_key.in_(chunk),
                ERRORS.c.status.in_(OPEN_STATUSES),
            )
            .order_by(ERRORS.c.reported_at, ERRORS.c.id)
        )
        for key, report_id, item, at in rows:
            found.setdefault(key, []).append((report_id, item, at))
    return {key: _dispute(reports) for key, reports in found.items()}


def _dispute(reports: list[tuple[str, str, dt.datetime]]) -> Dispute:
    since = reports[0][2]
    if since.tzinfo is None:  # SQLite hands naive UTC back on a Core read
        since = since.replace(tzinfo=dt.UTC)
    return Dispute(
        report_ids=tuple(r[0] for r in reports[:MAX_DISPUTE_IDS]),
        items=tuple(dict.fromkeys(r[1] for r in reports)),
        since=since,
        open_reports=len(reports),
    )
