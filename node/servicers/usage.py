"""AuditService.StreamUsageLog (使用日志推送给相应的数据生产应用单位, 第三十九条): a provider's
usage records with their proofs, and the node's signed statements of what they list.

Who may read which records, and what a statement says, is node.audit._usage's; here: the
cursor and the waiting. The stream goes in stretches. When a witness has cosigned a checkpoint
past what the caller's statements cover, the records of the stretch up to that checkpoint go
out (those after ``after_sequence``), then its statement; then the stream waits for the next
cosigned checkpoint (read at most once per poll interval for all streams, and inside
:func:`gateway.streams.idle`, so a stopping node ends a waiting stream at once with
UNAVAILABLE). Records therefore arrive about one ``[audit] checkpoint_seconds`` (plus the
witnesses' round trip) after they were written.

Resuming: ``after_sequence`` is the last record received (or the last statement's end, if
later) and ``statement_after`` the last statement's end; nothing is sent twice and the
statements stay contiguous. A cursor past the log's head is refused: it would silently skip
records written later.

Audit: the guard records the call; what was delivered is in its detail (``records``,
``statements``, ``sequence``), also when the caller cancels.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from govnode.v1 import audit_pb2

from gateway.auth import current_peer
from gateway.interceptors import add_audit_detail
from gateway.streams import idle
from node.audit import (
    AuditLog,
    CosignedWatch,
    SignedStatement,
    UsageLog,
    UsageRecord,
    cosigners,
    provided_resources,
)
from node.catalog import Catalog
from node.errors import InvalidArgument
from node.servicers.audit import record_to_proto
from node.storage import Database


class UsageServicer:
    """StreamUsageLog over the node's :class:`UsageLog`."""

    def __init__(
        self,
        catalog: Catalog,
        log: AuditLog,
        usage: UsageLog,
        watch: CosignedWatch,
        db: Database,
    ) -> None:
        self._catalog = catalog
        self._log = log
        self._usage = usage
        self._watch = watch
        self._db = db

    async def StreamUsageLog(
        self, request: audit_pb2.StreamUsageLogRequest, context: Any
    ) -> AsyncIterator[audit_pb2.UsageLogMessage]:
        caller = current_peer().identity
        codes = await provided_resources(self._catalog, caller, request.resource_code)
        after = request.after_sequence
        covered = request.statement_after if request.HasField("statement_after") else after
        if after < 0:
            raise InvalidArgument(f"after_sequence: must not be negative, got {after}")
        if not 0 <= covered <= after:
            raise InvalidArgument(
                f"statement_after: must be between 0 and after_sequence ({after}), got {covered}"
            )
        head, _ = await self._log.head()
        if after > head:
            raise InvalidArgument(
                f"after_sequence: {after} is past this node's audit log ({head} records); "
                "resume from the last sequence this node sent"
            )
        sent = {"records": 0, "statements": 0, "from_sequence": after, "sequence": after}
        try:
            while True:
                checkpoint = await self._watch.newest()
                if checkpoint is None or checkpoint.size <= covered:
                    with idle():  # caught up: a stopping node ends the stream here
                        await asyncio.sleep(self._watch.interval_s)
                    continue
                # Asked again per stretch: a resource registered meanwhile is included.
                codes = await provided_resources(self._catalog, caller, request.resource_code)
                keys = list((await cosigners(self._db)).values())
                async for item in self._usage.stretch(
                    provider=caller.uri,
                    resources=codes,
                    checkpoint=checkpoint,
                    cosigners=keys,
                    statement_after=covered,
                    after=after,
                ):
                    if isinstance(item, UsageRecord):
                        yield _record(item)
                        after = item.sequence
                        sent["records"] += 1
                    else:
                        yield _statement(item)
                        covered = item.statement.last
                        after = max(after, covered)
                        sent["statements"] += 1
                    sent["sequence"] = after
                add_audit_detail(**sent)
        except (asyncio.CancelledError, GeneratorExit):
            add_audit_detail(**sent)
            raise


def _record(item: UsageRecord) -> audit_pb2.UsageLogMessage:
    return audit_pb2.UsageLogMessage(
        record=audit_pb2.UsageRecord(record=record_to_proto(item.record), proof=item.proof)
    )


def _statement(item: SignedStatement) -> audit_pb2.UsageLogMessage:
    statement = item.statement
    return audit_pb2.UsageLogMessage(
        statement=audit_pb2.UsageStatement(
            first_sequence=statement.first,
            last_sequence=statement.last,
            sequences=list(item.sequences),
            checkpoint_size=statement.checkpoint_size,
            signed_note=item.note,
            certificate_chain_pem=item.chain_pem,
        )
    )
