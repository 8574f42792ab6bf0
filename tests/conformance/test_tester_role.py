"""Conformance testers (第三十一条): a tester identity registers, feeds, uses and withdraws probe
resources, and nothing else; it is never their provider, so share types, methods and masking
apply to it as to any agency; a routed call works through the province; and
`govnode certs issue-tester` writes a tester bundle whose negative certificates every node
refuses. Real nodes over real mutual TLS, on both backends."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from govnode.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    catalog_pb2,
    common_pb2,
    sharing_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.identity import Role, make_identity
from gateway.interceptors import REQUEST_ID_KEY
from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit import AuditLog
from node.catalog import (
    ResourceEntry,
    ShareMethod,
    ShareType,
    entry_from_json,
    entry_to_json,
)
from node.pki import (
    PkiError,
    ProvisionError,
    Revocations,
    issue_client,
    issue_tester,
    prepare_tester,
    region_ca,
)
from node.pki._ca import issue_out_of_region_probe
from node.servicers.convert import entry_to_proto
from tests.support.cli import assert_one_line_error, govnode
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    FUZHOU,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    entry_of,
    federation,
    make_city,
    make_province,
)
from tests.support.testers import (
    ACME,
    ITEMS,
    REAL,
    SHARED,
    catalog,
    node_info,
    refused,
    register,
    sharing,
    submit,
    verify,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Province = tuple[ProvinceSetup, RunningNode]
TD = "fujian.gov.cn"
TESTER = str(make_identity(PROVINCE, TD, Role.TESTER, "lab-1"))

PROBE = entry_of(PROVINCE, 901, probe=True, **SHARED)
PROBE_CONDITIONAL = entry_of(
    PROVINCE, 902, probe=True, items=ITEMS, share_methods=(ShareMethod.VERIFY, ShareMethod.QUERY)
)
PROBE_NOT_SHARED = entry_of(
    PROVINCE,
    903,
    probe=True,
    items=ITEMS,
    share_type=ShareType.NOT_SHARED,
    share_methods=(),
    legal_basis="《中华人民共和国保守国家秘密法》",
)


# --- calls ----------------------------------------------------------------------------------


def update(entry: ResourceEntry, **changes: Any) -> catalog_pb2.UpdateResourceRequest:
    msg = entry_to_proto(entry.model_copy(update=changes))
    return catalog_pb2.UpdateResourceRequest(entry=msg, reason="更新")


def withdraw(entry: ResourceEntry) -> catalog_pb2.WithdrawResourceRequest:
    return catalog_pb2.WithdrawResourceRequest(
        resource_code=entry.resource_code, reason="conformance run over"
    )


def query(code: str) -> sharing_pb2.QueryRequest:
    return sharing_pb2.QueryRequest(resource_code=code, key={"tyshxydm": ACME["tyshxydm"]})


def compare(code: str) -> sharing_pb2.CompareRequest:
    return sharing_pb2.CompareRequest(
        resource_code=code,
        records=[sharing_pb2.CompareRecord(ref="1", key={"tyshxydm": ACME["tyshxydm"]})],
    )


@pytest.fixture
async def probed(province: Province) -> Province:
    """Public security's own resource with a record; the tester's three probes, the
    unconditional one with a record."""
    setup, node = province
    agency, tester = setup.agency(PUBLIC_SECURITY), setup.tester()
    await catalog(node, agency, "RegisterResource", register(REAL))
    assert (await submit(node, agency, REAL.resource_code, [ACME]))[0].accepted == 1
    for probe in (PROBE, PROBE_CONDITIONAL, PROBE_NOT_SHARED):
        reply = await catalog(node, tester, "RegisterResource", register(probe))
        assert reply.entry.probe and reply.entry.provider_code == PUBLIC_SECURITY
    assert (await submit(node, tester, PROBE.resource_code, [ACME]))[0].accepted == 1
    return setup, node


# --- the catalog: probes are the testers', everything else is not --------------------------


def test_the_probe_flag_is_stored_only_when_set() -> None:
    # Entries stored before probes existed keep their exact text, so catalog digests agree
    # across nodes whichever release wrote an entry.
    assert '"probe"' not in entry_to_json(REAL)
    text = entry_to_json(PROBE)
    assert '"probe":true' in text and entry_from_json(text) == PROBE
    assert entry_from_json(entry_to_json(REAL)) == REAL


async def test_a_tester_registers_changes_and_withdraws_probe_resources_only(
    probed: Province,
) -> None:
    setup, node = probed
    tester = setup.tester()

    err = await refused(
        catalog(node, tester, "RegisterResource", register(entry_of(PROVINCE, 904)))
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "testers may only register probe resources" in (err.details() or "")
    assert "第三十一条" in (err.details() or "")

    changed = await catalog(node, tester, "UpdateResource", update(PROBE, summary="第二版"))
    assert changed.entry.version == 2 and changed.entry.probe
    err = await refused(catalog(node, tester, "UpdateResource", update(PROBE, probe=False)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "entry.probe: cannot change from true to false" in (err.details() or "")

    err = await refused(catalog(node, tester, "UpdateResource", update(REAL, summary="改")))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "testers may only change probe resources" in (err.details() or "")
    err = await refused(catalog(node, tester, "WithdrawResource", withdraw(REAL)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "testers may only withdraw probe resources" in (err.details() or "")

    gone = await catalog(node, tester, "WithdrawResource", withdraw(PROBE))
    assert gone.entry.status == common_pb2.RESOURCE_STATUS_WITHDRAWN and gone.entry.probe
    real = await catalog(
        node,
        tester,
        "GetResource",
        catalog_pb2.GetResourceRequest(resource_code=REAL.resource_code),
    )
    assert real.entry.version == 1  # nothing the tester tried left a trace on it


async def test_a_probes_provider_code_is_checked_like_any_other(province: Province) -> None:
    setup, node = province
    tester = setup.tester()
    other_region = entry_of(PROVINCE, 905, probe=True, provider_code=agency_code(1, "360100"))
    err = await refused(catalog(node, tester, "RegisterResource", register(other_region)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "outside this node's region 350000" in (err.details() or "")
    bad = entry_to_proto(entry_of(PROVINCE, 906, probe=True))
    bad.provider_code = "113500000035910015"  # wrong GB 32100 check character
    err = await refused(catalog(node, tester, "RegisterResource", register(bad)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "GB 32100" in (err.details() or "")


async def test_only_testers_register_and_change_probe_resources(probed: Province) -> None:
    setup, node = probed
    agency = setup.agency(PUBLIC_SECURITY)  # the provider_code the probes name
    err = await refused(
        catalog(node, agency, "RegisterResource", register(entry_of(PROVINCE, 907, probe=True)))
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "probe resources are registered by conformance testers only" in (err.details() or "")

    for request, method in (
        (update(PROBE, summary="改"), "UpdateResource"),
        (withdraw(PROBE), "WithdrawResource"),
    ):
        err = await refused(catalog(node, agency, method, request))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED, method
        assert "it is a conformance probe" in (err.details() or "")
        assert "by conformance testers only (第三十一条)" in (err.details() or "")

    # An agency's own entry never becomes a probe.
    err = await refused(catalog(node, agency, "UpdateResource", update(REAL, probe=True)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "entry.probe: cannot change from false to true" in (err.details() or "")

    # Nor does any other caller register one (the data management authority here).
    out = setup.base / "authority"
    _, paths = issue_client(setup.config, role=Role.AUTHORITY, subject="", name="数据局", out=out)
    authority = TlsFiles(paths["key"], paths["cert"], paths["ca"])
    probe = register(entry_of(PROVINCE, 908, probe=True))
    err = await refused(catalog(node, authority, "RegisterResource", probe))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "registered by conformance testers only" in (err.details() or "")


# --- records: probe records are the testers' ------------------------------------------------


async def test_a_tester_submits_probe_records_only(probed: Province) -> None:
    setup, node = probed
    tester, agency = setup.tester(), setup.agency(PUBLIC_SECURITY)
    err = await refused(submit(node, tester, REAL.resource_code, [ACME], batch="t1"))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "tester identities may use only probe resources (第三十一条)" in (err.details() or "")

    err = await refused(submit(node, agency, PROBE.resource_code, [ACME], batch="a1"))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "submitted by conformance testers only" in (err.details() or "")


# --- sharing: a tester is any agency, on probes only --------------------------------------


async def test_a_tester_uses_probe_resources_as_any_agency_would(probed: Province) -> None:
    setup, node = probed
    tester = setup.tester()
    reply = await sharing(node, tester, "Verify", verify(PROBE.resource_code))
    assert reply.found and reply.all_match
    assert not (
        await sharing(node, tester, "Verify", verify(PROBE.resource_code, "别的"))
    ).all_match
    [result] = await sharing(node, tester, "Compare", compare(PROBE.resource_code))
    assert result.found
    # Never the provider: sensitive items come back masked.
    [row] = (await sharing(node, tester, "Query", query(PROBE.resource_code))).rows
    assert row.record.values["fddbr"] == "王*" and list(row.masked_items) == ["fddbr"]
    # Nobody is a probe's provider, the agency its provider_code names included.
    agency = setup.agency(PUBLIC_SECURITY)
    [row] = (await sharing(node, agency, "Query", query(PROBE.resource_code))).rows
    assert list(row.masked_items) == ["fddbr"]


async def test_share_types_and_methods_bind_a_tester(probed: Province) -> None:
    setup, node = probed
    tester = setup.tester()
    err = await refused(sharing(node, tester, "Verify", verify(PROBE_CONDITIONAL.resource_code)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "有条件共享" in (err.details() or "") and "approved application" in (err.details() or "")
    assert "tester lab-1 (350000)" in (err.details() or "")
    err = await refused(sharing(node, tester, "Compare", compare(PROBE_CONDITIONAL.resource_code)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "not shared by 比对验证 (Compare)" in (err.details() or "")
    err = await refused(sharing(node, tester, "Query", query(PROBE_NOT_SHARED.resource_code)))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "暂不共享" in (err.details() or "")


async def test_a_tester_may_not_use_an_agencys_resource(probed: Province) -> None:
    setup, node = probed
    tester = setup.tester()
    for method, request in (
        ("Verify", verify(REAL.resource_code)),
        ("Compare", compare(REAL.resource_code)),
        ("Query", query(REAL.resource_code)),
    ):
        err = await refused(sharing(node, tester, method, request))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED, method
        assert "tester identities may use only probe resources (第三十一条)" in (
            err.details() or ""
        )
        assert REAL.resource_code in (err.details() or "")
    # The same resource serves an agency (无条件共享).
    assert (
        await sharing(node, setup.agency(CIVIL_AFFAIRS), "Verify", verify(REAL.resource_code))
    ).found


async def test_probes_are_not_counted_in_aggregation_status(probed: Province) -> None:
    setup, node = probed
    request = sharing_pb2.GetAggregationStatusRequest()
    reply = await sharing(node, setup.agency(PUBLIC_SECURITY), "GetAggregationStatus", request)
    assert [s.resource_code for s in reply.statuses] == [REAL.resource_code]
    err = await refused(sharing(node, setup.tester(), "GetAggregationStatus", request))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "probe resources are never counted" in (err.details() or "")


async def test_a_tester_reads_the_catalog_and_node_info(probed: Province) -> None:
    setup, node = probed
    tester = setup.tester()
    assert (await node_info(node, tester)).region == PROVINCE
    listed = await catalog(node, tester, "ListResources", catalog_pb2.ListResourcesRequest())
    assert {(e.resource_code, e.probe) for e in listed.entries} == {
        (REAL.resource_code, False),
        (PROBE.resource_code, True),
        (PROBE_CONDITIONAL.resource_code, True),
        (PROBE_NOT_SHARED.resource_code, True),
    }
    code = REAL.resource_code
    got = await catalog(
        node, tester, "GetResource", catalog_pb2.GetResourceRequest(resource_code=code)
    )
    assert got.entry.name == REAL.name and not got.entry.probe
    history = await catalog(
        node,
        tester,
        "GetResourceHistory",
        catalog_pb2.GetResourceHistoryRequest(resource_code=code),
    )
    assert len(history.versions) == 1
    digest = await catalog(node, tester, "GetCatalogDigest", catalog_pb2.GetCatalogDigestRequest())
    assert digest.entries == 4


# --- routed: a tester through the province ------------------------------------------------


async def test_a_tester_verifies_a_city_probe_through_the_province(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as fed:
        province, fuzhou = fed.province.running, fed.fuzhou.running
        tester = fed.province.setup.tester()  # a province identity, at home at the province
        probe = entry_of(FUZHOU, 901, probe=True, **SHARED)
        real = entry_of(FUZHOU, 1, **SHARED)
        await catalog(fuzhou, tester, "RegisterResource", register(probe))
        await fed.fuzhou.register(real)
        assert (await submit(fuzhou, tester, probe.resource_code, [ACME]))[0].accepted == 1
        await fed.converged(2)  # bounded polling of every node's digest
        seen = await catalog(
            province,
            tester,
            "GetResource",
            catalog_pb2.GetResourceRequest(resource_code=probe.resource_code),
        )
        assert seen.entry.probe and seen.entry.region == FUZHOU

        metadata = [(REQUEST_ID_KEY, "tester-routed")]
        reply = await sharing(province, tester, "Verify", verify(probe.resource_code), metadata)
        assert reply.found and reply.all_match and reply.request_id == "tester-routed"
        # 福州 decides, for the tester: an agency's resource is refused.
        err = await refused(sharing(province, tester, "Verify", verify(real.resource_code)))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "tester identities may use only probe resources" in (err.details() or "")

        [at_fuzhou] = await AuditLog(fuzhou.db).query(request_id="tester-routed")
        assert at_fuzhou.caller == TESTER and at_fuzhou.outcome == "OK"
        assert at_fuzhou.origin_node == str(make_identity(PROVINCE, TD, Role.NODE))
        # The tester reads that record at 福州 itself: calls forwarded for it are its own.
        async with channel(fuzhou, tester) as ch:
            mine = await audit_pb2_grpc.AuditServiceStub(ch).QueryAudit(
                audit_pb2.QueryAuditRequest(request_id="tester-routed")
            )
        [record] = mine.records
        assert record.sequence == at_fuzhou.sequence and record.origin_node == at_fuzhou.origin_node


# --- `govnode certs issue-tester` ------------------------------------------------------------


def test_issue_tester_writes_a_bundle_with_negative_certificates(tmp_path: Path) -> None:
    province = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    out = tmp_path / "lab-1"
    result = govnode(
        "certs", "issue-tester", "--config", province.config_path, "--name", "lab-1", "--out", out
    )
    assert result.returncode == 0, result.stderr
    assert TESTER in result.stdout and "conformance probe: revoked on issue" in result.stdout

    manifest = json.loads((out / "tester.json").read_text(encoding="utf-8"))
    assert manifest["identity"] == TESTER
    assert manifest["files"] == {"key": "tester.key", "cert": "tester.crt", "root": "root.pem"}
    negative = manifest["negative"]
    assert set(negative) == {"expired", "revoked", "wrong_region"}
    assert negative["wrong_region"]["cert"] == "negative/wrong-region.crt"
    assert negative["wrong_region"]["identity"] == "spiffe://350100.fujian.gov.cn/tester/lab-1"
    assert negative["revoked"]["identity"] == TESTER + "-revoked"
    assert negative["expired"]["identity"] == TESTER
    assert negative["revoked"]["reason"] == "conformance probe: revoked on issue"
    keys = ["tester.key", *(negative[n]["key"] for n in negative)]
    for key in keys:
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600, key
    for cert in ["tester.crt", *(negative[n]["cert"] for n in negative)]:
        assert (out / cert).read_text().count("BEGIN CERTIFICATE") == 2, cert  # leaf + CA
    shown = govnode("certs", "show", out / "tester.crt").stdout
    assert TESTER in shown and manifest["serial"] in shown

    revoked = govnode("certs", "list-revoked", "--config", province.config_path).stdout
    assert negative["revoked"]["serial"] in revoked and TESTER + "-revoked" in revoked

    again = govnode(
        "certs", "issue-tester", "--config", province.config_path, "--name", "lab-2", "--out", out
    )
    assert_one_line_error(again, "holds a tester bundle", "refusing to overwrite")
    shown_help = govnode("certs", "issue-tester", "--help")
    assert shown_help.returncode == 0 and "Usage" in shown_help.stdout


def test_issue_tester_is_for_the_province_only(tmp_path: Path) -> None:
    province = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    city = make_city(tmp_path / "c", f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", province)
    result = govnode(
        "certs",
        "issue-tester",
        "--config",
        city.config_path,
        "--name",
        "lab-1",
        "--out",
        tmp_path / "t",
    )
    assert_one_line_error(result, "is a city node", "issued by the province")
    assert not (tmp_path / "t").exists()
    assert not (tmp_path / "c.db").exists()  # refused before the city's database was opened


def test_issue_tester_refuses_names_that_make_no_identity(tmp_path: Path) -> None:
    config = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}").config
    with pytest.raises(ProvisionError, match="--name: tester identity needs a subject"):
        prepare_tester(config, name="lab/1", out=tmp_path / "t")
    with pytest.raises(ProvisionError, match="--name: at most 56 characters"):
        prepare_tester(config, name="x" * 57, out=tmp_path / "t")
    with pytest.raises(ProvisionError, match="--days: must be at least 1"):
        prepare_tester(config, name="lab-1", out=tmp_path / "t", days=0)


def test_an_identity_the_ca_may_vouch_for_is_no_out_of_region_probe(tmp_path: Path) -> None:
    config = make_province(tmp_path / "p", f"sqlite+aiosqlite:///{tmp_path / 'p.db'}").config
    inside = make_identity(PROVINCE, TD, Role.TESTER, "lab-1")
    with pytest.raises(PkiError, match="issue it with issue_leaf"):
        issue_out_of_region_probe(region_ca(config), inside, common_name="x", days=1)


def _files(out: Path, stem: str) -> TlsFiles:
    return TlsFiles(out / f"{stem}.key", out / f"{stem}.crt", out / "root.pem")


async def _healthy(node: RunningNode, files: TlsFiles) -> bool:
    async with channel(node, files) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_a_node_refuses_the_negative_tester_certificates(province: Province) -> None:
    setup, node = province
    out = setup.base / "lab-1"
    credentials = prepare_tester(setup.config, name="lab-1", out=out)
    bundle = await issue_tester(credentials, Revocations(node.db))
    assert str(bundle.identity) == TESTER

    assert (await node_info(node, _files(out, "tester"))).region == PROVINCE
    for stem in ("expired", "wrong-region"):
        err = await refused(node_info(node, _files(out, f"negative/{stem}")))
        # No TLS session, so no gRPC status: the failed handshake shows as UNAVAILABLE.
        assert err.code() is grpc.StatusCode.UNAVAILABLE, stem
        assert await _healthy(node, _files(out, "tester"))
    err = await refused(node_info(node, _files(out, "negative/revoked")))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED
    assert f"certificate {bundle.revoked_serial} of {TESTER}-revoked is revoked" in (
        err.details() or ""
    )


async def test_issuing_a_tester_twice_into_one_directory_revokes_nothing_more(
    province: Province,
) -> None:
    setup, node = province
    out = setup.base / "lab-1"
    await issue_tester(prepare_tester(setup.config, name="lab-1", out=out), Revocations(node.db))
    with pytest.raises(ProvisionError, match="refusing to overwrite"):
        prepare_tester(setup.config, name="lab-1", out=out)
    assert len(await Revocations(node.db).all()) == 1
