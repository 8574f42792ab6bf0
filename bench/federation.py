"""A three-node federation for the routed-Verify scenario: the province, 福州 (350100) and
厦门 (350200), each ``govnode serve`` in a process of its own.

The cities are admitted by file, as the tests do (:func:`node.pki.prepare_city` then
:func:`node.pki.admit_city`); the province learns where they listen from
``[federation] peers`` (file-admitted cities have no federation_member row), and every node
heartbeats every second so the federation is healthy soon after it starts. A 福州 agency
registers 法人单位基础信息 under a 福州 code (:data:`RESOURCE_CODE`, unconditionally shared);
a 厦门 agency calls 厦门 about it, which routes 厦门 → province → 福州.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, sharing_pb2_grpc

from bench import dataset
from bench.procs import Child
from bench.province import serve_node
from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.codes import make_credit_code
from node.config import load_config
from node.demo import EXAMPLES_DIR, load_example_catalog
from node.pki import admit_city, issue_client, prepare_city, provision_province
from node.ports import free_port
from node.servicers.convert import entry_to_proto

PROVINCE, FUZHOU, XIAMEN = "350000", "350100", "350200"
TRUST_DOMAIN = "fujian.gov.cn"
HOSTS = ["127.0.0.1", "localhost"]
#: 法人单位基础信息 as 福州 registers it (the example entry under a 福州 code).
RESOURCE_CODE = "350100-1-000001"
#: The agencies: 福州's provider of the resource (and single-node caller), 厦门's caller, and
#: a province agency that only checks the province's health.
FUZHOU_AGENCY = (make_credit_code("11350100003592001"), "福州市市场监督管理局")
XIAMEN_AGENCY = (make_credit_code("11350200003592001"), "厦门市公安局")
PROVINCE_AGENCY = (dataset.CONSUMER_CODE, dataset.CONSUMER_NAME)
#: How long the catalog entry may take to reach 厦门 (福州 → province → 厦门).
SPREAD_TIMEOUT_S = 15.0
HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class Member:
    """One node of the federation: its config, where it listens and one agency of its own."""

    name: str
    config_path: Path
    target: str
    agency: TlsFiles


@dataclass(frozen=True)
class Federation:
    province: Member
    fuzhou: Member
    xiamen: Member

    @property
    def members(self) -> tuple[Member, Member, Member]:
        return (self.province, self.fuzhou, self.xiamen)


def _edit_federation(config_path: Path, lines: list[str]) -> None:
    """Add ``lines`` at the top of the config's ``[federation]`` table."""
    text = config_path.read_text(encoding="utf-8")
    if "[federation]\n" not in text:
        raise RuntimeError(f"{config_path}: no [federation] table to edit")
    added = "".join(f"{line}\n" for line in lines)
    config_path.write_text(text.replace("[federation]\n", f"[federation]\n{added}", 1), "utf-8")


def _agency(config_path: Path, base: Path, code_name: tuple[str, str]) -> TlsFiles:
    code, name = code_name
    _, paths = issue_client(
        load_config(config_path), role=Role.AGENCY, subject=code, name=name,
        out=base / "agencies" / code,
    )  # fmt: skip
    return TlsFiles(paths["key"], paths["cert"], paths["ca"])


def provision(base: Path) -> Federation:
    """PKI, configs and agency bundles of the three nodes, under ``base`` (blocking)."""
    made = provision_province(
        base / "province",
        region=PROVINCE,
        name="福建省",
        listen=f"127.0.0.1:{free_port()}",
        trust_domain=TRUST_DOMAIN,
        hosts=HOSTS,
    )
    province = load_config(made.config_path)
    cities: dict[str, Path] = {}
    for region, name, directory in ((FUZHOU, "福州市", "fuzhou"), (XIAMEN, "厦门市", "xiamen")):
        config_path = prepare_city(
            base / directory,
            region=region,
            name=name,
            listen=f"127.0.0.1:{free_port()}",
            trust_domain=TRUST_DOMAIN,
            hosts=HOSTS,
            province_region=PROVINCE,
            province_endpoint=province.node.listen,
        )
        admit_city(province, load_config(config_path))
        _edit_federation(config_path, [f"heartbeat_seconds = {HEARTBEAT_S}"])
        cities[region] = config_path
    listens = {region: load_config(path).node.listen for region, path in cities.items()}
    peers = ", ".join(f'"{region}" = "{endpoint}"' for region, endpoint in listens.items())
    _edit_federation(
        made.config_path, [f"heartbeat_seconds = {HEARTBEAT_S}", f"peers = {{ {peers} }}"]
    )
    return Federation(
        Member(
            "govnode-province",
            made.config_path,
            province.node.listen,
            _agency(made.config_path, base / "province", PROVINCE_AGENCY),
        ),
        Member(
            "govnode-fuzhou",
            cities[FUZHOU],
            listens[FUZHOU],
            _agency(cities[FUZHOU], base / "fuzhou", FUZHOU_AGENCY),
        ),
        Member(
            "govnode-xiamen",
            cities[XIAMEN],
            listens[XIAMEN],
            _agency(cities[XIAMEN], base / "xiamen", XIAMEN_AGENCY),
        ),
    )


@contextlib.asynccontextmanager
async def serve(fed: Federation, logs: Path) -> AsyncIterator[list[Child]]:
    """The three nodes for the duration of the block (the province first), all SERVING."""
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                serve_node(m.name, m.config_path, m.target, m.agency, logs)
            )
            for m in fed.members
        ]
        yield nodes


def resource_entry() -> catalog_pb2.RegisterResourceRequest:
    """The example 法人单位基础信息 entry under :data:`RESOURCE_CODE`, provided by 福州."""
    catalog = load_example_catalog(EXAMPLES_DIR / "catalog-province.toml")
    entry = catalog.resources[1].model_copy(
        update={
            "resource_code": RESOURCE_CODE,
            "provider_code": FUZHOU_AGENCY[0],
            "provider_name": FUZHOU_AGENCY[1],
        }
    )
    return catalog_pb2.RegisterResourceRequest(
        entry=entry_to_proto(entry), request_id="bench-register-fuzhou"
    )


async def register_and_spread(fed: Federation) -> float:
    """The 福州 agency registers the entry on 福州; then 厦门's catalog is polled until it has
    it. Returns the seconds the entry took to reach 厦门; RuntimeError after
    :data:`SPREAD_TIMEOUT_S`."""
    async with secure_channel(fed.fuzhou.target, fed.fuzhou.agency) as channel:
        await catalog_pb2_grpc.CatalogServiceStub(channel).RegisterResource(resource_entry())
    began = time.monotonic()
    last = "no answer yet"
    request = catalog_pb2.GetResourceRequest(resource_code=RESOURCE_CODE)
    async with secure_channel(fed.xiamen.target, fed.xiamen.agency, timeout=2.0) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        while time.monotonic() - began < SPREAD_TIMEOUT_S:
            try:
                await stub.GetResource(request, timeout=2.0)
                return time.monotonic() - began
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.1)
    raise RuntimeError(
        f"{RESOURCE_CODE} did not reach 厦门 within {SPREAD_TIMEOUT_S:.0f} s (last: {last})"
    )


async def routed_ready(fed: Federation) -> None:
    """Until one routed Verify (厦门 → province → 福州) of record 0 answers found and
    matching, so the measurement's warm-up does not also wait for the federation to settle;
    RuntimeError after :data:`SPREAD_TIMEOUT_S`."""
    from bench.load import verify_request

    request = verify_request(0, resource_code=RESOURCE_CODE)
    began = time.monotonic()
    last = "no answer yet"
    async with secure_channel(fed.xiamen.target, fed.xiamen.agency, timeout=2.0) as channel:
        stub = sharing_pb2_grpc.SharingServiceStub(channel)
        while time.monotonic() - began < SPREAD_TIMEOUT_S:
            try:
                reply = await stub.Verify(request, timeout=2.0)
                if reply.found and reply.all_match:
                    return
                last = f"found={reply.found} all_match={reply.all_match}"
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.2)
    raise RuntimeError(
        f"routed Verify via 厦门 not answering within {SPREAD_TIMEOUT_S:.0f} s (last: {last})"
    )
