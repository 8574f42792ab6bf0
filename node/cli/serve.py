"""``govnode serve`` and ``govnode health``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.channel import secure_channel
from node.app import node_tls_files
from node.cli._common import CONFIG_OPTION, echo, load, log_level
from node.logging import configure_logging


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(config: Path = CONFIG_OPTION) -> None:
        """Run the node until SIGTERM/SIGINT (mutual TLS only; health and reflection on)."""
        from node.app import serve_forever

        cfg = load(config)
        configure_logging(cfg.log.format, log_level(cfg.log.level))
        asyncio.run(serve_forever(cfg))

    @app.command("health")
    def health(
        config: Path = CONFIG_OPTION,
        target: str = typer.Option(
            "", "--target", help="HOST:PORT to check (default: this node's listen address)."
        ),
        timeout: float = typer.Option(3.0, "--timeout", help="Seconds to wait."),
    ) -> None:
        """Ask a node's gRPC health service, over mutual TLS with this node's certificate."""
        cfg = load(config)
        address = target or cfg.node.listen.replace("0.0.0.0:", "127.0.0.1:")

        async def check() -> str:
            async with secure_channel(address, node_tls_files(cfg), timeout=timeout) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
                return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

        try:
            status = asyncio.run(check())
        except grpc.aio.AioRpcError as exc:
            echo(f"{address}: {exc.code().name}: {exc.details()}")
            raise typer.Exit(1) from None
        echo(f"{address}: {status}")
        raise typer.Exit(0 if status == "SERVING" else 1)
