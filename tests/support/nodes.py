"""Starting real nodes for tests: fresh PKI on disk, a real database, mutual TLS on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from govnode.v1 import access_pb2, access_pb2_grpc, catalog_pb2, catalog_pb2_grpc, common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.app import RunningNode, start_node
from node.catalog import ResourceEntry
from node.codes import make_credit_code
from node.config import NodeConfig, load_config
from node.demo._main import free_port
from node.pki import (
    KeyPair,
    admit_city,
    issue_authority,
    issue_client,
    issue_portal,
    load_certs,
    prepare_city,
    provision_province,
    region_ca,
)
from node.pki._ca import issue_leaf
from node.pki._files import write_client_bundle
from node.servicers.convert import entry_to_proto
from tests.support.databases import NewDatabaseUrl
from tests.support.entries import agency_code, make_entry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

#: Example agencies of the province (codes registered in division 350000).
PUBLIC_SECURITY = make_credit_code("11350000003591001")
MARKET_REGULATION = make_credit_code("11350000003591002")
CIVIL_AFFAIRS = make_credit_code("11350000003591003")


@dataclass
class ProvinceSetup:
    base: Path
    config_path: Path
    config: NodeConfig
    bundles: dict[str, TlsFiles] = field(default_factory=dict)

    def agency(self, code: str, name: str = "测试单位", **kwargs: object) -> TlsFiles:
        """Issue (once) and return an agency's client bundle."""
        if code not in self.bundles:
            out = self.base / "agencies" / code
            _, paths = issue_client(self.config, role=Role.AGENCY, subject=code, name=name, out=out)
            self.bundles[code] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        return self.bundles[code]

    def authority(self) -> TlsFiles:
        """Issue (once) and return the node's data management authority (数据管理机构)."""
        label = "authority"
        if label not in self.bundles:
            _, paths = issue_authority(self.config, out=self.base / "authority")
            self.bundles[label] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        return self.bundles[label]

    def tester(self, name: str = "lab-1") -> TlsFiles:
        """Issue (once) and return a conformance tester's client bundle (第三十一条)."""
        label = f"tester:{name}"
        if label not in self.bundles:
            out = self.base / "testers" / name
            _, paths = issue_client(
                self.config, role=Role.TESTER, subject=name, name=f"conformance {name}", out=out
            )
            self.bundles[label] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        return self.bundles[label]

    def portal(self, name: str = "opendata-1") -> TlsFiles:
        """Issue (once) and return an open data portal's client bundle (第三十条)."""
        label = f"portal:{name}"
        if label not in self.bundles:
            _, paths = issue_portal(self.config, name=name, out=self.base / "portals" / name)
            self.bundles[label] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
        return self.bundles[label]

    def custom_client(self, name: str, keypair: KeyPair, chain: list[x509.Certificate]) -> TlsFiles:
        """Write a bundle for a hand-made certificate (expired, foreign, out of region...)."""
        out = self.base / "custom" / name
        root = load_certs(self.config.path(self.config.tls.root))[0]
        paths = write_client_bundle(out, keypair, chain, root)
        return TlsFiles(paths["key"], paths["cert"], paths["ca"])

    def expired_agency(self, code: str) -> TlsFiles:
        ca = region_ca(self.config)
        from gateway.identity import make_identity

        now = dt.datetime.now(dt.UTC)
        keypair = issue_leaf(
            ca,
            make_identity("350000", self.config.node.trust_domain, Role.AGENCY, code),
            common_name="过期单位",
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )
        return self.custom_client("expired", keypair, [ca.cert])


def make_province(base: Path, db_url: str) -> ProvinceSetup:
    port = free_port()
    made = provision_province(
        base,
        region="350000",
        name="福建省",
        listen=f"127.0.0.1:{port}",
        trust_domain="fujian.gov.cn",
        hosts=["127.0.0.1", "localhost"],
    )
    text = made.config_path.read_text(encoding="utf-8")
    made.config_path.write_text(
        text.replace('url = "sqlite+aiosqlite:///node.db"', f'url = "{db_url}"'), encoding="utf-8"
    )
    return ProvinceSetup(base, made.config_path, load_config(made.config_path))


def enable_join(setup: ProvinceSetup) -> ProvinceSetup:
    """The same province with its join port (federation.join_listen) on a free loopback port."""
    text = setup.config_path.read_text(encoding="utf-8")
    commented = next(line for line in text.splitlines() if line.startswith("# join_listen = "))
    port = free_port()
    text = text.replace(commented, f'join_listen = "127.0.0.1:{port}"')
    setup.config_path.write_text(text, encoding="utf-8")
    return ProvinceSetup(setup.base, setup.config_path, load_config(setup.config_path))


def _use_database(config_path: Path, db_url: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    config_path.write_text(
        text.replace('url = "sqlite+aiosqlite:///node.db"', f'url = "{db_url}"'), encoding="utf-8"
    )


def make_city(
    base: Path,
    db_url: str,
    province_setup: ProvinceSetup,
    region: str = "350100",
    name: str = "福州市",
) -> ProvinceSetup:
    """A city node admitted by file (CA signed by the province root), following the province
    at its configured listen address. The returned setup issues the city's agencies."""
    province = province_setup.config
    config_path = prepare_city(
        base,
        region=region,
        name=name,
        listen=f"127.0.0.1:{free_port()}",
        trust_domain=province.node.trust_domain,
        hosts=["127.0.0.1", "localhost"],
        province_region=province.node.region,
        province_endpoint=province.node.listen,
    )
    _use_database(config_path, db_url)
    config = load_config(config_path)
    admit_city(province, config)
    return ProvinceSetup(base, config_path, config)


async def start(setup: ProvinceSetup) -> RunningNode:
    return await start_node(setup.config)


def channel(node: RunningNode, files: TlsFiles, timeout: float = 5.0) -> grpc.aio.Channel:
    return secure_channel(node.address, files, timeout=timeout)


async def approve_change(node: RunningNode, setup: ProvinceSetup, change_id: str) -> Any:
    """The node's authority approves change request ``change_id`` (第四十一条); the reviewed
    request."""
    async with channel(node, setup.authority()) as ch:
        reply = await access_pb2_grpc.AccessServiceStub(ch).ReviewChangeRequest(
            access_pb2.ReviewChangeRequestRequest(
                id=change_id, decision=common_pb2.REVIEW_DECISION_APPROVE
            )
        )
    assert reply.change_request.status == access_pb2.CHANGE_REQUEST_STATUS_APPROVED
    return reply.change_request


async def update_approved(
    node: RunningNode,
    setup: ProvinceSetup,
    provider: TlsFiles,
    entry: common_pb2.ResourceEntry,
    expected_version: int = 0,
    reason: str = "目录信息更新",
) -> None:
    """UpdateResource as ``provider``, then its authority's approval (第四十一条)."""
    async with channel(node, provider) as ch:
        reply = await catalog_pb2_grpc.CatalogServiceStub(ch).UpdateResource(
            catalog_pb2.UpdateResourceRequest(
                entry=entry, expected_version=expected_version, reason=reason
            )
        )
    assert reply.change_request_id, "an agency's update waits for approval"
    await approve_change(node, setup, reply.change_request_id)


async def withdraw_approved(
    node: RunningNode, setup: ProvinceSetup, provider: TlsFiles, code: str, reason: str = "停止提供"
) -> None:
    """WithdrawResource as ``provider``, then its authority's approval (第四十一条)."""
    async with channel(node, provider) as ch:
        reply = await catalog_pb2_grpc.CatalogServiceStub(ch).WithdrawResource(
            catalog_pb2.WithdrawResourceRequest(resource_code=code, reason=reason)
        )
    assert reply.change_request_id, "an agency's withdrawal waits for approval"
    await approve_change(node, setup, reply.change_request_id)


def with_submit_updates(setup: ProvinceSetup, mode: str) -> ProvinceSetup:
    """The same node with ``[governance] submit_updates`` set to ``mode`` ("approve", the
    default, or "apply": Submit changes stored records at once, 第四十一条)."""
    text = setup.config_path.read_text(encoding="utf-8")
    assert 'submit_updates = "approve"' in text, "the config `govnode init` wrote has it"
    text = text.replace('submit_updates = "approve"', f'submit_updates = "{mode}"', 1)
    setup.config_path.write_text(text, encoding="utf-8")
    config = load_config(setup.config_path)
    return ProvinceSetup(setup.base, setup.config_path, config, setup.bundles)


def with_limits(setup: ProvinceSetup, **values: float) -> ProvinceSetup:
    """The same node with keys of ``[limits]`` set, e.g. ``stream_stall_seconds=1``."""
    text = setup.config_path.read_text(encoding="utf-8")
    for key, value in values.items():
        line = next((ln for ln in text.splitlines() if ln.startswith(f"{key} = ")), None)
        assert line is not None, f"the config `govnode init` wrote has limits.{key}"
        text = text.replace(line, f"{key} = {value}", 1)
    setup.config_path.write_text(text, encoding="utf-8")
    config = load_config(setup.config_path)
    return ProvinceSetup(setup.base, setup.config_path, config, setup.bundles)


def with_metrics(setup: ProvinceSetup, *, tls: bool = False) -> ProvinceSetup:
    """The same node with its metrics listener (``[metrics]``) on a free port: loopback, or
    with ``tls`` on every address (0.0.0.0), mutual TLS. The bound port is
    ``node.metrics_listener.port``."""
    listen = "0.0.0.0:0" if tls else "127.0.0.1:0"
    section = setup.config.metrics.model_copy(
        update={"listen": listen, "tls": tls, "refresh_seconds": 0.2}
    )
    config = setup.config.model_copy(update={"metrics": section})
    return ProvinceSetup(setup.base, setup.config_path, config, setup.bundles)


def link_peers(setup: ProvinceSetup, peers: dict[str, str]) -> ProvinceSetup:
    """The same node with ``[federation] peers`` (region -> HOST:PORT) set: where it forwards
    calls on those regions' resources (file-admitted cities have no federation_member row)."""
    text = setup.config_path.read_text(encoding="utf-8")
    table = ", ".join(f'"{region}" = "{endpoint}"' for region, endpoint in peers.items())
    text = text.replace("[federation]\n", f"[federation]\npeers = {{ {table} }}\n", 1)
    setup.config_path.write_text(text, encoding="utf-8")
    config = load_config(setup.config_path)
    return ProvinceSetup(setup.base, setup.config_path, config, setup.bundles)


# --- a three-node federation: the province, 福州 and 厦门 ---------------------------------

FUZHOU, XIAMEN, PROVINCE = "350100", "350200", "350000"
WAIT_S = 5.0  # a quiet federation converges well within this


def entry_of(region: str, n: int, **fields: Any) -> ResourceEntry:
    provider = PUBLIC_SECURITY if region == PROVINCE else agency_code(1, region)
    return make_entry(
        n, provider, resource_code=f"{region}-3-{n:06d}", provider_name=f"{region}单位", **fields
    )


@dataclass
class Member:
    setup: ProvinceSetup
    node: RunningNode | None = None
    #: Records the node's spans (tests of tracing: each node its own provider).
    tracer_provider: TracerProvider | None = None

    @property
    def region(self) -> str:
        return self.setup.config.node.region

    @property
    def running(self) -> RunningNode:
        assert self.node is not None
        return self.node

    def agency(self) -> TlsFiles:
        code = PUBLIC_SECURITY if self.region == PROVINCE else agency_code(1, self.region)
        return self.setup.agency(code)

    async def start(self) -> None:
        self.node = await start_node(self.setup.config, tracer_provider=self.tracer_provider)

    async def stop(self) -> None:
        if self.node is not None:
            await self.node.stop(grace=0)
            self.node = None

    async def catalog(self, method: str, request: Any) -> Any:
        async with channel(self.running, self.agency()) as ch:
            return await getattr(catalog_pb2_grpc.CatalogServiceStub(ch), method)(request)

    async def register(self, entry: ResourceEntry) -> common_pb2.ResourceEntry:
        reply = await self.catalog(
            "RegisterResource", catalog_pb2.RegisterResourceRequest(entry=entry_to_proto(entry))
        )
        return reply.entry  # type: ignore[no-any-return]

    async def digest(self) -> tuple[str, int]:
        reply = await self.catalog("GetCatalogDigest", catalog_pb2.GetCatalogDigestRequest())
        return reply.digest, reply.entries


@dataclass
class Federation:
    province: Member
    fuzhou: Member
    xiamen: Member

    @property
    def members(self) -> list[Member]:
        return [self.province, self.fuzhou, self.xiamen]

    async def converged(self, entries: int, within: float = WAIT_S) -> float:
        """Poll every node's digest (every 0.1 s, bounded) until all agree on ``entries``
        entries; returns the seconds it took."""
        began = time.monotonic()
        seen: list[tuple[str, int]] = []
        for _ in range(int(within / 0.1) + 1):
            seen = [await m.digest() for m in self.members]
            if len(set(seen)) == 1 and seen[0][1] == entries:
                return time.monotonic() - began
            await asyncio.sleep(0.1)
        pytest.fail(f"no convergence on {entries} entries within {within} s: {seen}")


@contextlib.asynccontextmanager
async def federation(
    tmp_path: Path,
    db_urls: NewDatabaseUrl,
    tracer_providers: Mapping[str, TracerProvider] | None = None,
    *,
    metrics: bool = False,
    console: bool = False,
    **limits: float,
) -> AsyncIterator[Federation]:
    """The province, 福州 and 厦门, running; ``limits``: keys of ``[limits]`` for all three;
    ``tracer_providers``: by region, what records a node's spans; ``metrics``: each with its
    metrics listener on loopback (see :func:`with_metrics`); ``console``: each with its
    operator console on loopback (tests.support.console.with_console)."""
    province = make_province(tmp_path / "province", await db_urls())
    fed = Federation(
        Member(province),
        Member(make_city(tmp_path / "fuzhou", await db_urls(), province, FUZHOU, "福州市")),
        Member(make_city(tmp_path / "xiamen", await db_urls(), province, XIAMEN, "厦门市")),
    )
    fed.province.setup = link_peers(
        province,
        {m.region: m.setup.config.node.listen for m in (fed.fuzhou, fed.xiamen)},
    )
    if limits:
        for member in fed.members:
            member.setup = with_limits(member.setup, **limits)
    if console:
        from tests.support.console import with_console  # it imports this module

        for member in fed.members:
            member.setup = with_console(member.setup)
    if metrics:
        for member in fed.members:
            member.setup = with_metrics(member.setup)
    for member in fed.members:
        member.tracer_provider = (tracer_providers or {}).get(member.region)
    try:
        for member in fed.members:
            await member.start()
        yield fed
    finally:
        for member in reversed(fed.members):
            await member.stop()


#: The `govnode` command as a process of its own, from this checkout's interpreter.
GOVNODE = [sys.executable, "-c", "from node.cli import main; main()"]


def serve_process(
    config: Path,
    *,
    stderr: int | IO[bytes] = subprocess.PIPE,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] = GOVNODE,
) -> subprocess.Popen[bytes]:
    """`govnode serve --config CONFIG` as a process of its own, logging JSON lines to
    ``stderr``; ``env`` adds to the environment (GOVNODE_... overrides)."""
    return subprocess.Popen(
        [*command, "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "GOVNODE_LOG__FORMAT": "json", **(env or {})},
    )


def stock_channel(address: str, bundle: Path) -> grpc.Channel:
    """What any agency system would do with the three PEM files, and nothing of ours."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(bundle / "ca.crt").read_bytes(),
        private_key=(bundle / "client.key").read_bytes(),
        certificate_chain=(bundle / "client.crt").read_bytes(),
    )
    return grpc.secure_channel(address, creds)


def wait_serving(address: str, bundle: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"govnode serve exited early: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        with stock_channel(address, bundle) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.2)
    raise AssertionError("node did not report SERVING within 30 s")
