"""Approved change and deletion (第四十一条): a provider asks, the node's authority approves
(the change applies in the same transaction) or rejects, the versions before stay readable and
nothing is removed; every refusal has its status. Real node over mutual TLS, both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from govnode.v1 import (
    access_pb2,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    sharing_pb2,
    sharing_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.codes import make_credit_code
from node.servicers.convert import entry_to_proto
from tests.support.access import (
    ACME,
    COND,
    KIND,
    OPEN,
    PROBE,
    Province,
    access,
    authority,
    notifications,
    refused,
    register,
    sharing,
    submit,
    verify,
)
from tests.support.access import query as query_request
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PROVINCE,
    PUBLIC_SECURITY,
    channel,
    make_city,
    make_province,
    start,
    with_submit_updates,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

CODE = OPEN.resource_code
KEY = {"tyshxydm": ACME["tyshxydm"]}
T = access_pb2
APPROVE = common_pb2.REVIEW_DECISION_APPROVE
REJECT = common_pb2.REVIEW_DECISION_REJECT


@pytest.fixture
async def loaded(province: Province) -> Province:
    """The province with public security's 无条件共享 resource holding one record, its
    有条件共享 one, and a tester's probe with one record."""
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    for entry in (OPEN, COND):
        await register(node, provider, entry)
    await register(node, setup.tester(), PROBE)
    await submit(node, provider, CODE, [ACME])
    await submit(node, setup.tester(), PROBE.resource_code, [ACME])
    return setup, node


def change_record(
    values: dict[str, str] | None = None, *, code: str = CODE, key: dict[str, str] = KEY, **kw: Any
) -> access_pb2.RequestRecordChangeRequest:
    fields: dict[str, Any] = {
        "target": T.CHANGE_TARGET_RECORD,
        "action": T.CHANGE_ACTION_UPDATE if values is not None else T.CHANGE_ACTION_DELETE,
        "resource_code": code,
        "key": key,
        "reason": "企业名称登记有误，依核准文书更正",
    }
    if values is not None:
        fields["record"] = common_pb2.Record(values=values)
    return access_pb2.RequestRecordChangeRequest(**(fields | kw))


def review(
    change_id: str, decision: common_pb2.ReviewDecision.ValueType = APPROVE, **kw: Any
) -> Any:
    return access_pb2.ReviewChangeRequestRequest(id=change_id, decision=decision, **kw)


async def ask(node: RunningNode, files: TlsFiles, request: Any) -> access_pb2.ChangeRequest:
    reply = await access(node, files, "RequestRecordChange", request)
    change: access_pb2.ChangeRequest = reply.change_request
    return change


async def current(node: RunningNode, files: TlsFiles, code: str = CODE) -> list[dict[str, str]]:
    reply = await sharing(node, files, "Query", query_request(code))
    return [dict(r.record.values) for r in reply.rows]


async def get_entry(node: RunningNode, files: TlsFiles, code: str) -> Any:
    async with channel(node, files) as ch:
        reply = await catalog_pb2_grpc.CatalogServiceStub(ch).GetResource(
            catalog_pb2.GetResourceRequest(resource_code=code)
        )
    return reply.entry


# --- records ------------------------------------------------------------------------------


async def test_an_approved_record_change_applies_and_keeps_the_version_before(
    loaded: Province,
) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    asked = await ask(node, provider, change_record({"qymc": "福州某某信息技术有限公司"}))
    assert asked.id.startswith(f"{PROVINCE}-C-")
    assert asked.status == T.CHANGE_REQUEST_STATUS_PENDING
    assert asked.requester.subject == PUBLIC_SECURITY
    assert dict(asked.previous_record.values) == ACME  # before ...
    assert asked.record.values["qymc"] == "福州某某信息技术有限公司"  # ... and after
    assert asked.previous_version == 1
    # Nothing changes before the approval (未经批准不得更改).
    assert (await current(node, provider))[0]["qymc"] == ACME["qymc"]
    # The authority is told, in the request's transaction.
    [note] = await notifications(node, boss)
    assert note.kind == KIND.NOTIFICATION_KIND_CHANGE_REQUESTED
    assert note.change_request_id == asked.id and CODE in note.message

    done = (await access(node, boss, "ReviewChangeRequest", review(asked.id))).change_request
    assert done.status == T.CHANGE_REQUEST_STATUS_APPROVED
    assert done.applied_version == 2 and done.reviewer.role == "authority"
    assert (await current(node, provider))[0]["qymc"] == "福州某某信息技术有限公司"
    [note] = await notifications(node, provider)
    assert note.kind == KIND.NOTIFICATION_KIND_CHANGE_REVIEWED
    assert note.change_request_id == asked.id
    # The version it replaced stays readable to the provider and the authority.
    for files in (provider, boss):
        got = await access(node, files, "GetChangeRequest", T.GetChangeRequestRequest(id=asked.id))
        assert dict(got.change_request.previous_record.values) == ACME
        listed = await access(node, files, "ListChangeRequests", T.ListChangeRequestsRequest())
        assert [c.id for c in listed.change_requests] == [asked.id]
    # Reviewing twice is refused.
    again = review(asked.id, REJECT, comment="再审")
    err = await refused(access(node, boss, "ReviewChangeRequest", again))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "already approved" in (err.details() or "")


async def test_a_rejected_change_leaves_the_record_unchanged(loaded: Province) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    asked = await ask(node, provider, change_record({"qymc": "别的名称"}, request_id="c-1"))
    again = await ask(node, provider, change_record({"qymc": "别的名称"}, request_id="c-1"))
    assert again.id == asked.id  # idempotent by request_id
    # A rejection needs its reason.
    err = await refused(access(node, boss, "ReviewChangeRequest", review(asked.id, REJECT)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "comment" in (err.details() or "")
    done = await access(
        node, boss, "ReviewChangeRequest", review(asked.id, REJECT, comment="无核准文书")
    )
    assert done.change_request.status == T.CHANGE_REQUEST_STATUS_REJECTED
    assert done.change_request.review_comment == "无核准文书"
    assert done.change_request.applied_version == 0
    assert await current(node, provider) == [ACME]
    [note] = await notifications(node, provider)
    assert note.kind == KIND.NOTIFICATION_KIND_CHANGE_REVIEWED and "无核准文书" in note.message


async def test_an_approved_deletion_keeps_the_record_history(loaded: Province) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    asked = await ask(node, provider, change_record(None))
    assert asked.action == T.CHANGE_ACTION_DELETE
    assert await current(node, provider) == [ACME]  # not before approval
    done = (await access(node, boss, "ReviewChangeRequest", review(asked.id))).change_request
    assert done.applied_version == 2
    # Query and Verify no longer find it ...
    assert await current(node, provider) == []
    civil = setup.agency(CIVIL_AFFAIRS)
    verified = await sharing(node, civil, "Verify", verify(CODE, qymc=ACME["qymc"]))
    assert not verified.found
    # ... and the version before stays readable (nothing is hard-deleted, 第四十一条).
    got = await access(node, boss, "GetChangeRequest", T.GetChangeRequestRequest(id=asked.id))
    assert dict(got.change_request.previous_record.values) == ACME
    # Deleting it again: there is no such record any more.
    err = await refused(access(node, provider, "RequestRecordChange", change_record(None)))
    assert err.code() is grpc.StatusCode.NOT_FOUND

    # Aggregating it again would undo an approved deletion: that waits for approval too.
    ack = await submit_batch(node, provider, "b2", [ACME])
    assert (ack.accepted, ack.held) == (0, 1), ack
    assert await current(node, provider) == []
    await access(node, boss, "ReviewChangeRequest", review(ack.held_records[0].change_request_id))
    assert await current(node, provider) == [ACME]


async def test_a_change_asked_before_another_write_is_not_applied_over_it(
    loaded: Province,
) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    asked = await ask(node, provider, change_record({"qymc": "甲"}))
    second = await ask(node, provider, change_record({"qymc": "乙"}))
    await access(node, boss, "ReviewChangeRequest", review(asked.id))
    err = await refused(access(node, boss, "ReviewChangeRequest", review(second.id)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "changed since the request" in (err.details() or "")
    assert (await current(node, provider))[0]["qymc"] == "甲"


async def submit_batch(
    node: RunningNode, files: TlsFiles, batch_id: str, rows: list[dict[str, str]], code: str = CODE
) -> sharing_pb2.SubmitAck:
    async def batch() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code,
            batch_id=batch_id,
            records=[common_pb2.Record(values=r) for r in rows],
        )

    async with channel(node, files) as ch:
        [ack] = [a async for a in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batch())]
    return ack


async def history(
    node: RunningNode, files: TlsFiles, code: str = CODE, key: dict[str, str] = KEY
) -> Any:
    async with channel(node, files) as ch:
        return await sharing_pb2_grpc.SharingServiceStub(ch).GetRecordHistory(
            sharing_pb2.GetRecordHistoryRequest(resource_code=code, key=key), timeout=5
        )


async def test_a_submitted_change_of_a_stored_record_waits_for_approval(
    loaded: Province,
) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    renamed = ACME | {"qymc": "福州某某信息技术有限公司"}
    beta = {"tyshxydm": "91350100MA00000029", "qymc": "福州乙公司", "fddbr": "赵六"}
    ack = await submit_batch(node, provider, "daily-2", [beta, renamed])
    # The new record is aggregated; the change of the stored one is held (第四十一条).
    assert (ack.accepted, ack.held, ack.rejected) == (1, 1, 0)
    [held] = ack.held_records
    assert held.index == 1
    assert await current(node, provider) == [ACME]
    # The authority is told once for the batch; the request shows the batch, before and after.
    [note] = await notifications(node, boss)
    assert note.kind == KIND.NOTIFICATION_KIND_CHANGE_REQUESTED
    assert "daily-2" in note.message and note.change_request_id == held.change_request_id
    got = await access(
        node, provider, "GetChangeRequest", T.GetChangeRequestRequest(id=held.change_request_id)
    )
    change = got.change_request
    assert change.batch_id == "daily-2" and change.status == T.CHANGE_REQUEST_STATUS_PENDING
    assert dict(change.previous_record.values) == ACME and dict(change.record.values) == renamed
    assert change.requester.subject == PUBLIC_SECURITY
    # Approved: the record's next version, written by the approval.
    await access(node, boss, "ReviewChangeRequest", review(held.change_request_id))
    assert await current(node, provider) == [renamed]
    # Every version stays readable, in clear, to the provider and the authority.
    for files in (provider, boss):
        versions = (await history(node, files)).versions
        assert [(v.version, v.batch_id, v.change_request_id) for v in versions] == [
            (1, "b1", ""),
            (2, "", held.change_request_id),
        ]
        assert [v.record.values["qymc"] for v in versions] == [ACME["qymc"], renamed["qymc"]]
        assert versions[0].written_by.endswith(f"/agency/{PUBLIC_SECURITY}")


async def test_one_batch_carries_one_value_per_key(loaded: Province) -> None:
    """Two values for one key in one batch would change a record without approval (a new
    key's version 1, then version 2): every occurrence is refused, the rest applies."""
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    beta = {"tyshxydm": "91350100MA00000029", "qymc": "福州乙公司", "fddbr": "赵六"}
    gamma = {"tyshxydm": make_credit_code("91350100MA0000004"), "qymc": "福州丙公司"}
    ack = await submit_batch(
        node,
        provider,
        "daily-2",
        [
            beta,  # 0: a new key ...
            gamma,  # 1: a new key, sent twice unchanged: fine
            beta | {"qymc": "福州乙有限公司"},  # 2: ... with another value
            ACME | {"qymc": "甲"},  # 3: a stored key ...
            gamma,  # 4
            ACME | {"qymc": "乙"},  # 5: ... changed two ways
        ],
    )
    assert (ack.accepted, ack.held, ack.rejected) == (2, 0, 4)
    reasons = {r.index: r.reason for r in ack.rejections}
    assert sorted(reasons) == [0, 2, 3, 5] and {r.item for r in ack.rejections} == {""}
    assert "records[2]" in reasons[0] and "records[0]" in reasons[2]
    assert "records[5]" in reasons[3] and "records[3]" in reasons[5]
    assert all("one value per key" in r and "第四十一条" in r for r in reasons.values())
    # Nothing of the conflicting keys was written or held: no change request waits.
    stored = []
    for record in (ACME, beta, gamma):
        key = {"tyshxydm": record["tyshxydm"]}
        request = sharing_pb2.QueryRequest(resource_code=CODE, key=key)
        reply = await sharing(node, provider, "Query", request)
        stored.append([dict(r.record.values) for r in reply.rows])
    assert stored == [[ACME], [], [gamma]]
    for files in (provider, boss):
        listed = await access(node, files, "ListChangeRequests", T.ListChangeRequestsRequest())
        assert list(listed.change_requests) == []
    gamma_history = await history(node, provider, key={"tyshxydm": gamma["tyshxydm"]})
    assert [v.version for v in gamma_history.versions] == [1]
    # One value per key in a later batch: the new key goes in, the change of the stored one is
    # held once, both of its occurrences naming the same request.
    ack = await submit_batch(node, provider, "daily-3", [beta, ACME | {"qymc": "乙"}] * 2)
    assert (ack.accepted, ack.held, ack.rejected) == (2, 2, 0)
    assert [h.index for h in ack.held_records] == [1, 3]
    assert len({h.change_request_id for h in ack.held_records}) == 1


async def test_submit_applies_changes_at_once_where_the_node_is_configured_to(
    tmp_path: Path, db_url: str
) -> None:
    setup = with_submit_updates(make_province(tmp_path / "province", db_url), "apply")
    node = await start(setup)
    try:
        provider = setup.agency(PUBLIC_SECURITY)
        await register(node, provider, OPEN)
        await submit(node, provider, CODE, [ACME])
        renamed = ACME | {"qymc": "新名称"}
        ack = await submit_batch(node, provider, "b2", [renamed])
        assert (ack.accepted, ack.held) == (1, 0)
        assert await current(node, provider) == [renamed]
        versions = (await history(node, provider)).versions
        assert [(v.version, v.batch_id) for v in versions] == [(1, "b1"), (2, "b2")]
        # With standing approval one batch may change a record twice: applied in order, the
        # later wins and both versions are kept.
        ack = await submit_batch(node, provider, "b3", [ACME | {"qymc": "甲"}, ACME])
        assert (ack.accepted, ack.held, ack.rejected) == (2, 0, 0)
        assert await current(node, provider) == [ACME]
        versions = (await history(node, provider)).versions
        assert [(v.version, v.record.values["qymc"]) for v in versions][2:] == [
            (3, "甲"),
            (4, ACME["qymc"]),
        ]
    finally:
        await node.stop(grace=0)


async def test_record_history_is_for_the_provider_and_the_authority(loaded: Province) -> None:
    setup, node = loaded
    for files in (setup.agency(CIVIL_AFFAIRS), setup.tester()):
        err = await refused(history(node, files))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert f"only its provider {PUBLIC_SECURITY}" in (err.details() or "")
    # A tester reads its probe's history; nobody reads a record that does not exist.
    probe = await history(node, setup.tester(), PROBE.resource_code)
    assert [v.version for v in probe.versions] == [1]
    async with channel(node, setup.agency(PUBLIC_SECURITY)) as ch:
        stub = sharing_pb2_grpc.SharingServiceStub(ch)
        missing = sharing_pb2.GetRecordHistoryRequest(
            resource_code=CODE, key={"tyshxydm": "91350100MA00000029"}
        )
        err = await refused(stub.GetRecordHistory(missing))
        assert err.code() is grpc.StatusCode.NOT_FOUND
        err = await refused(stub.GetRecordHistory(sharing_pb2.GetRecordHistoryRequest()))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT


# --- catalog entries -------------------------------------------------------------------------


async def test_update_and_withdraw_resource_become_change_requests(loaded: Province) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    renamed = entry_to_proto(OPEN.model_copy(update={"name": "法人基础信息（更正）"}))
    async with channel(node, provider) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        asked = await stub.UpdateResource(
            catalog_pb2.UpdateResourceRequest(entry=renamed, expected_version=1, reason="名称更正")
        )
        # Nothing changes before the approval; the reply names the pending request.
        assert asked.change_request_id.startswith(f"{PROVINCE}-C-")
        assert (asked.entry.version, asked.entry.name) == (1, OPEN.name)
        assert (await get_entry(node, provider, CODE)).version == 1
        await access(node, boss, "ReviewChangeRequest", review(asked.change_request_id))
        entry = await get_entry(node, provider, CODE)
        assert (entry.version, entry.name) == (2, "法人基础信息（更正）")
        withdrawal = await stub.WithdrawResource(
            catalog_pb2.WithdrawResourceRequest(resource_code=CODE, reason="职能调整")
        )
        assert withdrawal.entry.status == common_pb2.RESOURCE_STATUS_ACTIVE
        rejected = review(withdrawal.change_request_id, REJECT, comment="仍在使用")
        await access(node, boss, "ReviewChangeRequest", rejected)
        assert (await get_entry(node, provider, CODE)).status == common_pb2.RESOURCE_STATUS_ACTIVE
        # The authority sees both, with the reason each was asked for.
        listed = await access(
            node, boss, "ListChangeRequests", T.ListChangeRequestsRequest(resource_code=CODE)
        )
        assert {c.reason for c in listed.change_requests} == {"名称更正", "职能调整"}
    # A probe entry holds no government data: its tester changes it at once.
    async with channel(node, setup.tester()) as ch:
        probe = await catalog_pb2_grpc.CatalogServiceStub(ch).WithdrawResource(
            catalog_pb2.WithdrawResourceRequest(resource_code=PROBE.resource_code, reason="完")
        )
    assert probe.change_request_id == ""
    assert probe.entry.status == common_pb2.RESOURCE_STATUS_WITHDRAWN


async def test_catalog_update_and_withdrawal_apply_on_approval(loaded: Province) -> None:
    setup, node = loaded
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    renamed = OPEN.model_copy(update={"name": "法人基础信息（更正）"})
    asked = await ask(
        node,
        provider,
        T.RequestRecordChangeRequest(
            target=T.CHANGE_TARGET_RESOURCE_ENTRY,
            action=T.CHANGE_ACTION_UPDATE,
            resource_code=CODE,
            entry=entry_to_proto(renamed),
            reason="名称更正",
        ),
    )
    assert asked.previous_version == 1 and asked.entry.name == renamed.name
    assert (await get_entry(node, provider, CODE)).name == OPEN.name
    done = (await access(node, boss, "ReviewChangeRequest", review(asked.id))).change_request
    assert done.applied_version == 2
    entry = await get_entry(node, provider, CODE)
    assert entry.name == renamed.name and entry.version == 2

    withdrawal = await ask(
        node,
        provider,
        T.RequestRecordChangeRequest(
            target=T.CHANGE_TARGET_RESOURCE_ENTRY,
            action=T.CHANGE_ACTION_DELETE,
            resource_code=CODE,
            reason="职能调整，不再提供",
        ),
    )
    await access(node, boss, "ReviewChangeRequest", review(withdrawal.id))
    entry = await get_entry(node, provider, CODE)
    assert entry.status == common_pb2.RESOURCE_STATUS_WITHDRAWN and entry.version == 3


# --- refusals -------------------------------------------------------------------------------


async def test_refusals(loaded: Province) -> None:
    setup, node = loaded
    provider, boss, civil = (
        setup.agency(PUBLIC_SECURITY),
        authority(setup),
        setup.agency(CIVIL_AFFAIRS),
    )

    async def status(files: TlsFiles, method: str, request: Any) -> grpc.StatusCode:
        code: grpc.StatusCode = (await refused(access(node, files, method, request))).code()
        return code

    ask_ = "RequestRecordChange"
    # Not the provider: another agency, the authority itself.
    assert (
        await status(civil, ask_, change_record({"qymc": "x"})) is grpc.StatusCode.PERMISSION_DENIED
    )
    assert await status(boss, ask_, change_record(None)) is grpc.StatusCode.PERMISSION_DENIED
    # An unknown key.
    unknown = {"tyshxydm": "91350100MA00000029"}
    assert (
        await status(provider, ask_, change_record(None, key=unknown)) is grpc.StatusCode.NOT_FOUND
    )
    # New values checked like Submit: a bad credit code, an undeclared item, a key change.
    for values in (
        {"tyshxydm": "91350100MA0000000X"},
        {"zzzz": "1"},
        {"tyshxydm": "91350100MA00000029"},
    ):
        err = await refused(access(node, provider, ask_, change_record(values)))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (values, err.details())
    # No reason.
    err = await refused(access(node, provider, ask_, change_record(None, reason=" ")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "reason" in (err.details() or "")

    asked = await ask(node, provider, change_record({"qymc": "新名称"}))
    # Reviewed by an agency (the provider itself included) or a tester: refused.
    for files in (provider, civil, setup.tester()):
        assert (
            await status(files, "ReviewChangeRequest", review(asked.id))
            is grpc.StatusCode.PERMISSION_DENIED
        )
    # Another agency may not read it.
    get = T.GetChangeRequestRequest(id=asked.id)
    assert await status(civil, "GetChangeRequest", get) is grpc.StatusCode.PERMISSION_DENIED
    listed = await access(node, civil, "ListChangeRequests", T.ListChangeRequestsRequest())
    assert list(listed.change_requests) == []
    assert await current(node, provider) == [ACME]  # none of the refusals changed anything


async def test_another_regions_authority_may_not_review(
    loaded: Province, tmp_path: Path, db_url: str
) -> None:
    setup, node = loaded
    asked = await ask(node, setup.agency(PUBLIC_SECURITY), change_record(None))
    city = make_city(tmp_path / "city", db_url, setup)
    err = await refused(access(node, authority(city), "ReviewChangeRequest", review(asked.id)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert f"region {PROVINCE}" in (err.details() or "")


async def test_a_tester_changes_its_probe_records_only(loaded: Province) -> None:
    setup, node = loaded
    tester = setup.tester()
    asked = await ask(node, tester, change_record(None, code=PROBE.resource_code))
    done = await access(node, tester, "ReviewChangeRequest", review(asked.id))
    assert done.change_request.status == T.CHANGE_REQUEST_STATUS_APPROVED
    err = await refused(access(node, tester, "RequestRecordChange", change_record(None)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    # An agency cannot ask to change a probe's records.
    err = await refused(
        access(
            node,
            setup.agency(PUBLIC_SECURITY),
            "RequestRecordChange",
            change_record(None, code=PROBE.resource_code),
        )
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
