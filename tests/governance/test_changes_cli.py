"""`govnode changes` (第四十一条), run as an operator runs it on a serving node's database:
records held from a Submit batch are listed by batch, shown before and after, approved in one
command, and refusals come back as one line."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from govnode.v1 import common_pb2, sharing_pb2, sharing_pb2_grpc

from node.app import RunningNode
from tests.support.access import OPEN, query, register, sharing, submit
from tests.support.cli import cli
from tests.support.nodes import CIVIL_AFFAIRS, PUBLIC_SECURITY, ProvinceSetup, channel

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Province = tuple[ProvinceSetup, RunningNode]
ACME = {"tyshxydm": "91350100MA00000001", "qymc": "福州某某科技有限公司", "fddbr": "王五"}
BETA = {"tyshxydm": "91350100MA00000029", "qymc": "福州乙公司", "fddbr": "赵六"}


async def submit_batch(
    node: RunningNode, files: object, batch_id: str, rows: list[dict[str, str]]
) -> sharing_pb2.SubmitAck:
    async def batch() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=OPEN.resource_code,
            batch_id=batch_id,
            records=[common_pb2.Record(values=r) for r in rows],
        )

    async with channel(node, files) as ch:  # type: ignore[arg-type]
        [ack] = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batch())]
    return ack


async def test_the_change_desk_approves_a_held_batch(province: Province) -> None:
    setup, node = province
    config = setup.config_path
    provider = setup.agency(PUBLIC_SECURITY)
    await register(node, provider, OPEN)
    await submit(node, provider, OPEN.resource_code, [ACME, BETA])
    ack = await submit_batch(
        node, provider, "daily-2", [ACME | {"fddbr": "林七"}, BETA | {"qymc": "福州丙公司"}]
    )
    assert (ack.accepted, ack.held) == (0, 2)
    ids = [h.change_request_id for h in ack.held_records]

    code, out, err = await cli("changes", "list", "--config", config, "--batch", "daily-2")
    assert code == 0, err
    assert all(i in out for i in ids) and "record update" in out and "batch daily-2" in out
    code, out, err = await cli("changes", "show", "--config", config, ids[0])
    assert code == 0, err
    assert "王五  →  林七" in out and "from batch:   daily-2" in out

    code, out, err = await cli("changes", "approve", "--config", config, "--batch", "daily-2")
    assert code == 0, err
    assert out.count("approved, version 2") == 2
    civil = setup.agency(CIVIL_AFFAIRS)
    [row] = (await sharing(node, civil, "Query", query(OPEN.resource_code))).rows
    assert row.record.values["qymc"] == ACME["qymc"] and row.version == 2
    code, out, err = await cli("changes", "list", "--config", config)
    assert code == 0 and "No change requests." in out, err
    code, out, err = await cli("changes", "list", "--config", config, "--status", "all", "--json")
    assert code == 0 and out.count('"status": "approved"') == 2, err

    # Refusals: one line each, naming what is wrong; nothing changes.
    code, out, err = await cli("changes", "approve", "--config", config, ids[0])
    assert code == 2 and "already approved" in out and "not approved" in err
    code, _, err = await cli("changes", "reject", "--config", config, ids[1], "--comment", " ")
    assert code == 2 and "--comment: required" in err and "Traceback" not in err
    code, _, err = await cli("changes", "approve", "--config", config, "--batch", "nope")
    assert code == 2 and "no pending change request comes from batch 'nope'" in err
    code, _, err = await cli("changes", "list", "--config", config, "--status", "maybe")
    assert code == 2 and "--status" in err

    # Each decision is in the audit log, the refused one too, with the authority as caller.
    cli_records = [r for r in await node.audit.query(limit=1000) if r.method.startswith("cli:")]
    decisions = [(r.method, r.outcome, r.detail["change_request"]) for r in cli_records]
    assert sorted(decisions[:2]) == sorted(("cli:changes/approve", "OK", i) for i in ids)
    assert decisions[2:] == [("cli:changes/approve", "FAILED_PRECONDITION", ids[0])]
    assert all(r.caller.endswith("/authority") and r.resource_code for r in cli_records)
