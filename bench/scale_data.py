"""Bulk data for ``python -m bench.scale``: millions of records and audit records, written fast
and streamed in batches (memory stays flat whatever the count).

**Records.** The rows Submit writes for a new record (node.records): its current version in
``record`` and version 1 in ``record_version`` (the change feed), numbered on from the
resource's ``data_version``, and the resource's ``resource_data`` (data version, record count),
in one transaction per batch through :meth:`Database.write`. Each record is
:func:`bench.dataset.record_values` put in canonical form by the catalog entry's own schema
(:func:`node.records.schema_for`) and keyed with :func:`node.records.key_text`, exactly as
Submit does; only Submit's per-batch checks are skipped: the lookup of stored versions (every
key is new by construction), the batch id row and the per-resource lock (the node is stopped
while the bench loads). A Verify of any loaded record finds it: the bench checks that.

**Audit records.** Appended through the node's own :class:`node.audit.AuditLog` with
``max_batch`` raised to the bench's batch size: the log's own writer hashes the chain, grows
the Merkle tree and writes the records in group commits, so ``govnode audit verify`` passes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession

from bench import dataset
from gateway.identity import Identity, Role
from node.audit import AuditEntry, AuditLog, Operation, request_digest
from node.catalog import ResourceEntry
from node.models import RecordRow, RecordVersionRow, ResourceDataRow
from node.records import key_text, schema_for
from node.storage import Database

RECORD = RecordRow.__table__  # type: ignore[attr-defined]
VERSION = RecordVersionRow.__table__  # type: ignore[attr-defined]
DATA = ResourceDataRow.__table__  # type: ignore[attr-defined]

#: Records or audit records per transaction.
BATCH = 10_000

Progress = Callable[[int, int], None]


def provider_identity(region: str, trust_domain: str) -> Identity:
    return Identity(region, trust_domain, Role.AGENCY, dataset.provider()[0])


async def load_records(
    db: Database,
    entry: ResourceEntry,
    submitted_by: str,
    first: int,
    count: int,
    *,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> None:
    """Write records ``first`` .. ``first + count - 1`` of ``entry`` as new records."""
    schema = schema_for(entry)
    code = entry.resource_code
    done = 0
    while done < count:
        n = min(batch, count - done)
        start = first + done
        rows: list[tuple[str, dict[str, str]]] = []
        for i in range(start, start + n):
            values, problems = schema.clean(dataset.record_values(i))
            if problems:
                raise ValueError(f"record {i} is not valid for {code}: {problems[:2]}")
            rows.append((key_text([values[k] for k in schema.key_items]), values))
        batch_id = f"scale-{start}-{n}"
        at = dt.datetime.now(dt.UTC)

        async def txn(
            session: AsyncSession, rows: Any = rows, batch_id: str = batch_id, at: Any = at
        ) -> None:
            conn = await session.connection()
            state = (
                await conn.execute(sa.select(DATA).where(DATA.c.resource_code == code))
            ).first()
            version = state.data_version if state is not None else 0
            stored = state.record_count if state is not None else 0
            records = []
            versions = []
            for seq, (key, values) in enumerate(rows, start=version + 1):
                records.append(
                    {
                        "resource_code": code,
                        "record_key": key,
                        "item_values": values,
                        "version": 1,
                        "data_seq": seq,
                        "updated_at": at,
                        "temporary": False,
                        "deleted": False,
                        "open_disputes": 0,
                    }
                )
                versions.append(
                    {
                        "resource_code": code,
                        "data_seq": seq,
                        "record_key": key,
                        "kind": "upsert",
                        "version": 1,
                        "item_values": values,
                        "batch_id": batch_id,
                        "submitted_by": submitted_by,
                        "at": at,
                    }
                )
            await conn.execute(sa.insert(RECORD), records)
            await conn.execute(sa.insert(VERSION), versions)
            data = {
                "data_version": version + len(rows),
                "last_aggregated_at": at,
                "last_batch_id": batch_id,
                "record_count": stored + len(rows),
            }
            if state is None:
                await conn.execute(sa.insert(DATA).values(resource_code=code, **data))
            else:
                await conn.execute(
                    sa.update(DATA).where(DATA.c.resource_code == code).values(**data)
                )

        await db.write("bench.scale_records", txn)
        done += n
        if progress is not None:
            progress(done, count)


def audit_entry(i: int, caller: str) -> AuditEntry:
    """A Verify as the node records it (the request's digest, not its values)."""
    return AuditEntry(
        caller=caller,
        method="/govnode.v1.SharingService/Verify",
        operation=Operation.COMPARE,
        outcome="OK",
        request_digest=request_digest(dataset.credit_code(i).encode()),
        origin_node="",
        resource_code=dataset.RESOURCE_CODE,
        request_id=f"scale-{i:010d}",
        detail={"found": 1, "all_match": 1},
    )


async def load_audit(
    db: Database,
    caller: str,
    count: int,
    *,
    batch: int = BATCH,
    seconds: float = 3600.0,
    progress: Progress | None = None,
) -> int:
    """Append ``count`` audit records through the node's audit log (bounded by ``seconds``);
    returns how many were appended."""
    log = AuditLog(db, max_batch=batch, max_delay_s=0.0)
    await log.start()
    deadline = time.monotonic() + seconds
    done = 0
    try:
        while done < count and time.monotonic() < deadline:
            n = min(batch, count - done)
            await asyncio.gather(*(log.append(audit_entry(done + j, caller)) for j in range(n)))
            done += n
            if progress is not None:
                progress(done, count)
    finally:
        await log.close()
    return done
