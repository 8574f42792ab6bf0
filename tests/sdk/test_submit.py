"""The SDK's Submit helper across a node restart: the batches not acknowledged when the node
stopped are sent again once it is back, and the node applies each batch once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from govnode.v1 import sharing_pb2
from govnode_client import Client, batches_of

from node.app import RunningNode
from tests.support.nodes import MARKET_REGULATION, make_province, start
from tests.support.sdk import company
from tests.support.sharing import COMPANIES, agency, register

BATCHES, PER_BATCH = 12, 10
#: The batch before which the node is stopped and started again.
RESTART_BEFORE = 6


async def test_submit_resends_unacknowledged_batches_after_a_restart(tmp_path: Path) -> None:
    setup = make_province(tmp_path / "province", f"sqlite+aiosqlite:///{tmp_path / 'node.db'}")
    running: list[RunningNode] = [await start(setup)]
    await register(setup, running[0], COMPANIES)
    records = [company(n) for n in range(BATCHES * PER_BATCH)]
    batches = list(
        batches_of(COMPANIES.resource_code, records, batch_size=PER_BATCH, batch_prefix="run-1")
    )
    restarted = asyncio.Event()

    async def source() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        """The batches, with the node stopped (SIGTERM-like: its streams end UNAVAILABLE) and
        started again on the same port and database half-way, while earlier batches may
        still be unacknowledged on the stream that the stop ends."""
        for n, batch in enumerate(batches):
            if n == RESTART_BEFORE:
                await running[0].stop(grace=1)
                running[0] = await start(setup)
                restarted.set()
            yield batch

    bundle = agency(setup, MARKET_REGULATION).key.parent
    try:
        async with Client.from_bundle(bundle, endpoint=running[0].address) as gn:
            result = await gn.submit(source(), window=4)
        assert restarted.is_set()
        assert result.reconnects >= 1
        # Every batch acknowledged once, in the helper's result; every record stored once.
        assert sorted(ack.batch_id for ack in result.acks) == sorted(b.batch_id for b in batches)
        assert result.accepted == len(records)  # a duplicate's ack repeats the first counts
        node = running[0]
        [[stored]] = await node.db.fetch_all(
            "SELECT count(*) FROM record WHERE resource_code = :c", {"c": COMPANIES.resource_code}
        )
        assert stored == len(records)
        # The node applied each batch once: one non-duplicate Submit audit record per batch id.
        rows = await node.db.fetch_all(
            "SELECT detail, message FROM audit_record WHERE method LIKE '%/Submit' "
            "AND outcome = 'OK' AND detail LIKE '%batch_id%'",
            {},
        )
        first_applications: dict[str, int] = {}
        for detail, message in rows:
            batch_id = json.loads(detail)["batch_id"]
            if not message:  # a duplicate's record says so in its message
                first_applications[batch_id] = first_applications.get(batch_id, 0) + 1
        assert first_applications == {b.batch_id: 1 for b in batches}
        # Sent again on the new stream: the helper's count, and the node's duplicate acks.
        # The stop came with batches sent and not acknowledged (the source is read again only
        # once the window of 4 has room, so the stream held 3 or 4 when it ended): the helper
        # sent them again; any the node had committed before it stopped came back duplicate.
        duplicates = sum(1 for ack in result.acks if ack.duplicate)
        assert result.resent >= 1
        assert duplicates <= result.resent
    finally:
        await running[0].stop(grace=0)
