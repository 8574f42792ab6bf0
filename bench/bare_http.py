"""The download baseline: a bare aiohttp HTTPS server streaming one file, and nothing else.

It serves ``GET /data.csv`` with the portal's own TLS (:func:`portal.server.server_tls` on the
portal's ``portal.toml``: the same certificate, key and settings) and the portal's way of
sending a file (a ``StreamResponse`` with ``Content-Length``, written in 64 KiB chunks), from
bytes held in memory: no node, no headers beyond HTTP's own, no Range, no budget. So the
difference from a portal download is what the portal and its node add. Run as
``python -m bench.bare_http --port P --config portal.toml --file data.csv``; it prints
``ready`` once serving and stops on SIGTERM, SIGINT or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path

from aiohttp import web

from portal.config import load_portal_config
from portal.server import server_tls

#: As the portal's chunks (node.opendata.CHUNK_BYTES).
CHUNK_BYTES = 64 * 1024
FILE_KEY: web.AppKey[bytes] = web.AppKey("file", bytes)


async def send_file(request: web.Request) -> web.StreamResponse:
    data = request.app[FILE_KEY]
    response = web.StreamResponse()
    response.content_type = "text/csv"
    response.charset = "utf-8"
    response.content_length = len(data)
    await response.prepare(request)
    for start in range(0, len(data), CHUNK_BYTES):
        await response.write(data[start : start + CHUNK_BYTES])
    await response.write_eof()
    return response


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when the parent goes away (our stdin is its pipe)."""
    sys.stdin.buffer.read()
    loop.call_soon_threadsafe(stop.set)


async def serve(port: int, config: Path, data: bytes) -> None:
    app = web.Application()
    app[FILE_KEY] = data
    app.router.add_get("/data.csv", send_file, allow_head=False)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    tls = server_tls(load_portal_config(config))
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls, shutdown_timeout=1.0)
    await site.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    threading.Thread(target=_watch_stdin, args=(loop, stop), daemon=True).start()
    print("ready", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True, help="the portal's portal.toml")
    parser.add_argument("--file", type=Path, required=True, help="the bytes to serve")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.config, args.file.read_bytes()))


if __name__ == "__main__":
    main()
