"""The console over HTTPS with operator certificates, as an operator's browser would use it
(without the browser: tests/console/test_browser.py drives chromium): what each role sees and
may do, and every refusal (no certificate, other identities, a revoked operator, cross-site
requests, hostile parameters), each refused action audited."""

from __future__ import annotations

import io
import ssl
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from govnode.v1 import catalog_pb2, catalog_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.audit import AuditRecord
from node.pki import load_certs
from tests.support.console import form_token, operator, session, with_console
from tests.support.nodes import (
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_province,
    start,
)

Console = tuple[ProvinceSetup, RunningNode]


@pytest.fixture
async def console(tmp_path: Path, db_url: str) -> AsyncIterator[Console]:
    """A province with its console, on each storage backend (the issued-certificate list and
    the audit search are queries of their own)."""
    setup = with_console(make_province(tmp_path / "province", db_url))
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


def url(node: RunningNode, path: str = "/") -> str:
    assert node.console is not None
    return node.console.url + path


def root(setup: ProvinceSetup) -> Path:
    return setup.config.path(setup.config.tls.root)


async def get(setup: ProvinceSetup, node: RunningNode, who: TlsFiles, path: str) -> tuple[int, str]:
    async with session(who, root(setup)) as http, http.get(url(node, path)) as response:
        return response.status, await response.text()


async def post(
    setup: ProvinceSetup,
    node: RunningNode,
    who: TlsFiles,
    path: str,
    form: dict[str, str],
    headers: dict[str, str] | None = None,
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with (
        session(who, root(setup)) as http,
        http.post(url(node, path), data=form, headers=headers, allow_redirects=False) as response,
    ):
        return response.status, await response.text(), response


async def token_of(setup: ProvinceSetup, node: RunningNode, who: TlsFiles) -> str:
    status, page = await get(setup, node, who, "/certificates")
    assert status == 200
    return form_token(page)


async def console_records(node: RunningNode) -> list[AuditRecord]:
    return await node.audit.newest_first(method="console:*", limit=100)


async def node_health(node: RunningNode, who: TlsFiles) -> int:
    async with channel(node, who) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
    return int(reply.status)


async def test_an_operator_sees_the_overview_in_chinese_with_strict_headers(
    console: Console,
) -> None:
    setup, node = console
    async with (
        session(operator(setup, "observer", "li"), root(setup)) as http,
        http.get(url(node)) as response,
    ):
        assert response.status == 200
        page = await response.text()
        headers = response.headers
    assert "概览" in page and "福建省" in page
    assert "spiffe://350000.fujian.gov.cn/node" in page
    assert "li" in page and "观察员" in page
    assert "有条件共享申请" in page and "服务中（SERVING）" in page
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert "<script>" not in page and "style=" not in page, "nothing inline (CSP)"


async def test_each_role_sees_only_the_buttons_it_may_use(console: Console) -> None:
    setup, node = console
    pages = {}
    for role in ("observer", "service", "security", "system"):
        who = operator(setup, role)
        _, overview = await get(setup, node, who, "/")
        _, certificates = await get(setup, node, who, "/certificates")
        pages[role] = overview + certificates
    assert 'id="maintenance-toggle"' in pages["system"]
    # The reason field sits outside the part htmx refreshes, tied to the switch's form.
    assert 'id="maintenance-form"' in pages["system"]
    assert 'form="maintenance-form"' in pages["system"]
    assert 'id="issue-agency"' in pages["security"] and 'id="issue-operator"' in pages["security"]
    for role in ("observer", "service", "security"):
        assert 'id="maintenance-toggle"' not in pages[role], role
        assert 'id="maintenance-reason"' not in pages[role], role
    for role in ("observer", "service", "system"):
        assert 'id="issue-agency"' not in pages[role], role
        assert 'action="/certificates/revoke"' not in pages[role], role


async def test_forbidden_actions_posted_directly_are_refused_and_audited(
    console: Console,
) -> None:
    setup, node = console
    observer = operator(setup, "observer")
    token = await token_of(setup, node, observer)
    agency = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    attempts = [
        ("/maintenance", {"on": "1"}),
        ("/certificates/revoke", {"serial": "abc", "reason": "key_compromise"}),
        ("/certificates/issue", {"kind": "agency", "subject": PUBLIC_SECURITY, "name": "x"}),
    ]
    for path, form in attempts:
        status, page, _ = await post(setup, node, observer, path, {**form, "_token": token})
        assert status == 403, path
        assert "安全管理员" in page or "系统管理员" in page
    assert await node_health(node, agency) == health_pb2.HealthCheckResponse.SERVING
    records = await console_records(node)
    assert sorted(r.method for r in records) == [
        "console:/certificates/issue",
        "console:/certificates/revoke",
        "console:/maintenance",
    ]
    for record in records:
        assert record.outcome == "PERMISSION_DENIED"
        assert record.caller == "spiffe://350000.fujian.gov.cn/operator/observer.op-observer"
        assert record.detail["auth"] == "console-mtls"


async def test_cross_site_requests_are_refused(console: Console) -> None:
    setup, node = console
    system = operator(setup, "system")
    token = await token_of(setup, node, system)
    other_token = await token_of(setup, node, operator(setup, "system", "another"))
    assert other_token != token
    own_origin = url(node, "").rstrip("/")
    refused = [
        ({"on": "1", "_token": token}, {"Origin": "https://evil.example"}, "Origin"),
        ({"on": "1", "_token": token}, {"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
        ({"on": "1", "_token": token}, {"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site"),
        ({"on": "1", "_token": token}, {"Origin": "null"}, "Origin: null"),
        ({"on": "1"}, {"Origin": own_origin}, "表单令牌"),
        ({"on": "1", "_token": other_token}, {}, "表单令牌"),
        ({"on": "1", "_token": "0" * 64}, {}, "表单令牌"),
        ({"on": "1", "_token": "令" * 64}, {}, "表单令牌"),
    ]
    for form, headers, said in refused:
        status, page, _ = await post(setup, node, system, "/maintenance", form, headers)
        assert status == 403, (form, headers)
        assert said in page
    assert not node.health.maintenance, "no refused request switched anything"
    status, _, response = await post(
        setup,
        node,
        system,
        "/maintenance",
        {"on": "1", "_token": token},
        {"Origin": own_origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert status == 303 and response.headers["Location"] == "/"
    assert node.health.maintenance
    # What chromium sends from the console's own form under Referrer-Policy: no-referrer.
    status, _, _ = await post(
        setup,
        node,
        system,
        "/maintenance",
        {"on": "0", "_token": token},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert status == 303 and not node.health.maintenance


async def test_identities_other_than_this_nodes_operators_are_refused(
    console: Console, tmp_path: Path
) -> None:
    setup, node = console
    for who, said in (
        (setup.agency(PUBLIC_SECURITY, "福建省公安厅"), "agency"),
        (setup.authority(), "authority"),
        (setup.portal(), "portal"),
        (setup.tester(), "tester"),
    ):
        status, page = await get(setup, node, who, "/")
        assert status == 403, said
        assert f"角色是 {said}" in page and "issue-operator" in page
    # An operator of another platform (another root) fails in the handshake already; one of
    # another node's CA is refused by this one.
    other = make_province(tmp_path / "other", f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await get(setup, node, operator(other, "system"), "/")


async def test_a_revoked_operator_is_refused_from_the_next_request(console: Console) -> None:
    setup, node = console
    security = operator(setup, "security")
    victim = operator(setup, "system", "mallory")
    assert (await get(setup, node, victim, "/"))[0] == 200
    serial = format(load_certs(victim.chain)[0].serial_number, "x")
    token = await token_of(setup, node, security)
    status, _, _ = await post(
        setup,
        node,
        security,
        "/certificates/revoke",
        {"serial": serial, "reason": "key_compromise", "_token": token},
    )
    assert status == 303
    status, page = await get(setup, node, victim, "/")
    assert status == 403 and "已被吊销" in page


async def test_without_a_certificate_the_handshake_fails(console: Console) -> None:
    setup, node = console
    with pytest.raises((aiohttp.ClientConnectionError, ssl.SSLError)):
        await get(setup, node, None, "/")  # type: ignore[arg-type]


async def test_maintenance_mode_turns_grpc_health_not_serving_and_back(console: Console) -> None:
    setup, node = console
    system = operator(setup, "system")
    agency = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    token = await token_of(setup, node, system)
    form = {"on": "1", "reason": "迁移数据库", "_token": token}
    status, _, _ = await post(setup, node, system, "/maintenance", form)
    assert status == 303
    assert await node_health(node, agency) == health_pb2.HealthCheckResponse.NOT_SERVING
    # Kept in the database (a restart keeps it: tests/ops/test_maintenance.py), with who and why.
    assert node.maintenance is not None
    stored = await node.maintenance.maintenance.state()
    assert stored.on and stored.reason == "迁移数据库"
    assert stored.by == "spiffe://350000.fujian.gov.cn/operator/system.op-system"
    # The storage monitor reporting the database writable again does not end maintenance.
    await node.health.set_serving(True)
    assert await node_health(node, agency) == health_pb2.HealthCheckResponse.NOT_SERVING
    _, page = await get(setup, node, system, "/overview/live")
    assert "已开启" in page and "NOT_SERVING" in page and "迁移数据库" in page
    form = {"on": "0", "reason": "x" * 201, "_token": token}
    status, page, _ = await post(setup, node, system, "/maintenance", form)
    assert status == 400 and "at most 200 characters" in page and "x" * 80 not in page
    status, _, _ = await post(setup, node, system, "/maintenance", {"on": "0", "_token": token})
    assert status == 303
    assert await node_health(node, agency) == health_pb2.HealthCheckResponse.SERVING
    records = await console_records(node)
    assert [(r.method, r.outcome, r.detail["maintenance"]) for r in records] == [
        ("console:/maintenance", "OK", "off"),
        ("console:/maintenance", "INVALID_ARGUMENT", "off"),
        ("console:/maintenance", "OK", "on"),
    ]
    assert records[-1].detail["reason"] == "迁移数据库"


async def test_an_operator_certificate_may_call_only_health_on_grpc(console: Console) -> None:
    setup, node = console
    who = operator(setup, "system")
    assert await node_health(node, who) == health_pb2.HealthCheckResponse.SERVING
    async with channel(node, who) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
                catalog_pb2.ListResourcesRequest()
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "web console" in (refused.value.details() or "")


async def test_issue_an_agency_then_revoke_it_and_its_next_call_is_refused(
    console: Console, tmp_path: Path
) -> None:
    setup, node = console
    security = operator(setup, "security")
    token = await token_of(setup, node, security)
    async with (
        session(security, root(setup)) as http,
        http.post(
            url(node, "/certificates/issue"),
            data={
                "kind": "agency",
                "subject": PUBLIC_SECURITY,
                "name": "福建省公安厅",
                "days": "30",
                "_token": token,
            },
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/zip"
        assert "attachment" in response.headers["Content-Disposition"]
        bundle = await response.read()
    out = tmp_path / "issued"
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        assert sorted(archive.namelist()) == ["README.txt", "ca.crt", "client.crt", "client.key"]
        archive.extractall(out)
    agency = TlsFiles(out / "client.key", out / "client.crt", out / "ca.crt")
    async with channel(node, agency) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
            catalog_pb2.ListResourcesRequest()
        )
    _, listing = await get(setup, node, security, "/certificates")
    assert f"spiffe://350000.fujian.gov.cn/agency/{PUBLIC_SECURITY}" in listing
    serial = format(
        load_certs(agency.chain)[0].serial_number,
        "x",
    )
    assert serial in listing
    assert not list((setup.base).rglob("*issued*")), "the node keeps no copy of the bundle"
    status, _, _ = await post(
        setup,
        node,
        security,
        "/certificates/revoke",
        {"serial": serial, "reason": "key_compromise", "_token": token},
    )
    assert status == 303
    async with channel(node, agency) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
                catalog_pb2.ListResourcesRequest()
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _, listing = await get(setup, node, security, "/certificates")
    assert "已吊销" in listing
    records = await console_records(node)
    assert [(r.method, r.outcome) for r in records] == [
        ("console:/certificates/revoke", "OK"),
        ("console:/certificates/issue", "OK"),
    ]
    assert records[0].detail["serial"] == serial


async def test_an_operator_issued_at_the_console_gets_a_pkcs12_that_opens_it(
    console: Console, tmp_path: Path
) -> None:
    setup, node = console
    security = operator(setup, "security")
    token = await token_of(setup, node, security)
    form = {
        "kind": "operator",
        "subject": "wang",
        "role": "observer",
        "password": "s3cret",
        "_token": token,
    }
    async with (
        session(security, root(setup)) as http,
        http.post(url(node, "/certificates/issue"), data=form) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-pkcs12"
        data = await response.read()
    key, cert, chain = pkcs12.load_key_and_certificates(data, b"s3cret")
    assert key is not None and cert is not None and len(chain) == 1
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    (tmp_path / "wang.key").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    (tmp_path / "wang.crt").write_bytes(
        cert.public_bytes(Encoding.PEM) + chain[0].public_bytes(Encoding.PEM)
    )
    wang = TlsFiles(tmp_path / "wang.key", tmp_path / "wang.crt", root(setup))
    status, page = await get(setup, node, wang, "/")
    assert status == 200 and "wang" in page and "观察员" in page


async def test_hostile_parameters_are_refused_with_a_short_quote(console: Console) -> None:
    setup, node = console
    who = operator(setup, "observer")
    for path, said in (
        ("/audit?page_size=201", "page_size"),
        ("/audit?page_size=0", "page_size"),
        ("/audit?page_size=" + "9" * 30, "page_size"),
        ("/audit?before=-1", "before"),
        ("/audit?since=" + "x" * 250, "since"),
        ("/audit?caller=" + "a" * 400, "caller"),
        ("/certificates?after=nonsense", "after"),
        ("/certificates?kind=root", "kind"),
        ("/audit/verify?after=0&count=10001", "count"),
        ("/audit/record/abc", "序号"),
    ):
        status, page = await get(setup, node, who, path)
        assert status == 400, path
        assert said in page
        assert "x" * 60 not in page and "a" * 60 not in page, "at most a short prefix quoted"
    status, _ = await get(setup, node, who, "/audit?q=" + "z" * 3000)
    assert status == 414
    status, _ = await get(setup, node, who, "/audit/record/99999999")
    assert status == 404


async def test_the_audit_log_is_searched_paged_verified_and_a_record_proved(
    console: Console,
) -> None:
    setup, node = console
    system = operator(setup, "system")
    token = await token_of(setup, node, system)
    for on in ("1", "0", "1", "0"):
        await post(setup, node, system, "/maintenance", {"on": on, "_token": token})
    assert node.publisher is not None
    await node.publisher.publish()  # a checkpoint now, not after [audit] checkpoint_seconds
    status, page = await get(setup, node, system, "/audit?method=console:*&page_size=3")
    assert status == 200
    assert page.count("console:/maintenance") == 3
    assert 'id="older"' in page
    older = page.split('id="older"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    status, page = await get(setup, node, system, older)
    assert page.count("console:/maintenance") == 1 and 'id="older"' not in page
    first = (await console_records(node))[-1]
    status, page = await get(setup, node, system, f"/audit/record/{first.sequence}")
    assert status == 200
    assert "console-mtls" in page and first.hash in page
    assert f"包含证明验证通过：记录 #{first.sequence}" in page
    # A lone province has no witness yet: the proof file waits for a cosigned checkpoint.
    assert "暂无包含证明" in page
    status, _ = await get(setup, node, system, f"/audit/record/{first.sequence}/proof")
    assert status == 409
    status, page = await get(setup, node, system, "/audit/verify?after=0&count=2")
    assert status == 200 and "哈希链完整" in page and 'id="verify-next"' in page


async def test_a_large_body_is_refused_before_it_is_read(console: Console) -> None:
    setup, node = console
    system = operator(setup, "system")
    token = await token_of(setup, node, system)
    status, page, _ = await post(
        setup, node, system, "/maintenance", {"on": "1", "_token": token, "pad": "x" * 70_000}
    )
    assert status == 413 and "65536" in page
    assert not node.health.maintenance


async def test_a_filtered_search_reads_a_bounded_window_and_goes_on_below_it(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, node = console
    system = operator(setup, "system")
    token = await token_of(setup, node, system)
    await post(setup, node, system, "/maintenance", {"on": "1", "_token": token})
    await post(setup, node, system, "/maintenance", {"on": "0", "_token": token})
    agency = setup.agency(PUBLIC_SECURITY, "福建省公安厅")
    for _ in range(6):  # newer records that the search does not match
        async with channel(node, agency) as ch:
            await catalog_pb2_grpc.CatalogServiceStub(ch).ListResources(
                catalog_pb2.ListResourcesRequest()
            )
    monkeypatch.setattr("node.console._pages_audit.SCAN_WINDOW", 3)
    path, found = "/audit?method=console:*", 0
    for _ in range(10):
        status, page = await get(setup, node, system, path)
        assert status == 200
        found += page.count("console:/maintenance")
        if 'id="older"' not in page:
            break
        assert "已查找" in page or "console:/maintenance" in page
        path = page.split('id="older"')[0].rsplit('href="', 1)[1].split('"')[0]
        path = path.replace("&amp;", "&")
    assert found == 2, "every match found, window by window"
