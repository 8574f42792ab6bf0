"""Revocation propagation (第十九条; DESIGN "Identity and PKI"): a certificate revoked at the
province is refused by every city within a few heartbeats. Real nodes on loopback over real
mutual TLS, each with its own database, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, federation_pb2, federation_pb2_grpc

from gateway.identity import identity_of
from gateway.tls import TlsFiles
from node.app import RunningNode, node_tls_files
from node.pki import Revocation, Revocations, load_certs, region_ca, serial_hex
from node.storage import Database
from tests.support.databases import NewDatabaseUrl
from tests.support.federation import (
    fast,
)
from tests.support.nodes import (
    CIVIL_AFFAIRS,
    MARKET_REGULATION,
    PUBLIC_SECURITY,
    ProvinceSetup,
    channel,
    make_city,
    make_province,
    start,
)

PROVINCE, FUZHOU, XIAMEN = "350000", "350100", "350200"
WAIT_S = 10.0


@dataclasses.dataclass
class Nodes:
    province: ProvinceSetup
    cities: list[ProvinceSetup]
    running: dict[str, RunningNode]

    async def restart(self, setup: ProvinceSetup) -> RunningNode:
        region = setup.config.node.region
        await self.running.pop(region).stop(grace=0)
        self.running[region] = await start(setup)
        return self.running[region]


@contextlib.asynccontextmanager
async def federation(tmp_path: Path, db_urls: NewDatabaseUrl) -> AsyncIterator[Nodes]:
    province = fast(make_province(tmp_path / "province", await db_urls()))
    cities = [
        fast(make_city(tmp_path / "fuzhou", await db_urls(), province, FUZHOU, "福州市")),
        fast(make_city(tmp_path / "xiamen", await db_urls(), province, XIAMEN, "厦门市")),
    ]
    nodes = Nodes(province, cities, {})
    try:
        for setup in [province, *cities]:
            nodes.running[setup.config.node.region] = await start(setup)
        yield nodes
    finally:
        for node in reversed(list(nodes.running.values())):
            await node.stop(grace=0)


async def digest(node: RunningNode, files: TlsFiles) -> None:
    async with channel(node, files) as ch:
        await catalog_pb2_grpc.CatalogServiceStub(ch).GetCatalogDigest(
            catalog_pb2.GetCatalogDigestRequest()
        )


async def refused_within(node: RunningNode, files: TlsFiles, within: float) -> str:
    """Poll (every 0.1 s, bounded) until ``node`` refuses ``files`` as revoked."""
    began = time.monotonic()
    while True:
        try:
            await digest(node, files)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAUTHENTICATED, exc.details()
            assert "revoked" in (exc.details() or ""), exc.details()
            return exc.details() or ""
        if time.monotonic() - began > within:
            pytest.fail(f"{node.config.node.region} still accepts the revoked certificate")
        await asyncio.sleep(0.1)


async def revoke(province: RunningNode, files: TlsFiles, reason: str) -> Revocation:
    leaf = load_certs(files.chain)[0]
    who = identity_of(leaf)
    return await Revocations(province.db).revoke(
        serial_hex=serial_hex(leaf),
        identity=str(who),
        issuer_region=who.region,
        reason=reason,
        revoked_by=str(province.identity),
    )


async def revoked_rows(db: Database) -> list[tuple[str, int]]:
    rows = await db.fetch_all(
        "SELECT serial_hex, sequence FROM revoked_certificate ORDER BY sequence", {}
    )
    return [(str(r[0]), int(r[1])) for r in rows]


async def test_province_revocation_reaches_every_city(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as nodes:
        province = nodes.running[PROVINCE]
        fuzhou_setup = nodes.cities[0]
        agency = nodes.province.agency(PUBLIC_SECURITY)
        for city in nodes.cities:  # a province agency chains to the root: cities accept it
            await digest(nodes.running[city.config.node.region], agency)

        done = await revoke(province, agency, "key_compromise")
        assert done.sequence == 1
        for city in nodes.cities:
            details = await refused_within(nodes.running[city.config.node.region], agency, WAIT_S)
            assert done.serial_hex in details and "key_compromise" in details
        await digest(province, nodes.province.agency(CIVIL_AFFAIRS))  # others unaffected

        fuzhou = nodes.running[FUZHOU]
        assert await revoked_rows(fuzhou.db) == [(done.serial_hex, 1)]
        assert await Revocations(fuzhou.db).cursor(PROVINCE) == 1

        # Restarted, the city resumes from its cursor: nothing applied twice, and the next
        # revocation still arrives (with the city's next sequence).
        fuzhou = await nodes.restart(fuzhou_setup)
        second_files = nodes.province.agency(MARKET_REGULATION)
        await digest(fuzhou, second_files)
        second = await revoke(province, second_files, "superseded")
        assert second.sequence == 2
        await refused_within(fuzhou, second_files, WAIT_S)
        await asyncio.sleep(1.0)  # a couple more heartbeats: still nothing twice
        assert await revoked_rows(fuzhou.db) == [(done.serial_hex, 1), (second.serial_hex, 2)]
        assert await Revocations(fuzhou.db).cursor(PROVINCE) == 2
        await refused_within(nodes.running[XIAMEN], second_files, WAIT_S)


async def test_revocation_list_is_for_nodes_and_carries_a_signed_crl(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with federation(tmp_path, db_urls) as nodes:
        province = nodes.running[PROVINCE]
        agency = nodes.province.agency(PUBLIC_SECURITY)
        done = await revoke(province, agency, "key_compromise")
        request = federation_pb2.GetRevocationListRequest(after_sequence=0)

        other = nodes.province.agency(CIVIL_AFFAIRS)
        async with channel(province, other) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await federation_pb2_grpc.FederationServiceStub(ch).GetRevocationList(request)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

        city_files = node_tls_files(nodes.cities[0].config)
        async with channel(province, city_files) as ch:
            stub = federation_pb2_grpc.FederationServiceStub(ch)
            reply = (await stub.GetRevocationList(request)).revocation_list
            later = (
                await stub.GetRevocationList(
                    federation_pb2.GetRevocationListRequest(after_sequence=1)
                )
            ).revocation_list
        assert [(r.serial, r.sequence, r.reason) for r in reply.revoked] == [
            (done.serial_hex, 1, "keyCompromise")
        ]
        assert reply.revoked[0].issuer_region == PROVINCE
        assert reply.last_sequence == 1
        assert list(later.revoked) == [] and later.last_sequence == 1
        assert len(reply.crls_der) == 1
        crl = x509.load_der_x509_crl(reply.crls_der[0])
        ca = region_ca(nodes.province.config).cert
        assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        assert crl.issuer == ca.subject
        entry = crl.get_revoked_certificate_by_serial_number(int(done.serial_hex, 16))
        assert entry is not None
