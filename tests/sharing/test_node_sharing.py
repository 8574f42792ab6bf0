"""Submit, Verify, Compare and Query over real mutual TLS, with share types enforced and
every call, accepted or refused, in the audit log."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import sharing_pb2, sharing_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit import AuditLog
from node.catalog import ShareMethod
from node.codes import make_citizen_id, make_credit_code
from node.storage import Database
from tests.support.databases import migrate
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PUBLIC_SECURITY,
    ProvinceSetup,
    approve_change,
    channel,
    make_province,
    start,
)
from tests.support.sharing import (
    COMPANIES,
    PEOPLE,
    PETITIONS,
    agency,
    batch,
    register,
    submit,
)

Province = tuple[ProvinceSetup, RunningNode]
PETITION_OFFICE = PETITIONS.provider_code

ZHANG = make_citizen_id("35010219900307123")
LI = make_citizen_id("35020319851111002")
ACME = make_credit_code("91350000000000001")
BETA = make_credit_code("91350000000000002")


async def sharing(node: RunningNode, files: TlsFiles, method: str, request: object) -> object:
    async with channel(node, files) as ch:
        result = getattr(sharing_pb2_grpc.SharingServiceStub(ch), method)(request)
        if method == "Compare":
            return [r async for r in result]
        return await result


async def refused(
    node: RunningNode, files: TlsFiles, method: str, request: object
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await sharing(node, files, method, request)
    return err.value


@pytest.fixture
async def loaded(province: Province) -> Province:
    """The example catalog registered, with a few records in 人口 and 法人."""
    setup, node = province
    for entry in (PEOPLE, COMPANIES, PETITIONS):
        await register(setup, node, entry)
    acks = await submit(
        node,
        agency(setup, PUBLIC_SECURITY),
        [
            batch(
                PEOPLE.resource_code,
                "people-1",
                [
                    {
                        "gmsfhm": ZHANG,
                        "xm": "张三",
                        "xb": "男",
                        "csrq": "1990-03-07",
                        "sjhm": "13812345678",
                    },
                    {"gmsfhm": LI, "xm": "欧阳丽", "xb": "女", "csrq": "1985-11-11"},
                ],
            )
        ],
    )
    assert acks[0].accepted == 2
    acks = await submit(
        node,
        agency(setup, MARKET_REGULATION),
        [
            batch(
                COMPANIES.resource_code,
                "companies-1",
                [
                    {
                        "tyshxydm": ACME,
                        "dwmc": "福州某某科技有限公司",
                        "fddbr": "王五",
                        "djzt": "存续",
                    },
                    {
                        "tyshxydm": BETA,
                        "dwmc": "厦门某某贸易有限公司",
                        "fddbr": "赵六",
                        "djzt": "注销",
                    },
                ],
            )
        ],
    )
    assert acks[0].accepted == 2
    return setup, node


# --- Submit (汇聚) -----------------------------------------------------------------------


async def test_submit_reports_each_refused_record_and_applies_the_rest(loaded: Province) -> None:
    setup, node = loaded
    bad_id = ZHANG[:-1] + ("0" if ZHANG[-1] != "0" else "1")
    [ack] = await submit(
        node,
        agency(setup, PUBLIC_SECURITY),
        [
            batch(
                PEOPLE.resource_code,
                "people-2",
                [
                    {"gmsfhm": bad_id, "xm": "错号"},
                    {"gmsfhm": make_citizen_id("35010220000101001"), "xm": "新人", "hobby": "x"},
                    {"gmsfhm": make_citizen_id("35010220000101002")},
                    {"gmsfhm": make_citizen_id("35010220000101003"), "xm": "好人", "xb": "未知"},
                    {"gmsfhm": make_citizen_id("35010220000101004"), "xm": "好人"},
                ],
            )
        ],
    )
    assert (ack.accepted, ack.rejected) == (1, 4)
    reasons = {(r.index, r.item): r.reason for r in ack.rejections}
    assert "GB 11643" in reasons[(0, "gmsfhm")]
    assert "第十二条" in reasons[(1, "hobby")]
    assert (2, "xm") in reasons
    assert (3, "xb") in reasons


async def test_resubmitting_a_batch_applies_nothing_twice(loaded: Province) -> None:
    setup, node = loaded
    police = agency(setup, PUBLIC_SECURITY)
    rows = [{"gmsfhm": ZHANG, "xm": "张三丰", "xb": "男"}]
    [first] = await submit(node, police, [batch(PEOPLE.resource_code, "people-3", rows)])
    [again] = await submit(node, police, [batch(PEOPLE.resource_code, "people-3", rows)])
    assert (first.duplicate, again.duplicate) == (False, True)
    # 张三 is stored with other values: the change waits for approval (第四十一条), once.
    assert (again.accepted, again.held) == (first.accepted, first.held) == (0, 1)
    assert list(again.held_records) == list(first.held_records)
    query = sharing_pb2.QueryRequest(resource_code=PEOPLE.resource_code, key={"gmsfhm": ZHANG})
    page = await sharing(node, police, "Query", query)
    assert [row.version for row in page.rows] == [1]  # type: ignore[attr-defined]
    await approve_change(node, setup, first.held_records[0].change_request_id)
    page = await sharing(node, police, "Query", query)
    assert [(r.version, r.record.values["xm"]) for r in page.rows] == [(2, "张三丰")]  # type: ignore[attr-defined]


async def submit_until_refused(
    node: RunningNode, files: TlsFiles, batches: Sequence[sharing_pb2.SubmitBatch]
) -> tuple[list[sharing_pb2.SubmitAck], grpc.aio.AioRpcError]:
    """The acks one Submit stream gave before it ended with a refusal, and the refusal."""
    acks: list[sharing_pb2.SubmitAck] = []

    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for b in batches:
            yield b

    async with channel(node, files) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for ack in sharing_pb2_grpc.SharingServiceStub(ch).Submit(requests()):
                acks.append(ack)
    return acks, err.value


async def stored_names(node: RunningNode, files: TlsFiles, *ids: str) -> list[str]:
    """The 姓名 stored under each citizen id ("" where there is no record)."""
    names = []
    for id_ in ids:
        query = sharing_pb2.QueryRequest(resource_code=PEOPLE.resource_code, key={"gmsfhm": id_})
        page = await sharing(node, files, "Query", query)
        names += [r.record.values["xm"] for r in page.rows] or [""]  # type: ignore[attr-defined]
    return names


async def test_a_batch_id_reused_for_other_records_is_refused(loaded: Province) -> None:
    setup, node = loaded
    police = agency(setup, PUBLIC_SECURITY)
    wang, zhao, qian = (make_citizen_id(f"3501022001020300{i}") for i in (1, 2, 3))
    dated = "people-2026-12-03"
    [first] = await submit(
        node, police, [batch(PEOPLE.resource_code, dated, [{"gmsfhm": wang, "xm": "王一"}])]
    )
    # The same records again, their items in another order: the same batch, a duplicate.
    [again] = await submit(
        node, police, [batch(PEOPLE.resource_code, dated, [{"xm": "王一", "gmsfhm": wang}])]
    )
    assert (first.duplicate, again.duplicate, again.accepted) == (False, True, 1)
    # A corrected file sent under the same id is refused, not acknowledged as a duplicate: on
    # one stream, the batch before it is applied, it and the batch after it are not.
    corrected = [{"gmsfhm": wang, "xm": "王壹"}, {"gmsfhm": zhao, "xm": "赵二"}]
    acks, err = await submit_until_refused(
        node,
        police,
        [
            batch(PEOPLE.resource_code, "people-before", [{"gmsfhm": qian, "xm": "钱三"}]),
            batch(PEOPLE.resource_code, dated, corrected),
            batch(PEOPLE.resource_code, "people-after", [{"gmsfhm": zhao, "xm": "赵二"}]),
        ],
    )
    assert [a.batch_id for a in acks] == ["people-before"]
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    message = err.details() or ""
    assert dated in message and "differ" in message and "new batch_id" in message
    assert await stored_names(node, police, wang, zhao, qian) == ["王一", "", "钱三"]
    # The refusal is in the audit log, with its message.
    records = await AuditLog(node.db).query(limit=1000)
    [refusal] = [r for r in records if r.outcome == "FAILED_PRECONDITION"]
    assert refusal.method == "/govnode.v1.SharingService/Submit" and dated in refusal.message
    # Under a new id the corrected records go in (the change of 王一's record held, 第四十一条).
    [ack] = await submit(node, police, [batch(PEOPLE.resource_code, f"{dated}-2", corrected)])
    assert (ack.duplicate, ack.accepted, ack.held) == (False, 1, 1)
    assert await stored_names(node, police, wang, zhao) == ["王一", "赵二"]


async def downgrade(db_url: str, revision: str) -> None:
    """Take the database back to schema ``revision`` (Alembic downgrade), as an older release
    left it."""
    db = await Database.open(db_url)
    try:
        await migrate(db, "downgrade", revision)
    finally:
        await db.close()


async def test_batches_stored_before_the_content_digest_stay_duplicates(
    tmp_path: Path, db_url: str
) -> None:
    """A database from before migration 0014 (batches without a content digest) is migrated at
    start-up; resends of its batches are duplicates whatever they hold, as they were, and
    batches stored since are checked."""
    setup = make_province(tmp_path / "province", db_url)
    police = agency(setup, PUBLIC_SECURITY)
    wang, zhao = (make_citizen_id(f"3501022001020300{i}") for i in (1, 2))
    node = await start(setup)
    try:
        await register(setup, node, PEOPLE)
        [old] = await submit(
            node, police, [batch(PEOPLE.resource_code, "old-1", [{"gmsfhm": wang, "xm": "王一"}])]
        )
    finally:
        await node.stop(grace=0)
    await downgrade(db_url, "0013")  # the batch row as release 0013 wrote it: no digest
    node = await start(setup)
    try:
        row = await node.db.fetch_one(
            "SELECT content_digest FROM submit_batch WHERE batch_id = :id", {"id": "old-1"}
        )
        assert row is not None and row[0] is None
        other = [{"gmsfhm": zhao, "xm": "赵二"}]
        [again] = await submit(node, police, [batch(PEOPLE.resource_code, "old-1", other)])
        assert (again.duplicate, again.accepted) == (True, 1)
        assert again.committed_at == old.committed_at  # the first outcome
        assert await stored_names(node, police, wang, zhao) == ["王一", ""]
        # A batch stored since the migration has its digest, and is checked.
        await submit(node, police, [batch(PEOPLE.resource_code, "new-1", other)])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit(
                node,
                police,
                [batch(PEOPLE.resource_code, "new-1", [{"gmsfhm": zhao, "xm": "赵贰"}])],
            )
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await node.stop(grace=0)


async def test_only_the_provider_may_submit(loaded: Province) -> None:
    setup, node = loaded
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(
            node,
            agency(setup, CIVIL_AFFAIRS),
            [batch(PEOPLE.resource_code, "x", [{"gmsfhm": ZHANG, "xm": "冒名"}])],
        )
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert PUBLIC_SECURITY in (err.value.details() or "")


async def test_temporary_collection_needs_a_reason_and_expiry(loaded: Province) -> None:
    setup, node = loaded
    police = agency(setup, PUBLIC_SECURITY)
    expires = Timestamp()
    expires.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    row = [{"gmsfhm": make_citizen_id("35010219950505005"), "xm": "临时", "hjd": "福州"}]
    [ack] = await submit(
        node,
        police,
        [
            batch(
                PEOPLE.resource_code,
                "tmp-1",
                row,
                temporary=sharing_pb2.TemporaryCollection(
                    reason="疫情防控临时采集", expires_at=expires, extra_items=["hjd"]
                ),
            )
        ],
    )
    assert (ack.accepted, ack.rejected) == (1, 0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(
            node,
            police,
            [
                batch(
                    PEOPLE.resource_code,
                    "tmp-2",
                    row,
                    temporary=sharing_pb2.TemporaryCollection(
                        reason="", expires_at=expires, extra_items=["hjd"]
                    ),
                )
            ],
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (err.value.details() or "")


# --- Verify, Compare (比对) and share types ------------------------------------------------


async def test_any_agency_verifies_an_unconditional_resource(loaded: Province) -> None:
    setup, node = loaded
    reply = await sharing(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=COMPANIES.resource_code,
            key={"tyshxydm": ACME},
            claimed={"dwmc": "福州某某科技有限公司", "djzt": "注销"},
        ),
    )
    assert reply.found and not reply.all_match  # type: ignore[attr-defined]
    results = {m.item: m.result for m in reply.matches}  # type: ignore[attr-defined]
    assert results == {
        "dwmc": sharing_pb2.MATCH_RESULT_MATCH,
        "djzt": sharing_pb2.MATCH_RESULT_MISMATCH,
    }
    # The answer never carries a stored value.
    assert "存续" not in str(reply)
    missing = await sharing(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=COMPANIES.resource_code,
            key={"tyshxydm": make_credit_code("91350000000000009")},
            claimed={"dwmc": "不存在"},
        ),
    )
    assert not missing.found  # type: ignore[attr-defined]


async def test_conditional_resources_need_an_approved_application(loaded: Province) -> None:
    setup, node = loaded
    request = sharing_pb2.VerifyRequest(
        resource_code=PEOPLE.resource_code, key={"gmsfhm": ZHANG}, claimed={"xm": "张三"}
    )
    err = await refused(node, agency(setup, CIVIL_AFFAIRS), "Verify", request)
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "approved application" in (err.details() or "")
    # The provider itself uses its own resource.
    mine = await sharing(node, agency(setup, PUBLIC_SECURITY), "Verify", request)
    assert mine.all_match  # type: ignore[attr-defined]


async def test_not_shared_resources_never_serve_others(loaded: Province) -> None:
    setup, node = loaded
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Query",
        sharing_pb2.QueryRequest(resource_code=PETITIONS.resource_code, key={"xfjbh": "X1"}),
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "暂不共享" in (err.details() or "")


async def test_a_method_the_entry_does_not_offer_is_refused(province: Province) -> None:
    setup, node = province
    verify_only = COMPANIES.model_copy(
        update={
            "resource_code": "350000-1-000003",
            "share_methods": (ShareMethod.VERIFY,),
            "items": tuple(
                i.model_copy(update={"authoritative_source": False}) for i in COMPANIES.items
            ),
        }
    )
    await register(setup, node, verify_only)
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Query",
        sharing_pb2.QueryRequest(resource_code=verify_only.resource_code, key={"tyshxydm": ACME}),
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "检索查询" in (err.details() or "") and "联机验证" in (err.details() or "")


async def test_compare_streams_results_in_order(loaded: Province) -> None:
    setup, node = loaded
    results = await sharing(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Compare",
        sharing_pb2.CompareRequest(
            resource_code=COMPANIES.resource_code,
            records=[
                sharing_pb2.CompareRecord(
                    ref="a", key={"tyshxydm": BETA}, claimed={"djzt": "注销"}
                ),
                sharing_pb2.CompareRecord(
                    ref="b",
                    key={"tyshxydm": make_credit_code("91350000000000008")},
                    claimed={"djzt": "存续"},
                ),
                sharing_pb2.CompareRecord(
                    ref="c", key={"tyshxydm": ACME}, claimed={"djzt": "注销"}
                ),
            ],
        ),
    )
    assert [(r.ref, r.found, r.all_match) for r in results] == [  # type: ignore[attr-defined]
        ("a", True, True),
        ("b", False, False),
        ("c", True, False),
    ]


async def test_compare_packs_results_into_fewer_messages_when_asked(loaded: Province) -> None:
    """results_per_message: the same results in the same order, up to that many a message in
    its `results`; a message also ends once it holds 1 MiB (long refs); more than 1,000 a
    message is refused naming the field."""
    setup, node = loaded
    files = agency(setup, CIVIL_AFFAIRS)
    keys = [BETA, ACME, make_credit_code("91350000000000008")]
    records = [
        sharing_pb2.CompareRecord(
            ref=f"r{i}", key={"tyshxydm": keys[i % 3]}, claimed={"djzt": "存续"}
        )
        for i in range(7)
    ]

    def compare(per_message: int, records: list[Any] = records) -> Any:
        return sharing(
            node,
            files,
            "Compare",
            sharing_pb2.CompareRequest(
                resource_code=COMPANIES.resource_code,
                records=records,
                results_per_message=per_message,
            ),
        )

    one_each = await compare(0)
    assert len(one_each) == 7 and not any(m.results for m in one_each)
    packed = await compare(3)
    assert [len(m.results) for m in packed] == [3, 3, 1]
    assert all(not m.ref and not m.found and not m.matches for m in packed)
    assert [r for m in packed for r in m.results] == one_each
    assert {(r.found, r.all_match) for r in one_each} == {
        (True, True),
        (True, False),
        (False, False),
    }

    long_refs = [
        sharing_pb2.CompareRecord(
            ref=f"{i}" * 600_000, key={"tyshxydm": ACME}, claimed={"djzt": "存续"}
        )
        for i in range(3)
    ]
    by_size = await compare(1_000, long_refs)
    assert [len(m.results) for m in by_size] == [2, 1]
    assert [r.ref[0] for m in by_size for r in m.results] == ["0", "1", "2"]

    err = await refused(
        node,
        files,
        "Compare",
        sharing_pb2.CompareRequest(
            resource_code=COMPANIES.resource_code, records=records, results_per_message=1_001
        ),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "results_per_message: at most 1,000" in (err.details() or "")


async def test_compare_refuses_more_than_ten_thousand_records(loaded: Province) -> None:
    setup, node = loaded
    records = [
        sharing_pb2.CompareRecord(ref=str(i), key={"tyshxydm": ACME}, claimed={"djzt": "存续"})
        for i in range(10_001)
    ]
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Compare",
        sharing_pb2.CompareRequest(resource_code=COMPANIES.resource_code, records=records),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "10,000" in (err.details() or "") or "10000" in (err.details() or "")


# --- Query (检索查询) and masking -----------------------------------------------------------


async def test_query_masks_sensitive_items_for_other_agencies(loaded: Province) -> None:
    setup, node = loaded
    request = sharing_pb2.QueryRequest(
        resource_code=COMPANIES.resource_code, key={"tyshxydm": ACME}
    )
    other = await sharing(node, agency(setup, CIVIL_AFFAIRS), "Query", request)
    [row] = other.rows  # type: ignore[attr-defined]
    assert row.record.values["fddbr"] == "王*"
    assert row.record.values["dwmc"] == "福州某某科技有限公司"
    assert list(row.masked_items) == ["fddbr"]
    mine = await sharing(node, agency(setup, MARKET_REGULATION), "Query", request)
    assert mine.rows[0].record.values["fddbr"] == "王五"  # type: ignore[attr-defined]
    assert list(mine.rows[0].masked_items) == []  # type: ignore[attr-defined]


async def test_the_provider_sees_its_conditional_data_in_clear(loaded: Province) -> None:
    setup, node = loaded
    page = await sharing(
        node,
        agency(setup, PUBLIC_SECURITY),
        "Query",
        sharing_pb2.QueryRequest(resource_code=PEOPLE.resource_code, key={"gmsfhm": ZHANG}),
    )
    assert page.rows[0].record.values["sjhm"] == "13812345678"  # type: ignore[attr-defined]


async def test_query_by_filter_with_projection(loaded: Province) -> None:
    setup, node = loaded
    page = await sharing(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Query",
        sharing_pb2.QueryRequest(
            resource_code=COMPANIES.resource_code,
            filters=[
                sharing_pb2.QueryFilter(item="djzt", op=sharing_pb2.QUERY_OPERATOR_EQ, value="注销")
            ],
            items=["tyshxydm", "djzt"],
        ),
    )
    assert [dict(r.record.values) for r in page.rows] == [  # type: ignore[attr-defined]
        {"tyshxydm": BETA, "djzt": "注销"}
    ]


async def test_query_needs_a_key_or_a_filter(loaded: Province) -> None:
    setup, node = loaded
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Query",
        sharing_pb2.QueryRequest(resource_code=COMPANIES.resource_code),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_resource_is_not_found(loaded: Province) -> None:
    setup, node = loaded
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Verify",
        sharing_pb2.VerifyRequest(resource_code="350000-1-999999", key={"x": "y"}),
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND


# --- 汇聚 status and the audit log --------------------------------------------------------


async def test_aggregation_status_shows_the_callers_resources(loaded: Province) -> None:
    setup, node = loaded
    async with channel(node, agency(setup, PUBLIC_SECURITY)) as ch:
        reply = await sharing_pb2_grpc.SharingServiceStub(ch).GetAggregationStatus(
            sharing_pb2.GetAggregationStatusRequest()
        )
    [status] = reply.statuses
    assert status.resource_code == PEOPLE.resource_code
    assert status.last_aggregated_at.seconds > 0
    assert not status.overdue


async def test_every_call_is_in_the_audit_log_refusals_included(loaded: Province) -> None:
    setup, node = loaded
    civil = agency(setup, CIVIL_AFFAIRS)
    await sharing(
        node,
        civil,
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=COMPANIES.resource_code, key={"tyshxydm": ACME}, claimed={"djzt": "存续"}
        ),
    )
    await refused(
        node,
        civil,
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=PEOPLE.resource_code, key={"gmsfhm": ZHANG}, claimed={"xm": "张三"}
        ),
    )
    log = AuditLog(node.db)
    records = await log.query(limit=1000)
    calls = [(r.method.rsplit("/", 1)[-1], r.outcome, r.caller.rsplit("/", 1)[-1]) for r in records]
    # 3 registrations, 2 Submit calls (each with a per-batch record), then the two Verifies.
    assert calls.count(("RegisterResource", "OK", PUBLIC_SECURITY)) == 1
    assert calls.count(("Submit", "OK", MARKET_REGULATION)) == 2
    assert calls[-2:] == [
        ("Verify", "OK", CIVIL_AFFAIRS),
        ("Verify", "PERMISSION_DENIED", CIVIL_AFFAIRS),
    ]
    last = records[-1]
    assert last.resource_code == PEOPLE.resource_code
    assert last.operation.value == "compare"
    assert "approved application" in last.message
    assert len(last.request_digest) == 64
    check = await log.verify_chain()
    assert check.ok and check.checked == len(records)


async def test_a_call_the_audit_log_cannot_record_returns_no_result(loaded: Province) -> None:
    setup, node = loaded
    await node.audit.close()  # the audit log stops writing (a broken disk, a lost database)
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Verify",
        sharing_pb2.VerifyRequest(
            resource_code=COMPANIES.resource_code, key={"tyshxydm": ACME}, claimed={"djzt": "存续"}
        ),
    )
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "audit log" in (err.details() or "") and "第三十九条" in (err.details() or "")
    # Refusals are not answered either: nothing leaves the node unrecorded.
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "Verify",
        sharing_pb2.VerifyRequest(resource_code=PEOPLE.resource_code, key={"gmsfhm": ZHANG}),
    )
    assert err.code() is grpc.StatusCode.UNAVAILABLE
