"""SharingService's streams: 数据交换 Exchange (第二十六条) and 主动推送 Subscribe (第二十七条).

Each call looks the resource up. One held by another node is forwarded to its owner
(node.federation._routing, like Compare, but *open-ended*: a caller without a deadline is
forwarded without one), and its messages are relayed as they come: the owner decides access for
the original caller, issues and checks the resume tokens, and its refusals come back with its
status and message; cancelling the call here cancels it at every node on the path. On a
resource held here, the call asks node.sharing.AccessDecider for the caller's permit (with the
items an Exchange asks for), then reads pages from node.records._exchange. The permit is asked
for again before every page, so a withdrawal, or a grant that is revoked or ends, stops a
running stream at its next page (also a routed one: the owner stops it).

Streams never hold a transaction while the client reads: each page is one short read, and
Subscribe waits for the next commit on :meth:`node.records.Records.changed` (with a bounded
fallback wait, for writes by other processes and for the catalog or grants changing). Its
changes come from the feed every subscriber shares (node.records._feed): the subscribers woken
by one commit read it from the database once between them, and one that has caught up learns
that nothing follows without a read. A change is shaped for its subscriber only once the one
before it has been taken by the transport (the guard writes each message and asks for the
next only then, gateway.streams), so a stream whose consumer does not read does nothing until
its stall timeout ends it.

Audit: the guard audits every call, also one the caller cancels or whose deadline passes (the
usual end of a Subscribe: outcome CANCELLED); the counts delivered until then are in its
detail (第三十九条: nothing leaves the node unrecorded). A node relaying a stream records how
many messages it relayed (``relayed``); every node on the path audits under the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from google.protobuf.message import Message
from govnode.v1 import common_pb2, sharing_pb2

from gateway.auth import current_peer
from gateway.identity import Identity
from gateway.interceptors import add_audit_detail, current_request_id
from gateway.streams import idle
from node.catalog import Catalog, ResourceEntry, ShareMethod
from node.errors import FailedPrecondition, InvalidArgument
from node.federation import Router
from node.records import ChangeKind, FeedChange, FeedShaper, Records, RecordsExchange
from node.servicers.sharing import dispute_message, note_disputes_ids
from node.sharing import AccessDecider, Permit, Touches

log = structlog.get_logger(__name__)

#: Longest a Subscribe waits for a commit signal before it reads the feed (and asks for
#: access) again anyway.
SUBSCRIBE_WAIT_S = 30.0

_KINDS = {
    ChangeKind.UPSERT: sharing_pb2.RECORD_CHANGE_KIND_UPSERT,
    ChangeKind.DELETE: sharing_pb2.RECORD_CHANGE_KIND_DELETE,
}


class SharingStreamServicer:
    """Exchange and Subscribe: served on the resources this node holds, forwarded by
    ``router`` to the owner for the others (without a router, those are refused)."""

    def __init__(
        self,
        catalog: Catalog,
        records: Records,
        exchange: RecordsExchange,
        decider: AccessDecider,
        router: Router | None = None,
        *,
        wait_s: float = SUBSCRIBE_WAIT_S,
    ) -> None:
        self._catalog = catalog
        self._records = records
        self._exchange = exchange
        self._decider = decider
        self._router = router
        self._wait_s = wait_s

    def _is_local(self, entry: ResourceEntry) -> bool:
        return not entry.region or entry.region == self._records.region

    async def _entry(self, code: str, method: str) -> ResourceEntry:
        """The catalog entry of a resource; one held by another node only with a router."""
        if not code:
            raise InvalidArgument("resource_code is required")
        entry = await self._catalog.get(code)
        if self._router is None and not self._is_local(entry):
            raise FailedPrecondition(
                f"resource {code} is held by the node of region {entry.region}: call {method} "
                f"on that node; this node ({self._records.region}) forwards no calls"
            )
        return entry

    async def _decide(
        self,
        caller: Identity,
        entry: ResourceEntry,
        method: ShareMethod,
        touches: Touches = Touches(),  # noqa: B008 - frozen, so one shared default is safe
    ) -> Permit:
        return await self._decider.decide(caller, entry, method, touches, current_request_id())

    async def _relay(
        self, entry: ResourceEntry, method: str, request: Message, response_type: Any, context: Any
    ) -> AsyncIterator[Any]:
        """Forward the call to the owner and pass its messages on; closing this generator (the
        caller cancelled) cancels the forwarded call."""
        assert self._router is not None
        relayed = 0
        messages = self._router.stream(
            entry, method, request, response_type, context, open_ended=True
        )
        try:
            while True:
                with idle():  # waiting on the owner: a stopping node ends the stream here
                    try:
                        message = await anext(messages)
                    except StopAsyncIteration:
                        return
                relayed += 1
                yield message
        finally:
            add_audit_detail(relayed=relayed, routed_to=entry.region)

    async def Exchange(
        self, request: sharing_pb2.ExchangeRequest, context: Any
    ) -> AsyncIterator[sharing_pb2.ExchangeChunk]:
        caller = current_peer().identity
        code = request.resource_code
        entry = await self._entry(code, "Exchange")
        if not self._is_local(entry):
            async for chunk in self._relay(
                entry, "Exchange", request, sharing_pb2.ExchangeChunk, context
            ):
                yield chunk
            return
        touches = Touches(read=tuple(request.items))
        permit = await self._decide(caller, entry, ShareMethod.EXCHANGE, touches)
        position = await self._exchange.begin(
            entry,
            caller.uri,
            since=request.since_version,
            items=list(request.items),
            resume_token=request.resume_token,
        )
        sent = {"records": 0, "deleted": 0, "chunks": 0, "snapshot_version": position.snapshot}
        disputed: dict[str, None] = {}  # the open reports of the records sent (纠错)
        async with self._audited_if_interrupted("Exchange", caller, request, sent):
            while True:
                if sent["chunks"]:  # asked again per chunk: a withdrawal or revocation stops it
                    entry = await self._entry(code, "Exchange")
                    permit = await self._decide(caller, entry, ShareMethod.EXCHANGE, touches)
                chunk = await self._exchange.chunk(
                    entry,
                    position,
                    visible_items=permit.visible_items,
                    clear_items=permit.clear_items,
                )
                position = chunk.position
                sent["records"] += len(chunk.records)
                sent["deleted"] += len(chunk.deleted)
                sent["chunks"] += 1
                add_audit_detail(**sent)
                if chunk.disputes:
                    for _, dispute in chunk.disputes:
                        disputed.update(dict.fromkeys(dispute.report_ids))
                    note_disputes_ids(disputed)
                out = sharing_pb2.ExchangeChunk(
                    records=[common_pb2.Record(values=r) for r in chunk.records],
                    deleted=[common_pb2.Record(values=k) for k in chunk.deleted],
                    resume_token=chunk.resume_token,
                    snapshot_version=position.snapshot,
                    last=chunk.last,
                )
                for index, dispute in chunk.disputes:
                    out.disputes[index].CopyFrom(dispute_message(dispute))
                yield out
                if chunk.last:
                    return

    async def Subscribe(
        self, request: sharing_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[sharing_pb2.RecordChange]:
        caller = current_peer().identity
        code = request.resource_code
        entry = await self._entry(code, "Subscribe")
        if not self._is_local(entry):
            async for change in self._relay(
                entry, "Subscribe", request, sharing_pb2.RecordChange, context
            ):
                yield change
            return
        await self._decide(caller, entry, ShareMethod.SUBSCRIBE)
        after = await self._exchange.check_after(entry, request.after_sequence)
        feed = self._exchange.feed
        # reads: how often this subscription read the change feed from the database itself
        # (the feed is shared: a read serves every subscriber waiting for the same changes).
        sent = {"records": 0, "from_sequence": after, "sequence": after, "reads": 0}
        disputed: dict[str, None] = {}  # the open reports of the records sent (纠错)
        # Changes committed by another process of this node are not signalled here: when the
        # database has more than the caller has seen, the first read must look.
        recheck = after < await self._exchange.data_version(code)
        async with self._audited_if_interrupted("Subscribe", caller, request, sent):
            while True:
                # Taken before reading, so a commit between the read and the wait wakes it.
                signals = (self._records.changed(code), self._catalog.changed())
                rows, read = await feed.after(code, after, recheck=recheck)
                sent["reads"] += read
                if rows:
                    # Asked again before every page: a withdrawal or revocation stops it.
                    entry = await self._entry(code, "Subscribe")
                    permit = await self._decide(caller, entry, ShareMethod.SUBSCRIBE)
                    shaper = FeedShaper(
                        entry, visible_items=permit.visible_items, clear_items=permit.clear_items
                    )
                    # The marks are the records' now (the feed is shared and kept; marks are
                    # not): one indexed read per page (纠错).
                    marks = await self._records.disputes(
                        code, list(dict.fromkeys(r.record_key for r in rows))
                    )
                    if marks:
                        for mark in marks.values():
                            disputed.update(dict.fromkeys(mark.report_ids))
                        note_disputes_ids(disputed)
                    # Each change is shaped only once the one before it has been taken.
                    for row in rows:
                        change = _change(shaper.change(row))
                        if row.record_key in marks:
                            change.dispute.CopyFrom(dispute_message(marks[row.record_key]))
                        yield change
                        after = row.sequence
                        sent["records"] += 1
                        sent["sequence"] = after
                    add_audit_detail(**sent)
                    recheck = False
                    continue  # read on until caught up
                with idle():  # caught up: a stopping node ends the stream here (gateway.streams)
                    woken = await _first_set(signals, self._wait_time(context))
                # Timed out: look in the database (other processes' writes) and ask for access
                # again (a grant may have ended); the catalog changed: ask for access again.
                recheck = woken is None
                if woken is not signals[0]:
                    entry = await self._entry(code, "Subscribe")
                    await self._decide(caller, entry, ShareMethod.SUBSCRIBE)

    def _wait_time(self, context: Any) -> float:
        remaining = context.time_remaining() if context is not None else None
        if remaining is None:
            return self._wait_s
        # The deadline cancels the call; until then, never spin.
        return min(self._wait_s, max(float(remaining), 0.05))

    @contextlib.asynccontextmanager
    async def _audited_if_interrupted(
        self, method: str, caller: Identity, request: Message, sent: dict[str, int]
    ) -> AsyncIterator[None]:
        """Put what was delivered into the call's audit detail if the stream is interrupted;
        the guard writes the CANCELLED record (gateway.interceptors)."""
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            add_audit_detail(**sent)
            raise


def _change(change: FeedChange) -> sharing_pb2.RecordChange:
    out = sharing_pb2.RecordChange(
        sequence=change.sequence,
        kind=_KINDS.get(change.kind, sharing_pb2.RECORD_CHANGE_KIND_UNSPECIFIED),
        key=change.key,
        version=change.version,
    )
    if change.values is not None:
        out.record.CopyFrom(common_pb2.Record(values=change.values))
    out.at.FromDatetime(change.at)
    return out


async def _first_set(events: tuple[asyncio.Event, ...], within_s: float) -> asyncio.Event | None:
    """Wait until one of ``events`` is set (returned), or ``within_s`` seconds (None)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return next((event for event in events if event.is_set()), None)
