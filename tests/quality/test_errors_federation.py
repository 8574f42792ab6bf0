"""Error reports across the federation (纠错, 第十六条), on SQLite and PostgreSQL: a 厦门 consumer
that received a 福州 record through routed calls reports it at 厦门; the report is made at 福州
(forwarded with a signed caller assertion, like Apply) and the owner decides for the original
caller; a third agency's Verify through the province carries the mark; the report is read back
through 厦门 by its id and resolved at 福州. Real nodes over real mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from govnode.v1 import access_pb2
from govnode.v1 import quality_pb2 as S

from node.audit import AuditLog
from node.catalog import ShareMethod, ShareType
from tests.quality.test_errors import KEY, quality, refusal, report, report_request
from tests.support.access import (
    ACME,
    ITEMS,
    notifications,
    query,
    refused,
    sharing,
    submit,
    verify,
)
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code
from tests.support.nodes import (
    FUZHOU,
    MARKET_REGULATION,
    XIAMEN,
    Federation,
    approve_change,
    entry_of,
    federation,
)

KIND = access_pb2.NotificationKind

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

OPEN_AT_FUZHOU = entry_of(
    FUZHOU,
    8,
    items=ITEMS,
    share_methods=(ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
    share_type=ShareType.UNCONDITIONAL,
)
CODE = OPEN_AT_FUZHOU.resource_code


@pytest.fixture
async def fed(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Federation]:
    async with federation(tmp_path, db_urls) as running:
        await running.fuzhou.register(OPEN_AT_FUZHOU)
        await submit(running.fuzhou.running, running.fuzhou.agency(), CODE, [ACME])
        await running.converged(1)
        yield running


async def test_a_xiamen_report_on_a_fuzhou_record_marks_it_for_every_node(
    fed: Federation,
) -> None:
    xiamen, fuzhou, province = fed.xiamen, fed.fuzhou, fed.province
    consumer = xiamen.setup.agency(agency_code(2, XIAMEN))
    consumer_uri = f"spiffe://{XIAMEN}.fujian.gov.cn/agency/{agency_code(2, XIAMEN)}"

    # Nothing received yet: refused at 福州 for the 厦门 caller, passed back through 厦门.
    code, message = await refusal(report(xiamen.running, consumer, code=CODE))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message.startswith(f"{consumer_uri} received nothing from resource {CODE}")

    # A routed Query (厦门 -> province -> 福州): 福州's audit record names the 厦门 caller.
    await sharing(xiamen.running, consumer, "Query", query(CODE))
    served = await AuditLog(fuzhou.running.db).query(resource_code=CODE, limit=50)
    assert (consumer_uri, "OK") in [(r.caller, r.outcome) for r in served]

    made = await report(xiamen.running, consumer, code=CODE)
    assert made.id.startswith(f"{FUZHOU}-E-")
    assert made.reporter.identity == consumer_uri
    # Stored at 福州 only.
    assert (
        await quality(fuzhou.running, fuzhou.agency(), "ListDataErrors", S.ListDataErrorsRequest())
    ).reports[0].id == made.id
    assert not (
        await quality(
            xiamen.running, xiamen.setup.authority(), "ListDataErrors", S.ListDataErrorsRequest()
        )
    ).reports

    # A third agency (at the province) verifies through the province: the mark is there.
    third = province.setup.agency(MARKET_REGULATION)
    answer = await sharing(province.running, third, "Verify", verify(CODE, qymc=ACME["qymc"]))
    assert answer.all_match and list(answer.dispute.report_ids) == [made.id]
    [row] = (await sharing(xiamen.running, consumer, "Query", query(CODE))).rows
    assert list(row.dispute.items) == ["qymc"]

    # Read back through 厦门, routed to 福州 by the id's region.
    got = await quality(xiamen.running, consumer, "GetDataError", S.GetDataErrorRequest(id=made.id))
    assert got.report == made
    # Another 厦门 agency may not read it (福州 decides, naming the original caller).
    other = xiamen.setup.agency(agency_code(3, XIAMEN))
    err = await refused(
        quality(xiamen.running, other, "GetDataError", S.GetDataErrorRequest(id=made.id))
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"agency/{agency_code(3, XIAMEN)} may not see error report {made.id}" in (
        err.details() or ""
    )
    # The reporter cannot resolve it, even through its own node.
    resolve = S.ResolveDataErrorRequest(
        id=made.id, resolution=S.DATA_ERROR_STATUS_REJECTED, note="名称无误"
    )
    err = await refused(quality(xiamen.running, consumer, "ResolveDataError", resolve))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED

    # 福州's provider confirms the stored value: the mark is gone everywhere.
    done = await quality(fuzhou.running, fuzhou.agency(), "ResolveDataError", resolve)
    assert done.report.status == S.DATA_ERROR_STATUS_REJECTED
    answer = await sharing(province.running, third, "Verify", verify(CODE, qymc=ACME["qymc"]))
    assert not answer.HasField("dispute")
    # A second report, sent again with one request id, makes one report.
    request = report_request(CODE, item="", key=KEY, request_id="again-1")
    first = await quality(xiamen.running, consumer, "ReportDataError", request)
    second = await quality(xiamen.running, consumer, "ReportDataError", request)
    assert first.report.id == second.report.id


async def test_a_correction_reaches_the_xiamen_consumer_at_its_own_node(fed: Federation) -> None:
    """The recall notice (纠错, 第十六条) crosses nodes: made at 福州 when its authority approves
    the correction, delivered through the province to 厦门, read there by the 厦门 agency that
    received the record while it was disputed, beside the outcome of its report."""
    xiamen, fuzhou = fed.xiamen, fed.fuzhou
    consumer = xiamen.setup.agency(agency_code(2, XIAMEN))
    await sharing(xiamen.running, consumer, "Query", query(CODE))
    made = await report(xiamen.running, consumer, code=CODE)
    # It reads the record again while it is disputed (the answer carries the mark).
    [row] = (await sharing(xiamen.running, consumer, "Query", query(CODE))).rows
    assert list(row.dispute.report_ids) == [made.id]

    corrected_name = "福州某某信息技术有限公司"
    asked = await quality(
        fuzhou.running,
        fuzhou.agency(),
        "ResolveDataError",
        S.ResolveDataErrorRequest(
            id=made.id,
            resolution=S.DATA_ERROR_STATUS_CORRECTED,
            note="经核实，名称已变更",
            corrected_values={**ACME, "qymc": corrected_name},
        ),
    )
    assert asked.report.status == S.DATA_ERROR_STATUS_CORRECTION_REQUESTED
    await approve_change(fuzhou.running, fuzhou.setup, asked.report.change_request_id)

    # At 厦门, its own node: the correction notice and the outcome, made at 福州.
    wanted = {KIND.NOTIFICATION_KIND_DATA_CORRECTED, KIND.NOTIFICATION_KIND_DATA_ERROR_RESOLVED}

    async def delivered() -> list[access_pb2.Notification]:
        for _ in range(150):  # bounded: 30 s at most
            found = [n for n in await notifications(xiamen.running, consumer) if n.kind in wanted]
            if {n.kind for n in found} == wanted:
                return found
            await asyncio.sleep(0.2)
        raise AssertionError(f"not delivered to 厦门 within 30 s: {found}")

    found = await delivered()
    assert all(n.data_error_id == made.id and n.origin_region == FUZHOU for n in found)
    assert all(n.resource_code == CODE for n in found)
    # Fetched again, the record has the corrected value, with no mark.
    [row] = (await sharing(xiamen.running, consumer, "Query", query(CODE))).rows
    assert row.record.values["qymc"] == corrected_name and not row.HasField("dispute")
