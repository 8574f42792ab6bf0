"""Approved changes and deletions of single records (第四十一条), written inside the approval's
transaction (node.governance._changes).

A change is a version like any Submit writes: the next ``data_seq`` of the resource under its
submit lock, so Exchange and Subscribe see it in order. A deletion is a version of kind
"delete" with no values, and the ``record`` row stays, marked ``deleted`` and pointing at that
version: Verify, Compare and Query pass it by, Exchange reports it among the deletions, and the
versions before it stay in ``record_version``. Nothing is removed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.errors import FailedPrecondition, NotFound
from node.records._exchange import ChangeKind
from node.records._submit import DATA, RECORD, VERSION
from node.storage import Database

#: A version an approved change request wrote carries "change:<id>" where Submit puts its batch.
CHANGE_BATCH_PREFIX = "change:"


@dataclass(frozen=True)
class CurrentRecord:
    version: int
    values: dict[str, str]
    deleted: bool


async def current_record(conn: AsyncConnection, code: str, record_key: str) -> CurrentRecord | None:
    """The current row of one record (deleted or not), or None if it was never written."""
    row = (
        await conn.execute(
            sa.select(RECORD.c.version, RECORD.c.item_values, RECORD.c.deleted).where(
                RECORD.c.resource_code == code, RECORD.c.record_key == record_key
            )
        )
    ).first()
    if row is None:
        return None
    return CurrentRecord(row.version, _values(row.item_values), bool(row.deleted))


async def write_record_change(
    db: Database,
    conn: AsyncConnection,
    code: str,
    record_key: str,
    values: dict[str, str] | None,
    *,
    expected_version: int,
    by: str,
    change_id: str,
    at: dt.datetime,
) -> int:
    """Write the approved new ``values`` of a record (None: its deletion) as its next version;
    returns that version. Refused if the record is no longer at ``expected_version`` (changed
    since the request was made) or is deleted already. New values for a record that was
    deleted (at ``expected_version``) bring it back: a held Submit of its key asked for that."""
    await db.lock(conn, f"records.submit:{code}")  # data_seq stays gap-free, as in Submit
    current = await current_record(conn, code, record_key)
    if current is None:
        raise NotFound(f"resource {code} has no record with this key")
    if current.deleted and (values is None or current.version != expected_version):
        raise FailedPrecondition(
            f"the record of resource {code} was deleted since the request was made; make a new "
            "request if it is needed"
        )
    if current.version != expected_version:
        raise FailedPrecondition(
            f"the record of resource {code} changed since the request was made (version "
            f"{expected_version}, now {current.version}); the provider must ask again for the "
            "change against the current version"
        )
    state = (await conn.execute(sa.select(DATA).where(DATA.c.resource_code == code))).one()
    seq = state.data_version + 1
    version = current.version + 1
    kind = ChangeKind.UPSERT if values is not None else ChangeKind.DELETE
    await conn.execute(
        sa.insert(VERSION).values(
            resource_code=code,
            data_seq=seq,
            record_key=record_key,
            kind=kind,
            version=version,
            item_values=values or {},
            batch_id=f"{CHANGE_BATCH_PREFIX}{change_id}",
            submitted_by=by,
            at=at,
        )
    )
    await conn.execute(
        sa.update(RECORD)
        .where(RECORD.c.resource_code == code, RECORD.c.record_key == record_key)
        .values(
            item_values=values or {},
            version=version,
            data_seq=seq,
            updated_at=at,
            temporary=False,
            deleted=values is None,
        )
    )
    await conn.execute(
        sa.update(DATA)
        .where(DATA.c.resource_code == code)
        .values(
            data_version=seq,
            record_count=state.record_count - (values is None) + (current.deleted),
        )
    )
    return version


def _values(stored: Any) -> dict[str, str]:
    if isinstance(stored, str):  # JSON text, should a driver hand it over unparsed
        stored = json.loads(stored)
    return dict(stored or {})
