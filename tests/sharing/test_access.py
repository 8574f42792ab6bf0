"""有条件共享 applications and grants on one node (第二十五条, 第三十七条): an agency applies, the
node's data management authority reviews, the grant bounds every Verify, Compare and Query
(items, methods, period, clear text), revocation and expiry take effect on the next call, and
every refusal names its rule. Real node over real mutual TLS, on both backends."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    access_pb2,
    access_pb2_grpc,
    common_pb2,
    sharing_pb2,
)

from gateway.identity import Role, make_identity
from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.audit import AuditLog
from node.catalog import ShareType
from tests.support.access import (
    ACME,
    COND,
    ITEMS,
    KIND,
    OPEN,
    PROBE,
    M,
    Province,
    access,
    apply_request,
    approve,
    authority,
    next_note,
    notifications,
    poll_refused,
    query,
    refused,
    register,
    sharing,
    submit,
    ts,
    verify,
)
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    channel,
    entry_of,
    make_city,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TD = "fujian.gov.cn"
SECRET = entry_of(
    PROVINCE,
    3,
    items=ITEMS,
    share_type=ShareType.NOT_SHARED,
    share_methods=(),
    legal_basis="《中华人民共和国保守国家秘密法》",
)


# --- a loaded province (the helpers are in tests/support/access.py) ------------------------


@pytest.fixture
async def loaded(province: Province) -> Province:
    """The province with a 有条件共享, a 无条件共享 and a 暂不共享 resource of public security's,
    one record in the conditional one, and a conformance tester's conditional probe."""
    setup, node = province
    provider = setup.agency(PUBLIC_SECURITY)
    for entry in (COND, OPEN, SECRET):
        await register(node, provider, entry)
    await register(node, setup.tester(), PROBE)
    await submit(node, provider, COND.resource_code, [ACME])
    await submit(node, provider, OPEN.resource_code, [ACME])
    await submit(node, setup.tester(), PROBE.resource_code, [ACME])
    return setup, node


# --- the whole flow -------------------------------------------------------------------------


async def test_apply_review_use_and_revoke(loaded: Province) -> None:
    setup, node = loaded
    civil, provider, boss = (
        setup.agency(CIVIL_AFFAIRS),
        setup.agency(PUBLIC_SECURITY),
        authority(setup),
    )
    # Before any grant: refused, naming the application it needs (第二十五条).
    err = await refused(sharing(node, civil, "Query", query()))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "needs an approved application" in (err.details() or "")

    applied = (await access(node, civil, "Apply", apply_request(request_id="apply-1"))).application
    assert applied.id.startswith(f"{PROVINCE}-A-")
    assert applied.status == access_pb2.APPLICATION_STATUS_PENDING
    assert applied.applicant.identity == str(
        make_identity(PROVINCE, TD, Role.AGENCY, CIVIL_AFFAIRS)
    )
    again = await access(node, civil, "Apply", apply_request(request_id="apply-1"))
    assert again.application.id == applied.id  # idempotent by request_id

    # The provider and the authority are told (第二十五条), in the same transaction.
    for files in (provider, boss):
        [received] = await notifications(node, files)
        assert received.kind == KIND.NOTIFICATION_KIND_APPLICATION_RECEIVED
        assert received.application_id == applied.id
        assert COND.resource_code in received.message

    # The authority approves a narrower scope: two items, Query only, fddbr masked.
    reviewed = await access(
        node,
        boss,
        "ReviewApplication",
        approve(
            applied.id,
            items=["tyshxydm", "fddbr"],
            share_methods=[M.SHARE_METHOD_QUERY],
            comment="仅限审批核验",
        ),
    )
    grant = reviewed.grant
    assert reviewed.application.status == access_pb2.APPLICATION_STATUS_APPROVED
    assert reviewed.application.grant_id == grant.id and grant.id.startswith(f"{PROVINCE}-G-")
    assert list(grant.items) == ["tyshxydm", "fddbr"]
    assert list(grant.share_methods) == [M.SHARE_METHOD_QUERY]
    assert reviewed.application.reviewer.role == "authority"

    # Query returns only the granted items, fddbr masked by its rule.
    reply = await sharing(
        node, civil, "Query", query(), metadata=((REQUEST_ID_KEY, "rid-granted"),)
    )
    [row] = reply.rows
    assert dict(row.record.values) == {"tyshxydm": ACME["tyshxydm"], "fddbr": "王*"}
    assert list(row.masked_items) == ["fddbr"]
    [record] = await AuditLog(node.db).query(request_id="rid-granted")
    assert record.detail["grant"] == grant.id

    # Outside the grant: an item, a claim, a method; each names what is missing.
    err = await refused(sharing(node, civil, "Query", query(items=("qymc",))))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "qymc" in (err.details() or "") and "越权使用, 第三十七条" in (err.details() or "")
    err = await refused(sharing(node, civil, "Verify", verify(fddbr="王五")))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "联机验证 (Verify)" in (err.details() or "") and "越权使用" in (err.details() or "")

    # The applicant and the provider learn of the review.
    [_, reviewed_note] = await notifications(node, provider)
    assert reviewed_note.kind == KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED
    [note] = await notifications(node, civil)
    assert note.kind == KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED and note.grant_id == grant.id

    # Revocation takes effect on the next call; grantee and provider are told.
    revoked = await access(
        node,
        boss,
        "RevokeGrant",
        access_pb2.RevokeGrantRequest(grant_id=grant.id, reason="用途变更"),
    )
    assert revoked.grant.revoked and revoked.grant.revoke_reason == "用途变更"
    err = await refused(sharing(node, civil, "Query", query()))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "revoked" in (err.details() or "") and grant.id in (err.details() or "")
    assert (await notifications(node, civil))[-1].kind == KIND.NOTIFICATION_KIND_GRANT_REVOKED
    assert (await notifications(node, provider))[-1].kind == KIND.NOTIFICATION_KIND_GRANT_REVOKED

    # The unconditional resource needs no grant at all.
    reply = await sharing(node, civil, "Query", query(OPEN.resource_code))
    assert reply.rows[0].record.values["qymc"] == ACME["qymc"]


async def test_verify_compare_and_clear_text_within_a_grant(loaded: Province) -> None:
    setup, node = loaded
    civil, boss = setup.agency(CIVIL_AFFAIRS), authority(setup)
    applied = (
        await access(
            node,
            civil,
            "Apply",
            apply_request(
                methods=(M.SHARE_METHOD_VERIFY, M.SHARE_METHOD_COMPARE, M.SHARE_METHOD_QUERY)
            ),
        )
    ).application
    err = await refused(
        access(node, boss, "ReviewApplication", approve(applied.id, clear_text_items=["fddbr"]))
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "justification" in (
        err.details() or ""
    )
    reviewed = await access(
        node,
        boss,
        "ReviewApplication",
        approve(
            applied.id,
            items=["tyshxydm", "fddbr"],
            clear_text_items=["fddbr"],
            justification="审批须核对法定代表人姓名",
        ),
    )
    assert list(reviewed.grant.clear_text_items) == ["fddbr"]
    [row] = (await sharing(node, civil, "Query", query())).rows
    assert dict(row.record.values) == {"tyshxydm": ACME["tyshxydm"], "fddbr": "王五"}
    ok = await sharing(node, civil, "Verify", verify(fddbr="王五"))
    assert ok.found and ok.all_match
    err = await refused(sharing(node, civil, "Verify", verify(qymc=ACME["qymc"])))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "Verify claimed: item qymc" in (err.details() or "")
    compare = sharing_pb2.CompareRequest(
        resource_code=COND.resource_code,
        records=[
            sharing_pb2.CompareRecord(
                ref="1", key={"tyshxydm": ACME["tyshxydm"]}, claimed={"qymc": "x"}
            )
        ],
    )
    err = await refused(sharing(node, civil, "Compare", compare))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and "qymc" in (err.details() or "")


async def test_expiry_takes_effect_on_the_next_call(loaded: Province) -> None:
    setup, node = loaded
    civil, boss = setup.agency(CIVIL_AFFAIRS), authority(setup)
    applied = (await access(node, civil, "Apply", apply_request())).application
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    await access(node, boss, "ReviewApplication", approve(applied.id, not_after=ts(end)))
    assert (await sharing(node, civil, "Query", query())).rows
    err = await poll_refused(lambda: sharing(node, civil, "Query", query()))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "ended at" in (err.details() or "") and "越权使用" in (err.details() or "")
    # Expired grants are left out of ListGrants unless asked for.
    listed = await access(node, civil, "ListGrants", access_pb2.ListGrantsRequest())
    assert list(listed.grants) == []
    listed = await access(
        node, civil, "ListGrants", access_pb2.ListGrantsRequest(include_inactive=True)
    )
    assert [g.application_id for g in listed.grants] == [applied.id]


# --- refusals ---------------------------------------------------------------------------------


async def test_apply_refusals_name_their_rule(loaded: Province) -> None:
    setup, node = loaded
    civil = setup.agency(CIVIL_AFFAIRS)
    cases: list[tuple[TlsFiles, access_pb2.ApplyRequest, grpc.StatusCode, str]] = [
        (
            civil,
            apply_request(SECRET.resource_code),
            grpc.StatusCode.PERMISSION_DENIED,
            "第二十四条",
        ),
        (
            civil,
            apply_request(OPEN.resource_code),
            grpc.StatusCode.FAILED_PRECONDITION,
            "needs no application",
        ),
        (civil, apply_request(items=("nope",)), grpc.StatusCode.INVALID_ARGUMENT, "items: 'nope'"),
        (civil, apply_request(items=()), grpc.StatusCode.INVALID_ARGUMENT, "items"),
        (
            civil,
            apply_request(methods=(M.SHARE_METHOD_EXCHANGE,)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "数据交换 (Exchange)",
        ),
        (civil, apply_request(purpose=""), grpc.StatusCode.INVALID_ARGUMENT, "purpose: required"),
        (
            civil,
            apply_request(legal_basis=" "),
            grpc.StatusCode.INVALID_ARGUMENT,
            "legal_basis: required",
        ),
        (civil, apply_request(days=-1), grpc.StatusCode.INVALID_ARGUMENT, "not_after"),
        (
            setup.agency(PUBLIC_SECURITY),
            apply_request(),
            grpc.StatusCode.FAILED_PRECONDITION,
            "its provider uses it",
        ),
        (authority(setup), apply_request(), grpc.StatusCode.PERMISSION_DENIED, "第二十五条"),
        (setup.tester(), apply_request(), grpc.StatusCode.PERMISSION_DENIED, "第三十一条"),
        (civil, apply_request("350000-3-999999"), grpc.StatusCode.NOT_FOUND, "350000-3-999999"),
    ]
    missing_end = apply_request()
    missing_end.ClearField("not_after")
    cases.append((civil, missing_end, grpc.StatusCode.INVALID_ARGUMENT, "not_after: required"))
    for files, request, code, needle in cases:
        err = await refused(access(node, files, "Apply", request))
        assert (err.code(), needle in (err.details() or "")) == (code, True), (
            needle,
            err.details(),
        )


async def test_review_and_revoke_refusals(loaded: Province, tmp_path: Path) -> None:
    setup, node = loaded
    civil, boss = setup.agency(CIVIL_AFFAIRS), authority(setup)
    applied = (await access(node, civil, "Apply", apply_request(days=10))).application
    # Another region's authority: a 福州 authority certificate, valid in the federation.
    fuzhou = make_city(tmp_path / "fuzhou", "sqlite+aiosqlite:///unused.db", setup)
    elsewhere = authority(fuzhou)
    late = ts(dt.datetime.now(dt.UTC) + dt.timedelta(days=20))
    early = ts(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    cases: list[tuple[TlsFiles, access_pb2.ReviewApplicationRequest, grpc.StatusCode, str]] = [
        (civil, approve(applied.id), grpc.StatusCode.PERMISSION_DENIED, "数据管理机构"),
        (
            setup.agency(PUBLIC_SECURITY),
            approve(applied.id),
            grpc.StatusCode.PERMISSION_DENIED,
            "only the data management authority",
        ),
        (setup.tester(), approve(applied.id), grpc.StatusCode.PERMISSION_DENIED, "第三十一条"),
        (elsewhere, approve(applied.id), grpc.StatusCode.PERMISSION_DENIED, "region 350000"),
        (
            boss,
            approve(applied.id, items=["tyshxydm", "nope"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "only narrow the items",
        ),
        (
            boss,
            approve(applied.id, share_methods=[M.SHARE_METHOD_COMPARE]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "only narrow the methods",
        ),
        (
            boss,
            approve(applied.id, not_after=late),
            grpc.StatusCode.INVALID_ARGUMENT,
            "later than the end applied for",
        ),
        (
            boss,
            approve(applied.id, not_before=early),
            grpc.StatusCode.INVALID_ARGUMENT,
            "only narrow the period",
        ),
        (
            boss,
            approve(applied.id, clear_text_items=["qymc"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "justification: required",
        ),
        (
            boss,
            approve(applied.id, items=["tyshxydm"], clear_text_items=["fddbr"], justification="x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not among the granted items",
        ),
        (
            boss,
            access_pb2.ReviewApplicationRequest(
                application_id=applied.id, decision=common_pb2.REVIEW_DECISION_REJECT
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "comment: required",
        ),
        (
            boss,
            access_pb2.ReviewApplicationRequest(application_id=applied.id),
            grpc.StatusCode.INVALID_ARGUMENT,
            "decision is required",
        ),
        (boss, approve("350000-A-0000"), grpc.StatusCode.NOT_FOUND, "350000-A-0000"),
    ]
    for files, request, code, needle in cases:
        err = await refused(access(node, files, "ReviewApplication", request))
        assert (err.code(), needle in (err.details() or "")) == (code, True), (
            needle,
            err.details(),
        )
    rejected = await access(
        node,
        boss,
        "ReviewApplication",
        access_pb2.ReviewApplicationRequest(
            application_id=applied.id,
            decision=common_pb2.REVIEW_DECISION_REJECT,
            comment="用途与职责不符",
        ),
    )
    assert rejected.application.status == access_pb2.APPLICATION_STATUS_REJECTED
    assert not rejected.HasField("grant")
    err = await refused(access(node, boss, "ReviewApplication", approve(applied.id)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and "already rejected" in (
        err.details() or ""
    )
    [note] = await notifications(node, civil)
    assert (
        note.kind == KIND.NOTIFICATION_KIND_APPLICATION_REVIEWED
        and "用途与职责不符" in note.message
    )

    # Revocation: the authority only, with a reason.
    second = (await access(node, civil, "Apply", apply_request())).application
    grant = (await access(node, boss, "ReviewApplication", approve(second.id))).grant
    for files, reason, code in (
        (civil, "x", grpc.StatusCode.PERMISSION_DENIED),
        (elsewhere, "x", grpc.StatusCode.PERMISSION_DENIED),
        (boss, "", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        revoke = access_pb2.RevokeGrantRequest(grant_id=grant.id, reason=reason)
        err = await refused(access(node, files, "RevokeGrant", revoke))
        assert err.code() is code, err.details()


async def test_who_sees_what(loaded: Province) -> None:
    setup, node = loaded
    civil, market = setup.agency(CIVIL_AFFAIRS), setup.agency(MARKET_REGULATION)
    provider, boss = setup.agency(PUBLIC_SECURITY), authority(setup)
    applied = (await access(node, civil, "Apply", apply_request())).application
    get = access_pb2.GetApplicationRequest(id=applied.id)
    for files in (civil, provider, boss):
        assert (await access(node, files, "GetApplication", get)).application.id == applied.id
    err = await refused(access(node, market, "GetApplication", get))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    listed = await access(node, market, "ListApplications", access_pb2.ListApplicationsRequest())
    assert list(listed.applications) == []
    for files in (civil, provider, boss):
        listed = await access(node, files, "ListApplications", access_pb2.ListApplicationsRequest())
        assert [a.id for a in listed.applications] == [applied.id]
    # Notifications are the recipient's own.
    assert await notifications(node, market) == []
    assert await notifications(node, civil) == []
    # Only the applicant withdraws, and only while pending.
    withdraw = access_pb2.WithdrawApplicationRequest(id=applied.id)
    for files in (market, provider, boss):
        err = await refused(access(node, files, "WithdrawApplication", withdraw))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED, err.details()
    gone = await access(node, civil, "WithdrawApplication", withdraw)
    assert gone.application.status == access_pb2.APPLICATION_STATUS_WITHDRAWN
    err = await refused(access(node, civil, "WithdrawApplication", withdraw))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    err = await refused(access(node, boss, "ReviewApplication", approve(applied.id)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION and "withdrawn" in (
        err.details() or ""
    )
    # Grants: the grantee, the provider and the authority see one; another agency does not.
    second = (await access(node, civil, "Apply", apply_request())).application
    grant = (await access(node, boss, "ReviewApplication", approve(second.id))).grant
    for files in (civil, provider, boss):
        got = await access(node, files, "GetGrant", access_pb2.GetGrantRequest(id=grant.id))
        assert got.grant.id == grant.id
        listed = await access(node, files, "ListGrants", access_pb2.ListGrantsRequest())
        assert [g.id for g in listed.grants] == [grant.id]
    err = await refused(access(node, market, "GetGrant", access_pb2.GetGrantRequest(id=grant.id)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (
        list((await access(node, market, "ListGrants", access_pb2.ListGrantsRequest())).grants)
        == []
    )
    # And the grant serves its grantee only.
    err = await refused(sharing(node, market, "Query", query()))
    assert "needs an approved application" in (err.details() or "")


async def test_watch_streams_old_then_new_notifications(loaded: Province) -> None:
    setup, node = loaded
    civil, provider = setup.agency(CIVIL_AFFAIRS), setup.agency(PUBLIC_SECURITY)
    await access(node, civil, "Apply", apply_request())
    async with channel(node, provider) as ch:
        stream = access_pb2_grpc.AccessServiceStub(ch).WatchNotifications(
            access_pb2.WatchNotificationsRequest(), timeout=10
        )
        first = await next_note(stream)
        assert first.kind == KIND.NOTIFICATION_KIND_APPLICATION_RECEIVED
        await access(node, civil, "Apply", apply_request(items=("tyshxydm",)))
        second = await asyncio.wait_for(next_note(stream), timeout=5)
        assert second.id > first.id and second.kind == first.kind
        stream.cancel()
    # Resuming after the last id received sends nothing twice.
    listed = await access(
        node,
        provider,
        "ListNotifications",
        access_pb2.ListNotificationsRequest(after_id=first.id),
    )
    assert [n.id for n in listed.notifications] == [second.id]


async def test_a_tester_manages_its_probe_end_to_end(loaded: Province) -> None:
    setup, node = loaded
    tester = setup.tester()
    err = await refused(sharing(node, tester, "Query", query(PROBE.resource_code)))
    assert "needs an approved application" in (err.details() or "")
    applied = (
        await access(
            node, tester, "Apply", apply_request(PROBE.resource_code, items=("tyshxydm", "qymc"))
        )
    ).application
    grant = (await access(node, tester, "ReviewApplication", approve(applied.id))).grant
    [row] = (await sharing(node, tester, "Query", query(PROBE.resource_code))).rows
    assert dict(row.record.values) == {"tyshxydm": ACME["tyshxydm"], "qymc": ACME["qymc"]}
    await access(
        node, tester, "RevokeGrant", access_pb2.RevokeGrantRequest(grant_id=grant.id, reason="done")
    )
    err = await refused(sharing(node, tester, "Query", query(PROBE.resource_code)))
    assert "revoked" in (err.details() or "")
    # The agency that applies for a probe is refused; an agency cannot review a probe's either.
    err = await refused(
        access(node, setup.agency(CIVIL_AFFAIRS), "Apply", apply_request(PROBE.resource_code))
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED, err.details()
