"""The series the metrics sampler reads from the node's database (node.ops._sampler): the expiry
of the certificates the node's CA issued, by kind (an agency's issued and revoked at the
console, as a security operator does), and the resources overdue for aggregation (汇聚) under
their update cycle, as supervision judges "aggregated on time". A real province with its
console and metrics listener, scraped over HTTP like Prometheus; on each storage backend (both
are grouped queries of their own)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from govnode.v1 import common_pb2, sharing_pb2, sharing_pb2_grpc
from prometheus_client.samples import Sample

from gateway.tls import TlsFiles
from node.catalog import UpdateCycle
from node.pki import load_certs
from tests.support.console import form_token, operator, session, with_console
from tests.support.entries import agency_code, item
from tests.support.metrics import samples, value
from tests.support.nodes import PROVINCE, Member, channel, entry_of, make_province, with_metrics

EXPIRY = "govnode_certificate_expiry_timestamp_seconds"
OVERDUE = "govnode_aggregation_overdue_resources"
ITEMS = (item("tyshxydm", key=True, required=True), item("qymc"))


@pytest.fixture
async def province(tmp_path: Path, db_url: str) -> AsyncIterator[Member]:
    member = Member(with_metrics(with_console(make_province(tmp_path / "province", db_url))))
    await member.start()
    try:
        yield member
    finally:
        await member.stop()


async def sampled(member: Member) -> list[Sample]:
    """A scrape after one sampler round (the round runs every 0.2 s anyway; running it here
    makes the test wait for nothing)."""
    sampler = member.running.metrics_sampler
    assert sampler is not None
    await sampler.refresh()
    return await samples(member.running)


def kinds(found: list[Sample]) -> dict[str, float]:
    return {s.labels["kind"]: s.value for s in found if s.name == EXPIRY}


async def issue_agency(member: Member, security: TlsFiles, code: str, days: int, out: Path) -> str:
    """Issue an agency's certificate at the console; its serial (hex)."""
    console, root = member.running.console, member.setup.config.path(member.setup.config.tls.root)
    assert console is not None
    async with session(security, root) as http:
        async with http.get(console.url + "/certificates") as page:
            token = form_token(await page.text())
        form = {"kind": "agency", "subject": code, "name": "测试单位", "days": str(days)}
        async with http.post(
            console.url + "/certificates/issue", data={**form, "_token": token}
        ) as response:
            assert response.status == 200, await response.text()
            bundle = await response.read()
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        archive.extractall(out)
    return format(load_certs(out / "client.crt")[0].serial_number, "x")


async def revoke(member: Member, security: TlsFiles, serial: str) -> None:
    console, root = member.running.console, member.setup.config.path(member.setup.config.tls.root)
    assert console is not None
    async with session(security, root) as http:
        async with http.get(console.url + "/certificates") as page:
            token = form_token(await page.text())
        form = {"serial": serial, "reason": "superseded", "_token": token}
        async with http.post(
            console.url + "/certificates/revoke", data=form, allow_redirects=False
        ) as response:
            assert response.status == 303, await response.text()


async def test_issued_certificates_expire_by_kind_never_by_subject(
    province: Member, tmp_path: Path
) -> None:
    before = kinds(await sampled(province))
    assert {"node", "region_ca", "root"} <= set(before)
    assert "agency" not in before  # no agency certificate recorded yet

    security = operator(province.setup, "security")
    soon = await issue_agency(province, security, agency_code(7, PROVINCE), 20, tmp_path / "a")
    later = await issue_agency(province, security, agency_code(8, PROVINCE), 90, tmp_path / "b")
    found = await sampled(province)
    expiry = kinds(found)
    soon_expiry = load_certs(tmp_path / "a" / "client.crt")[0].not_valid_after_utc.timestamp()
    later_expiry = load_certs(tmp_path / "b" / "client.crt")[0].not_valid_after_utc.timestamp()
    assert expiry["agency"] == soon_expiry  # the soonest of the two
    assert expiry["agency"] - time.time() < 30 * 86400  # GovnodeCertificateExpiresSoon fires
    assert {k: v for k, v in expiry.items() if k != "agency"} == before  # the node's own stay
    labels = {tuple(s.labels) for s in found if s.name == EXPIRY}
    assert labels == {("kind",)}  # no subject, no serial

    await revoke(province, security, soon)
    assert kinds(await sampled(province))["agency"] == later_expiry  # the revoked one drops out
    await revoke(province, security, later)
    assert "agency" not in kinds(await sampled(province))


async def submit(member: Member, code: str) -> None:
    async def batches() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        yield sharing_pb2.SubmitBatch(
            resource_code=code,
            batch_id="b0",
            records=[common_pb2.Record(values={"tyshxydm": "91350100MA00000001", "qymc": "某"})],
        )

    async with channel(member.running, member.agency()) as ch:
        [_ async for _ in sharing_pb2_grpc.SharingServiceStub(ch).Submit(batches())]


async def test_resources_overdue_for_aggregation_are_counted_by_cycle(province: Member) -> None:
    found = await sampled(province)
    assert {c.value: value(found, OVERDUE, update_cycle=c.value) for c in UpdateCycle} == {
        c.value: 0.0 for c in UpdateCycle
    }
    assert all(s.name != OVERDUE or "irregular" not in s.labels.values() for s in found)

    today = time.strftime("%Y-%m-%d", time.gmtime())
    daily = entry_of(PROVINCE, 1, items=ITEMS)  # published 2025-01-15, never aggregated
    await province.register(daily)
    await province.register(entry_of(PROVINCE, 2, items=ITEMS, update_cycle=UpdateCycle.YEARLY))
    await province.register(
        entry_of(PROVINCE, 3, items=ITEMS, update_cycle=UpdateCycle.IRREGULAR)  # never overdue
    )
    await province.register(
        entry_of(PROVINCE, 4, items=ITEMS, update_cycle=UpdateCycle.WEEKLY, publish_date=today)
    )
    found = await sampled(province)
    assert value(found, OVERDUE, update_cycle="daily") == 1
    assert value(found, OVERDUE, update_cycle="yearly") == 1
    assert value(found, OVERDUE) == 2  # the weekly one is not due yet; irregular never is

    # The same figure supervision's certificate condition 2 reads: aggregate, and it clears.
    await submit(province, daily.resource_code)
    found = await sampled(province)
    assert value(found, OVERDUE, update_cycle="daily") == 0
    assert value(found, OVERDUE) == 1
