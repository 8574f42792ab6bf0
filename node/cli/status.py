"""``govnode status``: this node and its federation peers, as the node itself sees them."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import grpc.aio
import typer
from govnode.v1 import audit_pb2, audit_pb2_grpc, federation_pb2, federation_pb2_grpc

from gateway.channel import secure_channel
from node.app import node_tls_files
from node.audit import epochs, pending_restore, witness_evidence
from node.cli._common import CONFIG_OPTION, echo, load
from node.storage import Database
from node.terminal import checkpoint_lines, restart_lines, status_lines


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        config: Path = CONFIG_OPTION,
        timeout: float = typer.Option(5.0, "--timeout", help="Seconds to wait."),
    ) -> None:
        """Show this node, its peers, their health and catalog versions (asks the running
        node over mutual TLS with its own certificate)."""
        cfg = load(config)
        address = cfg.node.listen.replace("0.0.0.0:", "127.0.0.1:")
        evidence_lines: list[str] = []

        async def checkpoint(
            stub: audit_pb2_grpc.AuditServiceAsyncStub, witnessed: bool
        ) -> audit_pb2.GetCheckpointResponse | None:
            try:
                return await stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(witnessed=witnessed))
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    return None
                raise

        async def evidence() -> list[tuple[str, str, dt.datetime]]:
            # What this node refused to cosign as a witness, and whether its own log was
            # restored or restarted, from its own database.
            db = await Database.open(cfg.database_url)
            try:
                restore = await pending_restore(db)
                evidence_lines.extend(
                    restart_lines(
                        None if restore is None else (restore.tree_size, restore.restored_at),
                        [(e.origin, e.first_sequence, e.gap) for e in await epochs(db)],
                    )
                )
                return [(e.origin, e.kind, e.at) for e in reversed(await witness_evidence(db, 10))]
            finally:
                await db.close()

        async def fetch() -> tuple[federation_pb2.NodeInfo, list[federation_pb2.Peer]]:
            async with secure_channel(address, node_tls_files(cfg), timeout=timeout) as channel:
                audit = audit_pb2_grpc.AuditServiceStub(channel)
                newest = await checkpoint(audit, witnessed=False)
                witnessed = await checkpoint(audit, witnessed=True)
                refused = await evidence()
                evidence_lines[:0] = checkpoint_lines(
                    newest, witnessed, refused, dt.datetime.now(dt.UTC)
                )
                stub = federation_pb2_grpc.FederationServiceStub(channel)
                info = await stub.GetNodeInfo(federation_pb2.GetNodeInfoRequest())
                peers: list[federation_pb2.Peer] = []
                token = ""
                while True:
                    page = await stub.ListPeers(
                        federation_pb2.ListPeersRequest(page_size=100, page_token=token)
                    )
                    peers.extend(page.peers)
                    token = page.next_page_token
                    if not token:
                        return info.node, peers

        try:
            node, peers = asyncio.run(fetch())
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                typer.echo(
                    f"error: node {cfg.node.region} at {address} is not reachable "
                    f"({exc.code().name}); is `govnode serve` running?",
                    err=True,
                )
            else:
                typer.echo(
                    f"error: node {cfg.node.region} at {address}: {exc.code().name}: "
                    f"{exc.details()}",
                    err=True,
                )
            raise typer.Exit(1) from None
        lines = status_lines(node, peers)
        for line in lines[: lines.index("")]:
            echo(line)
        for line in [*evidence_lines, *lines[lines.index("") :]]:
            echo(line)
