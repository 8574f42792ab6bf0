"""Rectification notices (责令限期改正 → 通报批评, 第四十二条) end to end over a real province node
with mutual TLS on loopback, on SQLite and PostgreSQL: the authority orders agencies to rectify
by a deadline, the agencies are notified, the node's own watch closes the notices whose figure
recovered (a lawful use after the notice; the overdue resource aggregated), and a notice whose
agency broke the rule again is published as 通报批评 once its deadline has passed (the watch's
clock set past it, no sleeping). Every step is stored with its time and audited."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from govnode.v1 import supervision_pb2, supervision_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.audit import AuditLog
from node.quality import count_overdue
from node.supervision import Rectifications, Supervision
from tests.supervision.test_compliance_report import OTHER
from tests.supervision.test_compliance_report import submit as submit_batch
from tests.support.access import (
    ACME,
    KIND,
    OPEN,
    notifications,
    query,
    refused,
    register,
    sharing,
    submit,
    ts,
)
from tests.support.cli import assert_one_line_error, cli, govnode
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

V = supervision_pb2
TD = "fujian.gov.cn"


@pytest.fixture
async def watched(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[ProvinceSetup, RunningNode]]:
    """A province node whose notice watch looks every 0.1 s."""
    setup = make_province(tmp_path / "province", db_url)
    section = setup.config.supervision.model_copy(update={"notice_check_seconds": 0.1})
    setup = dataclasses.replace(
        setup, config=setup.config.model_copy(update={"supervision": section})
    )
    node = await start_node(setup.config)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


async def call(node: RunningNode, files: TlsFiles, method: str, request: Any) -> Any:
    async with channel(node, files) as ch:
        return await getattr(supervision_pb2_grpc.SupervisionServiceStub(ch), method)(
            request, timeout=10
        )


def issue(code: str, kind: int, note: str = "限期整改", days: float = 7) -> Any:
    return V.IssueRectificationNoticeRequest(
        agency_code=code,
        kind=kind,  # type: ignore[arg-type]
        deadline=ts(dt.datetime.now(dt.UTC) + dt.timedelta(days=days)),
        note=note,
    )


async def statuses(node: RunningNode, files: TlsFiles) -> dict[str, int]:
    reply = await call(node, files, "ListRectificationNotices", V.ListRectificationNoticesRequest())
    return {n.id: n.status for n in reply.notices}


async def until(check: Callable[[], Awaitable[bool]], within_s: float = 20.0) -> None:
    """Wait (bounded) until ``check()`` holds, looking every 0.1 s."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


async def test_notices_close_when_the_figure_recovers_and_escalate_at_the_deadline(
    watched: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = watched
    provider, civil, boss = (
        setup.agency(PUBLIC_SECURITY),
        setup.agency(CIVIL_AFFAIRS),
        setup.authority(),
    )
    await register(node, provider, OPEN)  # published in 2025, daily, never aggregated: overdue

    misuse = (
        await call(
            node,
            boss,
            "IssueRectificationNotice",
            issue(CIVIL_AFFAIRS, V.VIOLATION_KIND_MISUSE_OF_SHARED_DATA),
        )
    ).notice
    late = (
        await call(
            node,
            boss,
            "IssueRectificationNotice",
            issue(PUBLIC_SECURITY, V.VIOLATION_KIND_LATE_AGGREGATION),
        )
    ).notice
    beyond = (
        await call(
            node,
            boss,
            "IssueRectificationNotice",
            issue(PUBLIC_SECURITY, V.VIOLATION_KIND_OUT_OF_CATALOG_COLLECTION, "停止目录外采集"),
        )
    ).notice
    assert misuse.id.startswith(f"{PROVINCE}-N-")
    assert misuse.status == V.RECTIFICATION_STATUS_OPEN
    assert misuse.issued_by == f"spiffe://{PROVINCE}.{TD}/authority"
    assert not misuse.HasField("closed_at")

    # Each agency is told (第四十二条: 责令限期改正).
    [told] = [
        n
        for n in await notifications(node, civil)
        if n.kind == KIND.NOTIFICATION_KIND_RECTIFICATION_NOTICE
    ]
    assert told.message.startswith("责令限期改正 (第四十二条): 未按照规定使用共享数据，限 ")
    assert misuse.id in told.message

    # Nothing has happened yet: the watch keeps all three open.
    watch = node.notice_watch
    assert watch is not None
    watch.ran.clear()
    await asyncio.wait_for(watch.ran.wait(), 20)
    assert set((await statuses(node, boss)).values()) == {V.RECTIFICATION_STATUS_OPEN}

    # The provider sends an item outside its catalog again (a finding after the notice: it can
    # no longer recover before its deadline), then aggregates; the consumer uses shared data
    # within the rules.
    [ack] = await submit_batch(node, provider, "b2", [OTHER | {"zzz": "目录外"}])
    assert ack.rejected == 1
    await submit(node, provider, OPEN.resource_code, [ACME])
    await sharing(node, civil, "Query", query(OPEN.resource_code))

    async def settled() -> bool:
        found = await statuses(node, boss)
        return (found[misuse.id], found[late.id]) == (
            V.RECTIFICATION_STATUS_RECTIFIED,
            V.RECTIFICATION_STATUS_RECTIFIED,
        )

    await until(settled)
    reply = await call(node, boss, "ListRectificationNotices", V.ListRectificationNoticesRequest())
    by_id = {n.id: n for n in reply.notices}
    assert by_id[misuse.id].outcome == "已改正: 通知后 1 次相关操作均无违规"
    assert by_id[late.id].outcome == "已改正: 本单位资源均已按更新周期汇聚"
    assert by_id[misuse.id].HasField("closed_at")
    assert by_id[beyond.id].status == V.RECTIFICATION_STATUS_OPEN
    [closed] = [
        n
        for n in await notifications(node, civil)
        if n.kind == KIND.NOTIFICATION_KIND_RECTIFICATION_NOTICE and "已改正" in n.message
    ]
    assert (
        closed.message
        == f"整改通知 {misuse.id} (未按照规定使用共享数据): 已改正: 通知后 1 次相关操作均无违规"
    )

    # Past the deadline (the watch's clock, set two weeks ahead) the notice still broken is
    # published as 通报批评.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=14)
    ahead = Rectifications(
        Supervision(
            node.db,
            node.audit,
            node_region=PROVINCE,
            trust_domain=TD,
            overdue_corrections=count_overdue,
            clock=lambda: later,
        ),
        None,
    )
    [criticised] = await ahead.settle()
    assert criticised.id == beyond.id and criticised.closed_at == later
    assert criticised.outcome == "逾期未改正，通报批评: 通知后又发现 1 起 (1/2)"
    # Every authenticated caller reads the published list.
    published = await call(
        node, civil, "ListPublishedCriticisms", V.ListPublishedCriticismsRequest()
    )
    assert [n.id for n in published.notices] == [beyond.id]
    assert published.notices[0].status == V.RECTIFICATION_STATUS_CRITICISED

    # An agency reads its own notices only.
    assert set(await statuses(node, provider)) == {late.id, beyond.id}
    err = await refused(
        call(
            node,
            provider,
            "ListRectificationNotices",
            V.ListRectificationNoticesRequest(agency_code=CIVIL_AFFAIRS),
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == (
        "rectification notices are read by the agency they concern and the data management "
        f"authority (第四十二条); spiffe://{PROVINCE}.{TD}/agency/{PUBLIC_SECURITY} may read only "
        "its own"
    )

    # Every step is audited: the RPCs by the guard, the watch's transitions as its own records.
    records = await AuditLog(node.db).query(limit=1000)
    issued = [r for r in records if r.method.endswith("/IssueRectificationNotice")]
    assert [r.detail["notice"] for r in issued] == [misuse.id, late.id, beyond.id]
    assert {r.operation.value for r in issued} == {"maintain"}  # 更新维护
    steps = {
        (r.detail["notice"], r.detail["status"])
        for r in records
        if r.method == "supervision.notice"
    }
    assert steps == {
        (misuse.id, "rectified"),
        (late.id, "rectified"),
        (beyond.id, "criticised"),
    }

    # `govnode supervision notices list` shows them.
    code, out, errors = await cli("supervision", "notices", "list", "--config", setup.config_path)
    assert code == 0, errors
    lines = out.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{PROVINCE}-N-") for line in lines)
    assert any(beyond.id in line and "criticised" in line for line in lines)
    code, out, errors = await cli(
        "supervision", "notices", "list", "--config", setup.config_path, "--criticised"
    )
    assert code == 0 and out.startswith(beyond.id), errors


async def test_only_the_authority_issues_and_bad_notices_are_refused(
    watched: tuple[ProvinceSetup, RunningNode],
) -> None:
    setup, node = watched
    civil, boss = setup.agency(CIVIL_AFFAIRS), setup.authority()
    err = await refused(
        call(
            node,
            civil,
            "IssueRectificationNotice",
            issue(PUBLIC_SECURITY, V.VIOLATION_KIND_DUPLICATE_COLLECTION),
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == (
        f"rectification notices are issued by the data management authority of region {PROVINCE} "
        f"(第四十二条); spiffe://{PROVINCE}.{TD}/agency/{CIVIL_AFFAIRS} is not it"
    )
    for request, message in (
        (issue(CIVIL_AFFAIRS, 0), "kind is required (the ViolationKind of the figure to rectify)"),
        (issue(CIVIL_AFFAIRS, 99), "kind: 99 is not a ViolationKind"),
        (issue(CIVIL_AFFAIRS, 1, note="  "), "note is required: what the agency must rectify"),
        (issue(CIVIL_AFFAIRS, 1, note="x" * 2001), "note: at most 2000 characters, got 2001"),
        (issue(CIVIL_AFFAIRS, 1, days=400), "deadline: at most 366 days ahead"),
        (issue("bad", 1), "agency_code: 'bad' must be 18 characters, got 3 (GB 32100)"),
    ):
        err = await refused(call(node, boss, "IssueRectificationNotice", request))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    err = await refused(
        call(node, boss, "IssueRectificationNotice", issue(CIVIL_AFFAIRS, 1, days=-1))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").endswith("has passed")

    # The CLI issues as the region's authority; the agency is notified.
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).date().isoformat()
    code, out, errors = await cli(
        "supervision",
        "notice",
        "--config",
        setup.config_path,
        "--agency",
        CIVIL_AFFAIRS,
        "--finding",
        "protected_data_misuse",
        "--deadline",
        day,
        "--note",
        "停止越权查询个人信息",
    )
    assert code == 0, errors
    assert out.startswith(f"{PROVINCE}-N-") and "protected_data_misuse" in out and "open" in out
    assert any(
        n.kind == KIND.NOTIFICATION_KIND_RECTIFICATION_NOTICE
        for n in await notifications(node, civil)
    )
    result = govnode(
        "supervision",
        "notice",
        "--config",
        setup.config_path,
        "--agency",
        CIVIL_AFFAIRS,
        "--finding",
        "nope",
        "--deadline",
        day,
        "--note",
        "x",
    )
    assert_one_line_error(result, "--finding: 'nope' is not one of out_of_catalog")
