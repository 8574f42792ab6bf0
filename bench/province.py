"""A fresh province node for the bench: PKI on disk, ``govnode serve`` as a process, the
example resource registered by its provider, and Submit as the provider does it.

The node runs exactly as an operator runs it (``govnode serve --config``), in a process of its
own, on the default SQLite storage in the bench's temporary directory, with JSON logs at
warning level so logging does not dominate the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
from govnode.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, sharing_pb2, sharing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import dataset
from bench.procs import Child, child, python_command
from gateway.channel import secure_channel
from gateway.identity import Role
from gateway.tls import TlsFiles
from node.config import NodeConfig, load_config
from node.pki import issue_client, provision_province
from node.ports import free_port
from node.servicers.convert import entry_to_proto

#: How long the node may take to report SERVING (migrations, key loading).
START_TIMEOUT_S = 60.0


@dataclass
class Province:
    """A provisioned province node directory and the agency bundles the bench uses."""

    base: Path
    config_path: Path
    config: NodeConfig
    bundles: dict[str, TlsFiles] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.config.node.listen

    @property
    def node_files(self) -> TlsFiles:
        """The node's own key, chain and root (the echo baseline serves with the same)."""
        tls = self.config.tls
        return TlsFiles(
            self.config.path(tls.key), self.config.path(tls.cert), self.config.path(tls.root)
        )

    @property
    def consumer(self) -> TlsFiles:
        return self.bundles[dataset.CONSUMER_CODE]

    @property
    def idle_consumer(self) -> TlsFiles:
        return self.bundles[dataset.IDLE_CONSUMER_CODE]

    @property
    def provider(self) -> TlsFiles:
        return self.bundles[dataset.provider()[0]]


def provision(base: Path) -> Province:
    made = provision_province(
        base,
        region="350000",
        name="福建省",
        listen=f"127.0.0.1:{free_port()}",
        trust_domain="fujian.gov.cn",
        hosts=["127.0.0.1", "localhost"],
    )
    config = load_config(made.config_path)
    province = Province(base, made.config_path, config)
    agencies = (
        dataset.provider(),
        (dataset.CONSUMER_CODE, dataset.CONSUMER_NAME),
        (dataset.IDLE_CONSUMER_CODE, dataset.IDLE_CONSUMER_NAME),
    )
    for code, name in agencies:
        _, paths = issue_client(
            config, role=Role.AGENCY, subject=code, name=name, out=base / "agencies" / code
        )
        province.bundles[code] = TlsFiles(paths["key"], paths["cert"], paths["ca"])
    return province


async def wait_serving(target: str, files: TlsFiles, node: Child) -> None:
    """Until the node at ``target`` reports SERVING (health check as the agency ``files``)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer yet"
    async with secure_channel(target, files, timeout=2.0) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if node.process.returncode is not None:
                raise node.failure(f"exited with code {node.process.returncode} while starting")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.2)
    raise node.failure(f"not SERVING within {START_TIMEOUT_S:.0f} s (last: {last})")


@contextlib.asynccontextmanager
async def serve_node(
    name: str,
    config_path: Path,
    target: str,
    files: TlsFiles,
    logs: Path,
    *,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Child]:
    """``govnode serve --config config_path`` as the process ``name`` for the duration of the
    block, SERVING when the block starts (checked as the agency ``files``); ``env`` adds
    GOVNODE_... overrides of its config."""
    command = python_command(
        "-c", "from node.cli import main; main()", "serve", "--config", str(config_path)
    )
    env = {"GOVNODE_LOG__FORMAT": "json", "GOVNODE_LOG__LEVEL": "warning", **(env or {})}
    async with child(name, command, logs=logs, env=env) as node:
        await wait_serving(target, files, node)
        yield node


@contextlib.asynccontextmanager
async def serve(province: Province, logs: Path) -> AsyncIterator[Child]:
    """The bench's province node for the duration of the block, SERVING when it starts."""
    async with serve_node(
        "govnode", province.config_path, province.target, province.consumer, logs
    ) as node:
        yield node


async def register_resource(province: Province) -> None:
    """The provider registers 法人单位基础信息 over gRPC, as an agency system would."""
    request = catalog_pb2.RegisterResourceRequest(
        entry=entry_to_proto(dataset.resource_entry()), request_id="bench-register"
    )
    async with secure_channel(province.target, province.provider) as channel:
        await catalog_pb2_grpc.CatalogServiceStub(channel).RegisterResource(request)


@dataclass(frozen=True)
class SubmitFigures:
    batches: int
    accepted: int
    rejected: int
    seconds: float
    first_problem: str
    #: Records held for approval (第四十一条): changes of stored records.
    held: int = 0

    @property
    def records_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    @property
    def held_per_s(self) -> float:
        return self.held / self.seconds if self.seconds > 0 else 0.0


def _batches(
    first: int, batches: int, batch_size: int, resource_code: str, changed: bool
) -> Iterator[sharing_pb2.SubmitBatch]:
    values = dataset.changed_values if changed else dataset.record_values
    suffix = "-changed" if changed else ""
    for b in range(batches):
        start = first + b * batch_size
        yield sharing_pb2.SubmitBatch(
            resource_code=resource_code,
            batch_id=f"bench-{start}-{batch_size}{suffix}",
            records=[common_pb2.Record(values=values(i)) for i in range(start, start + batch_size)],
        )


async def submit(
    target: str,
    provider: TlsFiles,
    *,
    first: int,
    batches: int,
    batch_size: int,
    duration: float,
    window: int = 4,
    rpc_timeout: float = 300.0,
    resource_code: str = dataset.RESOURCE_CODE,
    changed: bool = False,
) -> SubmitFigures:
    """Stream ``batches`` batches of records ``first``, ``first + 1``... of ``resource_code``
    through Submit to the node at ``target``, as the agency ``provider``; ``changed``: with
    other values than :func:`bench.dataset.record_values` (changes of stored records, held
    for approval).

    At most ``window`` batches are unacknowledged at a time, as a careful provider would send
    them; no new batch is sent after ``duration`` seconds. Timed from the first send to the
    last ack (acks come only after a durable commit). Batches are built before the clock starts.
    """
    prepared = list(_batches(first, batches, batch_size, resource_code, changed))
    room = asyncio.Semaphore(window)
    t0 = 0.0

    async def requests() -> AsyncIterator[sharing_pb2.SubmitBatch]:
        for batch in prepared:
            await room.acquire()
            if time.perf_counter() - t0 > duration:
                return
            yield batch

    accepted = rejected = acked = held = 0
    first_problem = ""
    async with secure_channel(target, provider) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        stub = sharing_pb2_grpc.SharingServiceStub(channel)
        t0 = last = time.perf_counter()
        call = stub.Submit(requests(), timeout=rpc_timeout)
        async for ack in call:
            last = time.perf_counter()
            acked += 1
            accepted += ack.accepted
            rejected += ack.rejected
            held += ack.held
            if ack.rejections and not first_problem:
                r = ack.rejections[0]
                first_problem = f"record {r.index} item {r.item or '-'}: {r.reason}"
            room.release()
    return SubmitFigures(acked, accepted, rejected, last - t0, first_problem, held)


def audit_counts(province: Province) -> dict[str, int] | None:
    """Audit entries per method in the node's database (read after the node stopped), proof
    that the figures were taken with the audit log on; None if it cannot be read."""
    url = province.config.database_url
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{url[len(prefix) :]}?mode=ro", uri=True)
        ) as db:
            rows = db.execute(
                "SELECT method, count(*) FROM audit_record GROUP BY method"
            ).fetchall()
            checkpoints = db.execute("SELECT count(*) FROM audit_checkpoint").fetchone()[0]
    except sqlite3.Error:
        return None
    counts = {str(method).rsplit("/", 1)[-1]: int(n) for method, n in rows}
    # Not a method: how many checkpoints the node signed during the run (issue 13: Verify is
    # measured with checkpointing on, every 10,000 records or 60 s by default).
    counts["(checkpoints signed)"] = int(checkpoints)
    return counts
