"""Aggregation updates held for approval (未经批准不得更改和删除政务数据, 第四十一条).

Submit (汇聚) stores records with new keys at once. A record whose key is already stored with
other values would change government data, so, unless the node's authority has given standing
approval to aggregation updates (``[governance] submit_updates = "apply"``), it is not written:
it becomes a pending change request (node.governance._changes) in the batch's own transaction, and
the record's new values apply when the authority approves it. The batch's ack names the change
request of each held record.

A daily full refresh would otherwise file the same pending change again every day: a held record
whose exact new values already wait in a pending request from Submit reuses that request.

The authority is told once per batch (not once per record) with a CHANGE_REQUESTED notification.
Written with SQLAlchemy Core inside the Submit transaction; no grpc.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import node.models  # noqa: F401  (registers change_request on SQLModel.metadata)
from node.catalog import ResourceEntry
from node.records._lookup import rows_by_key
from node.sharing import NotificationKind, Notifications

CHANGE = SQLModel.metadata.tables["change_request"]
ARTICLE = "第四十一条"


@dataclass(frozen=True, slots=True)
class HeldWrite:
    """A valid record of a batch that would change a stored record."""

    index: int  # position in SubmitBatch.records
    record_key: str
    values: dict[str, str]
    previous_version: int
    previous_values: dict[str, str]  # {} when the stored record was deleted with approval


def _dumps(values: dict[str, str]) -> str:
    return json.dumps(values, ensure_ascii=False, sort_keys=True)


async def hold_writes(
    conn: AsyncConnection,
    session: AsyncSession,
    *,
    entry: ResourceEntry,
    region: str,
    key_items: Sequence[str],
    held: list[HeldWrite],
    requester: str,
    batch_id: str,
    authority: str,
    at: dt.datetime,
) -> list[tuple[int, str]]:
    """File a pending change request for each held record (or reuse an identical pending one);
    returns (index in the batch, change request id) for each, in batch order. Ids carry the
    node's ``region``, as every change request id does."""
    code = entry.resource_code
    keys = list(dict.fromkeys(h.record_key for h in held))
    waiting: dict[tuple[str, str], str] = {}
    pending = await rows_by_key(
        conn,
        CHANGE,
        code,
        keys,
        (CHANGE.c.id, CHANGE.c.new_values),
        CHANGE.c.status == "pending",
        CHANGE.c.target == "record",
        CHANGE.c.batch_id != "",
    )
    for record_key, change_id, new_values in pending:
        waiting.setdefault((record_key, new_values), change_id)
    reason = f"汇聚批次 {batch_id} 提交的值与现有记录不同，批准后生效（{ARTICLE}）"
    rows_out: list[dict[str, object]] = []
    ids: list[tuple[int, str]] = []
    for write in held:
        new_values = _dumps(write.values)
        change_id = waiting.get((write.record_key, new_values))
        if change_id is None:
            change_id = f"{region}-C-{os.urandom(8).hex()}"
            waiting[(write.record_key, new_values)] = change_id
            rows_out.append(
                {
                    "id": change_id,
                    "status": "pending",
                    "requester": requester,
                    "target": "record",
                    "action": "update",
                    "resource_code": code,
                    "provider_code": entry.provider_code,
                    "probe": entry.probe,
                    "record_key": write.record_key,
                    "key_values": _dumps({name: write.values[name] for name in key_items}),
                    "new_values": new_values,
                    "new_entry": "",
                    "previous_values": _dumps(write.previous_values),
                    "previous_version": write.previous_version,
                    "reason": reason,
                    "request_id": "",
                    "batch_id": batch_id,
                    "created_at": at,
                    "reviewer": "",
                    "review_comment": "",
                    "applied_version": 0,
                }
            )
        ids.append((write.index, change_id))
    if rows_out:
        await conn.execute(sa.insert(CHANGE), rows_out)
        Notifications.add(
            session,
            authority,
            NotificationKind.CHANGE_REQUESTED,
            f"{requester} 的汇聚批次 {batch_id} 中有 {len(rows_out)} 条记录与资源 {code}"
            f"（{entry.name}）的现有记录不同，已转为变更申请，待数据管理机构批准（{ARTICLE}）；"
            f"首个申请号 {rows_out[0]['id']}",
            at=at,
            resource_code=code,
            change_request_id=str(rows_out[0]["id"]),
        )
    return ids
