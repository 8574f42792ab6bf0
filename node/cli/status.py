"""``govnode status``: this node and its federation peers, as the node itself sees them."""

from __future__ import annotations

import asyncio
import datetime as dt
import unicodedata
from pathlib import Path

import grpc
import grpc.aio
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import federation_pb2, federation_pb2_grpc

from gateway.channel import secure_channel
from node.app import node_tls_files
from node.cli._common import CONFIG_OPTION, echo, load
from node.times import CST

MODES = {
    federation_pb2.NODE_MODE_PROVINCE: "province",
    federation_pb2.NODE_MODE_CITY: "city",
}
HEALTH = {
    federation_pb2.PEER_HEALTH_UNSPECIFIED: "NOT CONTACTED",
    federation_pb2.PEER_HEALTH_HEALTHY: "HEALTHY",
    federation_pb2.PEER_HEALTH_DEGRADED: "DEGRADED",
    federation_pb2.PEER_HEALTH_UNREACHABLE: "UNREACHABLE",
}


def _cst(ts: Timestamp, present: bool) -> str:
    if not present:
        return "-"
    return f"{ts.ToDatetime(tzinfo=dt.UTC).astimezone(CST):%Y-%m-%d %H:%M:%S} CST"


def _short(digest: str) -> str:
    return digest[:12] if digest else "-"


def _width(text: str) -> int:
    """Terminal columns of ``text`` (Chinese characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def render(node: federation_pb2.NodeInfo, peers: list[federation_pb2.Peer]) -> list[str]:
    lines = [
        f"Node      {node.region} {node.name} ({MODES.get(node.mode, 'unknown')})",
        f"Identity  {node.node_identity}",
        f"Listen    {node.listen_address}    software {node.software_version}",
        f"Catalog   sequence {node.catalog_last_sequence}, digest {_short(node.catalog_digest)}",
        f"Time      {_cst(node.server_time, node.HasField('server_time'))}",
    ]
    if node.mode == federation_pb2.NODE_MODE_CITY:
        approved = "approved" if node.approved_sub_platform else "not approved yet"
        lines.append(f"Sub-platform {approved} by the province (第三十一条)")
    lines.append("")
    if not peers:
        lines.append("Peers     none")
        return lines
    rows = [
        [
            "REGION",
            "NAME",
            "ENDPOINT",
            "HEALTH",
            "LAST SEEN",
            "CATALOG SEQ",
            "DIGEST",
            "SKEW",
            "SUB-PLATFORM",
        ]
    ]
    notes = []
    for p in peers:
        rows.append(
            [
                p.node.region,
                p.node.name or "-",
                p.node.listen_address or "-",
                HEALTH.get(p.health, "UNKNOWN"),
                _cst(p.last_seen, p.HasField("last_seen")),
                str(p.applied_catalog_sequence),
                _short(p.node.catalog_digest),
                f"{p.clock_skew_ms} ms",
                "approved" if p.node.approved_sub_platform else "-",
            ]
        )
        if p.last_error:
            retry = (
                f" (next attempt {_cst(p.next_attempt_at, True)})"
                if p.HasField("next_attempt_at")
                else ""
            )
            notes.append(f"  {p.node.region}: {p.last_error}{retry}")
    lines.append(f"Peers ({len(peers)})")
    lines.extend(_table(rows))
    if notes:
        lines.append("")
        lines.append("Errors")
        lines.extend(notes)
    return lines


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

        async def fetch() -> tuple[federation_pb2.NodeInfo, list[federation_pb2.Peer]]:
            async with secure_channel(address, node_tls_files(cfg), timeout=timeout) as channel:
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
        for line in render(node, peers):
            echo(line)
