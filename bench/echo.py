"""The Verify baseline: a bare grpc.aio server over the node's own mutual TLS, echoing bytes.

It uses the node's key, chain and root and the node's server options
(:func:`gateway.server.server_options`), so the only differences from a govnode call are what
govnode adds: interceptors (authentication, revocation, audit), protobuf decoding and the
database. Run as ``python -m bench.echo --port P --key K --cert C --root R``; it prints
``ready`` once serving and stops on SIGTERM, SIGINT or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading

import grpc
import grpc.aio

from bench.procs import tls_arguments
from gateway.server import ServerLimits, server_options
from gateway.tls import TlsFiles, server_credentials

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when the parent goes away (our stdin is its pipe)."""
    sys.stdin.buffer.read()
    loop.call_soon_threadsafe(stop.set)


async def serve(port: int, files: TlsFiles) -> None:
    server = grpc.aio.server(options=server_options(ServerLimits()))
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port(f"127.0.0.1:{port}", server_credentials(files))
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    print("ready", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    tls_arguments(parser, target=False)
    args = parser.parse_args()
    asyncio.run(serve(args.port, TlsFiles(args.key, args.cert, args.root)))


if __name__ == "__main__":
    main()
