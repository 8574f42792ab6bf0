"""The authority's desks at the console, over HTTPS with operator certificates against a real
province node: work made over gRPC by agencies and the portal is decided at the console by an
operator of role ``service``, the decision shows through the gRPC API (a granted agency's Query
passes, a revoked one's is refused, the change applied, the reporter's report closed, the
notice listed), and the audit log names the operator. Observers and security operators see no
buttons and are refused (403, audited) when they post anyway; hostile parameters get 400."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from govnode.v1 import (
    access_pb2,
    opendata_pb2,
    opendata_pb2_grpc,
    quality_pb2,
    supervision_pb2,
    supervision_pb2_grpc,
)

from gateway.tls import TlsFiles
from node.app import RunningNode, quality_of
from node.catalog import Catalog
from node.console._forms import form_token as form_token_for
from node.pki import load_or_create_secret
from tests.quality.test_errors import quality
from tests.support.access import (
    ACME,
    COND,
    access,
    notifications,
    poll_refused,
    query,
    sharing,
    ts,
)
from tests.support.console import form_token, operator, session, with_console
from tests.support.desks import AUTHORIZED, RENAMED, Waiting, make_work
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PROVINCE,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_city,
    make_province,
    start,
)

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Console = tuple[ProvinceSetup, RunningNode, Waiting]


@pytest.fixture
async def desks(tmp_path: Path, sqlite_url: str) -> AsyncIterator[Console]:
    setup = with_console(make_province(tmp_path / "province", sqlite_url))
    node = await start(setup)
    try:
        yield setup, node, await make_work(setup, node)
    finally:
        await node.stop(grace=0)


def url(node: RunningNode, path: str) -> str:
    assert node.console is not None
    return node.console.url + path


def root(setup: ProvinceSetup) -> Path:
    return setup.config.path(setup.config.tls.root)


async def page(http: aiohttp.ClientSession, node: RunningNode, path: str) -> str:
    async with http.get(url(node, path)) as response:
        text = await response.text()
        assert response.status == 200, (path, response.status, text[:300])
        return text


def token_of(setup: ProvinceSetup, files: TlsFiles) -> str:
    """The form token of the holder of ``files``, made as the console makes it: for a role
    whose pages carry no form, to post directly what its buttons would have."""
    secret = load_or_create_secret(setup.config.path(setup.config.console.secret))
    der = x509.load_pem_x509_certificate(files.chain.read_bytes()).public_bytes(Encoding.DER)
    holder = SimpleNamespace(fingerprint=hashlib.sha256(der).hexdigest())
    return form_token_for(secret, holder)  # type: ignore[arg-type]


async def post(
    http: aiohttp.ClientSession,
    node: RunningNode,
    form_page: str,
    action: str,
    token: str = "",
    **fields: str,
) -> tuple[int, str, str]:
    """Submit ``fields`` to ``action`` with ``token`` or that of ``form_page``: (status,
    Location, body)."""
    token = token or form_token(await page(http, node, form_page))
    async with http.post(
        url(node, action), data={"_token": token, **fields}, allow_redirects=False
    ) as response:
        return response.status, response.headers.get("Location", ""), await response.text()


async def audited(node: RunningNode, who: str) -> list[tuple[str, str]]:
    records = await node.audit.query(caller=who, limit=1000)
    return [(r.method, r.outcome) for r in records]


def operator_uri(role: str) -> str:
    return f"spiffe://350000.fujian.gov.cn/operator/{role}.op-{role}"


_COUNT = re.compile(
    r'<section class="count" id="(pending_\w+)"><a href="([^"]+)">[^<]*<strong>([^<]+)</strong>'
)


async def test_the_overviews_pending_counts_link_to_their_desks(desks: Console) -> None:
    setup, node, work = desks
    async with session(operator(setup, "observer"), root(setup)) as http:
        counts = {key: (href, n) for key, href, n in _COUNT.findall(await page(http, node, "/"))}
        assert {key: n for key, (_, n) in counts.items()} == {
            "pending_applications": "2",
            "pending_changes": "1",
            "pending_open": "1",
            "pending_errors": "1",
            "pending_notices": "0",
        }
        waiting = {
            "pending_applications": [work.approve_application, work.reject_application],
            "pending_changes": [work.change],
            "pending_open": [work.open_application],
            "pending_errors": [work.data_error],
            "pending_notices": [],
        }
        for key, (href, _) in counts.items():
            listed = await page(http, node, href.replace("&amp;", "&"))
            assert all(f"{href.split('?')[0]}/{i}" in listed for i in waiting[key]), (key, href)


async def test_each_desk_action_by_a_service_operator_shows_through_the_grpc_api(
    desks: Console,
) -> None:
    setup, node, work = desks
    civil, market = setup.agency(CIVIL_AFFAIRS), setup.agency(MARKET_REGULATION)
    async with session(operator(setup, "service"), root(setup)) as http:
        listed = await page(http, node, "/desks/applications")
        assert work.approve_application in listed and work.reject_application in listed
        assert 'hx-select="#applications"' in listed  # htmx refreshes the table in place

        # 有条件共享: approve one application; the agency's Query passes under the grant.
        detail = f"/desks/applications/{work.approve_application}"
        assert 'id="approve"' in await page(http, node, detail)
        status, location, _ = await post(http, node, detail, detail + "/approve", comment="同意")
        assert (status, location) == (303, detail)
        assert "已同意" in await page(http, node, detail)
        answer = await sharing(node, civil, "Query", query())
        assert answer.rows[0].record.values["qymc"] == ACME["qymc"]
        # The applicant and the provider are told, as after ReviewApplication.
        for files in (civil, setup.agency(PUBLIC_SECURITY)):
            told = await notifications(node, files)
            reviewed = access_pb2.NOTIFICATION_KIND_APPLICATION_REVIEWED
            assert work.approve_application in {
                n.application_id for n in told if n.kind == reviewed
            }

        # Reject the other, with a reason; a rejection without one is the domain's refusal.
        other = f"/desks/applications/{work.reject_application}"
        status, _, body = await post(http, node, other, other + "/reject", comment="")
        assert status == 400 and "comment" in body
        status, location, _ = await post(
            http, node, other, other + "/reject", comment="用途与依据不符"
        )
        assert (status, location) == (303, other)
        reply = await access(
            node,
            market,
            "GetApplication",
            access_pb2.GetApplicationRequest(id=work.reject_application),
        )
        assert reply.application.status == access_pb2.APPLICATION_STATUS_REJECTED
        assert reply.application.review_comment == "用途与依据不符"

        # The held change: before → after, approved, applied.
        change = f"/desks/changes/{work.change}"
        shown = await page(http, node, change)
        assert ACME["qymc"] in shown and RENAMED in shown and "→" in shown
        status, location, _ = await post(http, node, change, change + "/approve")
        assert (status, location) == (303, change)
        answer = await sharing(node, civil, "Query", query())
        assert answer.rows[0].record.values["qymc"] == RENAMED

        # 授权开放: approved, its key shown on the response, once.
        open_app = f"/desks/open/{work.open_application}"
        status, _, body = await post(http, node, open_app, open_app + "/approve")
        assert status == 200 and 'id="issued-key"' in body and "gok_" in body
        assert "gok_" not in (await page(http, node, open_app)).split("密钥")[-1].split("…")[0][:4]
        async with channel(node, setup.authority()) as ch:
            got = await opendata_pb2_grpc.OpenDataServiceStub(ch).GetOpenApplication(
                opendata_pb2.GetOpenApplicationRequest(id=work.open_application)
            )
        assert got.application.status == opendata_pb2.OPEN_APPLICATION_STATUS_APPROVED

        # 纠错: the stored value confirmed; the reporter sees the report closed.
        error = f"/desks/errors/{work.data_error}"
        assert work.data_error in await page(http, node, "/desks/errors?status=open")
        status, location, _ = await post(
            http, node, error, error + "/resolve", resolution="confirm", note="名称以登记为准"
        )
        assert (status, location) == (303, error)
        got = await quality(
            node, civil, "GetDataError", quality_pb2.GetDataErrorRequest(id=work.data_error)
        )
        assert got.report.status == quality_pb2.DATA_ERROR_STATUS_REJECTED

        # 整改通知: issued to the provider; listed through SupervisionService.
        status, location, _ = await post(
            http,
            node,
            "/desks/notices",
            "/desks/notices",
            agency_code=PUBLIC_SECURITY,
            kind="late_aggregation",
            deadline=(dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).date().isoformat(),
            note="按更新周期汇聚数据",
        )
        assert status == 303 and location.startswith("/desks/notices/")
        async with channel(node, setup.authority()) as ch:
            notices = await supervision_pb2_grpc.SupervisionServiceStub(
                ch
            ).ListRectificationNotices(
                supervision_pb2.ListRectificationNoticesRequest(agency_code=PUBLIC_SECURITY)
            )
        assert [n.note for n in notices.notices] == ["按更新周期汇聚数据"]

        # Revoke the grant: the agency's next Query is refused.
        [grant_id] = [
            g for g in (await page(http, node, "/desks/grants")).split('"') if "-G-" in g
        ][:1] or [""]
        grant_path = grant_id if grant_id.startswith("/") else f"/desks/grants/{grant_id}"
        status, _, _ = await post(http, node, grant_path, grant_path + "/revoke", reason="项目结束")
        assert status == 303
        denied = await poll_refused(lambda: sharing(node, civil, "Query", query()))
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED

    done = await audited(node, operator_uri("service"))
    for method in (
        "console:/desks/applications/approve",
        "console:/desks/applications/reject",
        "console:/desks/changes/review",
        "console:/desks/open/approve",
        "console:/desks/errors/confirm",
        "console:/desks/notices/issue",
        "console:/desks/grants/revoke",
    ):
        assert (method, "OK") in done, (method, done)
    assert ("console:/desks/applications/reject", "INVALID_ARGUMENT") in done


@pytest.mark.parametrize("role", ["observer", "security"])
async def test_other_roles_see_no_buttons_and_are_refused_and_audited(
    desks: Console, role: str
) -> None:
    setup, node, work = desks
    actions: list[tuple[str, str, dict[str, Any]]] = [
        (f"/desks/applications/{work.approve_application}", "/approve", {}),
        (f"/desks/changes/{work.change}", "/approve", {}),
        (f"/desks/open/{work.open_application}", "/approve", {}),
        (
            f"/desks/errors/{work.data_error}",
            "/resolve",
            {"resolution": "confirm", "note": "x"},
        ),
    ]
    files = operator(setup, role)
    token = token_of(setup, files)
    async with session(files, root(setup)) as http:
        for path, action, fields in actions:
            shown = await page(http, node, path)
            assert 'id="approve"' not in shown and 'id="confirm"' not in shown
            assert "只能查看" in shown
            status, _, body = await post(http, node, path, path + action, token, **fields)
            assert status == 403 and "业务管理员" in body, (path, status, body[:200])
        assert 'id="issue"' not in await page(http, node, "/desks/notices")
        # Cities are admitted by the system role only.
        shown = await page(http, node, "/federation")
        assert 'id="invite"' not in shown and 'id="approve-city"' not in shown
        status, _, body = await post(
            http, node, "", "/federation/invite", token, region="350100", hours="24"
        )
        assert status == 403 and "系统管理员" in body
    refused = await audited(node, operator_uri(role))
    assert len([r for r in refused if r[1] == "PERMISSION_DENIED"]) == len(actions) + 1
    # Nothing was decided.
    reply = await access(
        node,
        setup.agency(CIVIL_AFFAIRS),
        "GetApplication",
        access_pb2.GetApplicationRequest(id=work.approve_application),
    )
    assert reply.application.status == access_pb2.APPLICATION_STATUS_PENDING


async def test_catalog_and_quality_pages_and_hostile_parameters(desks: Console) -> None:
    setup, node, work = desks
    code = COND.resource_code
    # The provider's held change rejected at the console counts against it as the same
    # rejection over gRPC does (第四十二条第六项).
    change = f"/desks/changes/{work.change}"
    async with session(operator(setup, "service"), root(setup)) as http:
        status, _, _ = await post(http, node, change, change + "/reject", comment="无依据")
        assert status == 303
    # Two checks of the resource (the node's daily job, run now) and a compliance report of
    # its provider (SupervisionService, as the authority): the history the charts draw.
    checks = quality_of(setup.config, node.db, Catalog(node.db, node_region=PROVINCE))
    for _ in range(2):
        await checks.check(code, "test")
    async with channel(node, setup.authority()) as ch:
        made = await supervision_pb2_grpc.SupervisionServiceStub(ch).GetComplianceReport(
            supervision_pb2.GetComplianceReportRequest(
                agency_code=PUBLIC_SECURITY,
                period_start=ts(dt.datetime.now(dt.UTC) - dt.timedelta(days=1)),
            )
        )
    assert f"变更申请 {work.change} 未获批准 (第四十一条)" in [
        f.description
        for f in made.report.findings
        if f.kind == supervision_pb2.VIOLATION_KIND_UNAPPROVED_CHANGE_OR_DELETION
    ]
    async with session(operator(setup, "observer"), root(setup)) as http:
        listed = await page(http, node, "/catalog")
        assert code in listed and AUTHORIZED.resource_code in listed
        assert code in await page(http, node, f"/catalog?name={COND.name[:3]}")
        assert "历史版本" in await page(http, node, f"/catalog/{code}")
        shown = await page(http, node, f"/quality/resources/{code}")
        assert shown.count("<circle") == 2 and 'id="grade"' in shown
        assert "<polyline" in shown and "style=" not in shown.split("<svg")[1]
        listed = await page(http, node, "/quality")
        assert code in listed and "尚未检查" in listed  # only COND was checked
        agencies = await page(http, node, "/quality/agencies")
        assert PUBLIC_SECURITY in agencies and "未在规定期限内汇聚数据" in agencies
        shown = await page(http, node, f"/quality/agencies/{PUBLIC_SECURITY}")
        assert shown.count("<circle") == 1 and "擅自更改或者删除政务数据" in shown
        assert "邀请" in await page(http, node, "/federation")
        for path in (
            "/desks/applications?status=" + "x" * 5000,
            "/desks/applications?page=%00" + "A" * 150,
            "/desks/changes?page_size=100000",
            "/desks/errors?status=bogus",
            "/catalog?name=" + "名" * 100,
            "/catalog/" + "9" * 100,
            "/desks/applications/" + "<script>",
        ):
            async with http.get(url(node, path)) as response:
                body = await response.text()
                assert response.status in (400, 404, 414), (path, response.status)
                assert "<script>" not in body and "x" * 100 not in body


async def test_hostile_form_values_are_refused_with_a_short_quote(desks: Console) -> None:
    setup, node, work = desks
    files = operator(setup, "service")
    token = token_of(setup, files)
    error = f"/desks/errors/{work.data_error}/resolve"
    cases: list[tuple[str, dict[str, str], str]] = [
        (error, {"resolution": "bogus" * 50, "note": "x"}, "resolution"),
        (error, {"resolution": "correct", "note": "x", "values": "no equals sign"}, "数据项=新值"),
        (error, {"resolution": "confirm", "note": "长" * 2001}, "至多 2000"),
        ("/desks/notices", {"kind": "nonsense", "agency_code": PUBLIC_SECURITY}, "kind"),
        (
            "/desks/notices",
            {"kind": "duplicate", "agency_code": PUBLIC_SECURITY, "deadline": "明天"},
            "YYYY-MM-DD",
        ),
        (f"/desks/open/{work.open_application}/approve", {"until": "2027/01/01"}, "YYYY-MM-DD"),
        ("/desks/changes/" + "%3Cb%3E" + "/approve", {}, "不是有效的编号"),
    ]
    async with session(files, root(setup)) as http:
        for action, fields, needle in cases:
            status, _, body = await post(http, node, "", action, token, **fields)
            assert status == 400 and needle in body, (action, status, body[-400:])
            assert "bogus" * 10 not in body and "长" * 100 not in body and "<b>" not in body
    # Nothing was decided by any of them.
    got = await quality(
        node,
        setup.agency(CIVIL_AFFAIRS),
        "GetDataError",
        quality_pb2.GetDataErrorRequest(id=work.data_error),
    )
    assert got.report.status == quality_pb2.DATA_ERROR_STATUS_OPEN


async def test_a_citys_federation_page_shows_its_province_and_admits_no_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    province = make_province(tmp_path / "province", sqlite_url)
    city = with_console(
        make_city(tmp_path / "city", sqlite_url.replace("node.db", "city.db"), province)
    )
    node = await start(city)
    try:
        files = operator(city, "system")
        async with session(files, root(city)) as http:
            shown = await page(http, node, "/federation")
            assert "本节点是市级节点" in shown and 'id="approved">否' in shown
            assert str(city.config.federation.province_endpoint) in shown
            status, _, body = await post(
                http, node, "", "/federation/invite", token_of(city, files), region="350200"
            )
            assert status == 409 and "市级节点" in body
            assert "<svg" not in await page(http, node, "/quality")
            assert "政务信息资源目录" in await page(http, node, "/catalog")
        assert ("console:/federation/invite", "FAILED_PRECONDITION") in await audited(
            node, "spiffe://350100.fujian.gov.cn/operator/system.op-system"
        )
    finally:
        await node.stop(grace=0)
