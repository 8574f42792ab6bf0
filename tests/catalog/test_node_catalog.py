"""The catalog over the wire: agencies register, update and read entries with their own
certificates; every refusal is a clear status and leaves nothing half-written."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.demo import EXAMPLES_DIR, load_example_catalog
from node.servicers.convert import entry_from_proto, entry_to_proto
from tests.support.entries import OPEN_ENTRY, make_entry
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    PUBLIC_SECURITY,
    ProvinceSetup,
    approve_change,
    channel,
)

Province = tuple[ProvinceSetup, RunningNode]

EXAMPLES = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml")
PEOPLE, COMPANIES, MARRIAGE, PETITIONS = EXAMPLES.resources


def entry(resource: object, **changes: object) -> common_pb2.ResourceEntry:
    msg = entry_to_proto(resource)  # type: ignore[arg-type]
    for field, value in changes.items():
        setattr(msg, field, value)
    return msg


async def call(node: RunningNode, files: TlsFiles, method: str, request: object) -> object:
    async with channel(node, files) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        return await getattr(stub, method)(request)


async def refused(
    node: RunningNode, files: TlsFiles, method: str, request: object
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(node, files, method, request)
    return err.value


async def healthy(node: RunningNode, files: TlsFiles) -> bool:
    async with channel(node, files) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def agency(setup: ProvinceSetup, code: str) -> TlsFiles:
    names = {a.code: a.name for a in EXAMPLES.agencies}
    return setup.agency(code, names.get(code, "测试单位"))


async def register(
    setup: ProvinceSetup, node: RunningNode, resource: object
) -> common_pb2.ResourceEntry:
    msg = entry(resource)
    reply = await call(
        node,
        agency(setup, msg.provider_code),
        "RegisterResource",
        catalog_pb2.RegisterResourceRequest(entry=msg),
    )
    return reply.entry  # type: ignore[attr-defined, no-any-return]


async def test_registration_update_history_and_listing(province: Province) -> None:
    setup, node = province
    got = await register(setup, node, PEOPLE)
    assert (got.version, got.region, got.status) == (1, "350000", common_pb2.RESOURCE_STATUS_ACTIVE)
    assert got.created_at.seconds > 0
    police = agency(setup, PUBLIC_SECURITY)
    changed = entry(PEOPLE, summary="新的摘要")
    # An update is a change request until the authority approves it (第四十一条).
    asked = await call(
        node,
        police,
        "UpdateResource",
        catalog_pb2.UpdateResourceRequest(entry=changed, expected_version=1, reason="摘要更正"),
    )
    assert asked.change_request_id.startswith("350000-C-")  # type: ignore[attr-defined]
    assert (asked.entry.version, asked.entry.summary) == (1, PEOPLE.summary)  # type: ignore[attr-defined]
    await approve_change(node, setup, asked.change_request_id)  # type: ignore[attr-defined]
    history = await call(
        node,
        police,
        "GetResourceHistory",
        catalog_pb2.GetResourceHistoryRequest(resource_code=PEOPLE.resource_code),
    )
    assert [(v.version, v.summary) for v in history.versions] == [  # type: ignore[attr-defined]
        (1, PEOPLE.summary),
        (2, "新的摘要"),
    ]
    # Any registered agency reads the catalog, and sees the latest version.
    other = agency(setup, CIVIL_AFFAIRS)
    listing = await call(node, other, "ListResources", catalog_pb2.ListResourcesRequest())
    assert [(e.resource_code, e.version) for e in listing.entries] == [  # type: ignore[attr-defined]
        (PEOPLE.resource_code, 2)
    ]
    old = await call(
        node,
        other,
        "GetResource",
        catalog_pb2.GetResourceRequest(resource_code=PEOPLE.resource_code, version=1),
    )
    assert old.entry.summary == PEOPLE.summary  # type: ignore[attr-defined]


async def test_a_stale_expected_version_is_refused(province: Province) -> None:
    setup, node = province
    await register(setup, node, PEOPLE)
    err = await refused(
        node,
        agency(setup, PUBLIC_SECURITY),
        "UpdateResource",
        catalog_pb2.UpdateResourceRequest(entry=entry(PEOPLE), expected_version=7, reason="x"),
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "7" in (err.details() or "")
    # An update without its reason: the change request needs one (第四十一条).
    err = await refused(
        node,
        agency(setup, PUBLIC_SECURITY),
        "UpdateResource",
        catalog_pb2.UpdateResourceRequest(entry=entry(PEOPLE), expected_version=1),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (err.details() or "")


async def test_an_invalid_resource_code_is_refused(province: Province) -> None:
    setup, node = province
    err = await refused(
        node,
        agency(setup, PUBLIC_SECURITY),
        "RegisterResource",
        catalog_pb2.RegisterResourceRequest(entry=entry(PEOPLE, resource_code="RES-1")),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "entry.resource_code" in (err.details() or "")
    assert await healthy(node, agency(setup, PUBLIC_SECURITY))


async def test_an_invalid_agency_code_is_refused(province: Province) -> None:
    setup, node = province
    bad = PUBLIC_SECURITY[:-1] + ("0" if PUBLIC_SECURITY[-1] != "0" else "1")
    err = await refused(
        node,
        agency(setup, PUBLIC_SECURITY),
        "RegisterResource",
        catalog_pb2.RegisterResourceRequest(entry=entry(PEOPLE, provider_code=bad)),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "entry.provider_code" in (err.details() or "")
    assert "GB 32100" in (err.details() or "")


async def test_an_unspecified_share_type_is_refused_by_name(province: Province) -> None:
    setup, node = province
    err = await refused(
        node,
        agency(setup, PUBLIC_SECURITY),
        "RegisterResource",
        catalog_pb2.RegisterResourceRequest(
            entry=entry(PEOPLE, share_type=common_pb2.SHARE_TYPE_UNSPECIFIED)
        ),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "entry.share_type is required" in (err.details() or "")


async def test_not_shared_without_a_legal_basis_is_refused(province: Province) -> None:
    setup, node = province
    err = await refused(
        node,
        agency(setup, PETITIONS.provider_code),
        "RegisterResource",
        catalog_pb2.RegisterResourceRequest(entry=entry(PETITIONS, legal_basis="")),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "entry.legal_basis" in (err.details() or "")
    assert "第二十四条" in (err.details() or "")


async def test_a_non_provider_may_not_change_an_entry(province: Province) -> None:
    setup, node = province
    await register(setup, node, PEOPLE)
    intruder = agency(setup, CIVIL_AFFAIRS)
    err = await refused(
        node,
        intruder,
        "UpdateResource",
        catalog_pb2.UpdateResourceRequest(entry=entry(PEOPLE, summary="篡改"), reason="改"),
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert PUBLIC_SECURITY in (err.details() or "")
    err = await refused(
        node,
        intruder,
        "WithdrawResource",
        catalog_pb2.WithdrawResourceRequest(resource_code=PEOPLE.resource_code, reason="x"),
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    current = await call(
        node,
        intruder,
        "GetResource",
        catalog_pb2.GetResourceRequest(resource_code=PEOPLE.resource_code),
    )
    assert (current.entry.version, current.entry.summary) == (1, PEOPLE.summary)  # type: ignore[attr-defined]


async def test_registering_for_another_agency_is_refused(province: Province) -> None:
    setup, node = province
    err = await refused(
        node,
        agency(setup, CIVIL_AFFAIRS),
        "RegisterResource",
        catalog_pb2.RegisterResourceRequest(entry=entry(PEOPLE)),
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_duplicate_authoritative_source_is_refused_and_nothing_is_written(
    province: Province,
) -> None:
    setup, node = province
    await register(setup, node, PEOPLE)
    civil = agency(setup, CIVIL_AFFAIRS)
    before = await call(node, civil, "GetCatalogDigest", catalog_pb2.GetCatalogDigestRequest())
    claim = entry(MARRIAGE)
    claim.items[0].authoritative_source = True  # gmsfhm, DE0001: already sourced by 公安厅
    err = await refused(
        node, civil, "RegisterResource", catalog_pb2.RegisterResourceRequest(entry=claim)
    )
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    message = err.details() or ""
    assert "DE0001" in message and PEOPLE.resource_code in message and "一数一源" in message
    missing = await refused(
        node,
        civil,
        "GetResource",
        catalog_pb2.GetResourceRequest(resource_code=MARRIAGE.resource_code),
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    after = await call(node, civil, "GetCatalogDigest", catalog_pb2.GetCatalogDigestRequest())
    assert after == before
    # Referencing the source instead of claiming it is what the law asks, and it works.
    assert (await register(setup, node, MARRIAGE)).version == 1
    assert await healthy(node, civil)


async def test_open_treatments_round_trip_and_one_on_a_sensitive_item_is_refused(
    province: Province,
) -> None:
    """What the open data holds of each item (脱密脱敏, 第二十九条) comes back as registered; a
    level-3 item that would open is refused naming the item and the article, and nothing is
    written."""
    setup, node = province
    allowance = make_entry(
        9,
        CIVIL_AFFAIRS,
        resource_code="350000-3-000009",
        provider_name="福建省民政厅",
        **OPEN_ENTRY,
    )
    civil = agency(setup, CIVIL_AFFAIRS)
    sensitive = entry(allowance)
    sensitive.items[1].sensitivity_level = 3  # xm, pseudonymized
    sensitive.open_type = common_pb2.OPEN_TYPE_AUTHORIZED  # what level 3 allows
    err = await refused(
        node, civil, "RegisterResource", catalog_pb2.RegisterResourceRequest(entry=sensitive)
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == (
        "entry.items[1].open.kind: pseudonymize is not allowed: the item has sensitivity level 3, "
        "and level 3 and 4 items are never opened; leave it unset (drop) (分级管理, 第三十七条)"
    )
    registered = await register(setup, node, allowance)  # nothing of the refusal was written
    got = await call(
        node,
        agency(setup, PUBLIC_SECURITY),
        "GetResource",
        catalog_pb2.GetResourceRequest(resource_code=allowance.resource_code),
    )
    assert got.entry == registered  # type: ignore[attr-defined]
    assert list(registered.items) == list(entry(allowance).items)
    assert entry_from_proto(registered).items == allowance.items
    birth = registered.items[2]
    assert (birth.open.kind, birth.open.generalize, birth.quasi_identifier) == (
        common_pb2.OPEN_TREATMENT_KIND_GENERALIZE,
        common_pb2.GENERALIZATION_YEAR,
        True,
    )
    assert registered.items[0].open.kind == common_pb2.OPEN_TREATMENT_KIND_UNSPECIFIED  # dropped


async def test_node_info_reports_identity_and_catalog(province: Province) -> None:
    from govnode.v1 import federation_pb2, federation_pb2_grpc

    setup, node = province
    await register(setup, node, COMPANIES)
    async with channel(node, agency(setup, PUBLIC_SECURITY)) as ch:
        info = (
            await federation_pb2_grpc.FederationServiceStub(ch).GetNodeInfo(
                federation_pb2.GetNodeInfoRequest()
            )
        ).node
    assert info.node_identity == "spiffe://350000.fujian.gov.cn/node"
    assert info.mode == federation_pb2.NODE_MODE_PROVINCE
    assert info.catalog_last_sequence == 1
    assert info.server_time.seconds > 0


async def test_a_retried_request_id_applies_once(province: Province) -> None:
    setup, node = province
    police = agency(setup, PUBLIC_SECURITY)
    request = catalog_pb2.RegisterResourceRequest(entry=entry(PEOPLE), request_id="reg-1")
    first = await call(node, police, "RegisterResource", request)
    again = await call(node, police, "RegisterResource", request)
    assert again == first
    update = catalog_pb2.UpdateResourceRequest(
        entry=entry(PEOPLE, summary="二"), expected_version=1, request_id="upd-1", reason="更正"
    )
    once = await call(node, police, "UpdateResource", update)
    twice = await call(node, police, "UpdateResource", update)
    assert twice == once  # the same change request, not a second one
    await approve_change(node, setup, once.change_request_id)  # type: ignore[attr-defined]
    thrice = await call(node, police, "UpdateResource", update)  # after the approval too
    assert thrice.change_request_id == once.change_request_id  # type: ignore[attr-defined]
    digest = await call(node, police, "GetCatalogDigest", catalog_pb2.GetCatalogDigestRequest())
    assert digest.last_sequence == 2  # type: ignore[attr-defined]
    err = await refused(
        node,
        police,
        "WithdrawResource",
        catalog_pb2.WithdrawResourceRequest(
            resource_code=PEOPLE.resource_code, reason="x", request_id="reg-1"
        ),
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "already used" in (err.details() or "")
    # Without an id, a repeated registration is a conflict, not a second entry.
    dup = await refused(
        node, police, "RegisterResource", catalog_pb2.RegisterResourceRequest(entry=entry(PEOPLE))
    )
    assert dup.code() is grpc.StatusCode.ALREADY_EXISTS
