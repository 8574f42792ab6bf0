"""Downloads (第三十二条) with their provenance (第三十五条: 注明来源和获取日期).

``GET /api/v1/datasets/{code}/data.csv`` (``?bom=1`` for Excel) and ``data.jsonl`` stream the
node's file chunk by chunk: the portal holds at most one chunk (256 KiB) and the socket's buffer
per download, and a client that stops reading for ``write_stall_seconds`` is disconnected (a
slow reader costs the portal a connection, never memory). The node sends the file's size,
SHA-256 and signed receipt before the first byte, so the response carries them in its headers:

- ``Content-Length``, ``Accept-Ranges: bytes``, ``ETag`` (version and SHA-256), and on request
  a single byte range (``Range: bytes=a-b`` or ``bytes=a-``; 206 with ``Content-Range``; other
  forms are ignored and the whole file is sent, as RFC 9110 allows); ``If-Range`` with another
  ETag sends the whole file;
- ``Repr-Digest: sha-256=:…:`` (RFC 9530) of the whole file;
- ``Link: <dataset IRI>; rel="cite-as"`` and the metadata sidecar as ``rel="describedby"``;
- ``Content-Disposition`` naming the resource code and version;
- ``Govnode-Source`` and ``Govnode-Acquired-At`` (percent-encoded UTF-8), ``Govnode-Version``,
  ``Govnode-Dataset``;
- ``Govnode-Receipt``: the node's download receipt, base64url; it names this client (its
  address, or the key's id) and the whole file's SHA-256, and anyone checks it offline
  (``govnode opendata check-receipt``, or ``POST /api/v1/receipts/check``).

``data.csv-metadata.json`` and ``data.jsonl-metadata.json`` are the sidecars (CSVW metadata
with the provenance): a comment row would break CSV readers, and a JSON Lines file has one
object per row and nowhere else to say it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from portal.app import HttpRefusal, Portal, _dumps, caller_of, log, portal_of
from portal.node import Caller, Download, FileStart, NodeRefusal
from portal.views import DATA_TYPES, FORMATS, api_path, cite_text

_RANGE_RE = re.compile(r"^bytes=(\d{1,19})-(\d{0,19})$")
#: No file is larger: a range past it is answered 416 without asking the node.
MAX_OFFSET = 2**62
_CSVW_TYPES = {
    "integer": "integer",
    "decimal": "decimal",
    "date": "date",
    "datetime": "datetime",
    "boolean": "boolean",
}


def _range(request: web.Request) -> tuple[int, int | None] | None:
    """(first, last or None) of a single ``Range: bytes=`` the portal serves, else None."""
    header = request.headers.get("Range", "")
    match = _RANGE_RE.match(header.strip()) if header else None
    if match is None:
        return None
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else None
    if last is not None and last < first:
        return None  # invalid as written: RFC 9110 says to ignore it
    if first > MAX_OFFSET:
        raise HttpRefusal(416, f"Range: byte {first} is past any file this portal serves")
    return first, None if last is None else min(last, MAX_OFFSET)


def _etag(start: FileStart) -> str:
    return f'"v{start.version}-{start.sha256[:32]}"'


def _percent(text: str) -> str:
    return quote(text, safe=" ,;:/()[]@+=-_.~")


def _bom(request: web.Request, fmt: str) -> bool:
    raw = request.query.get("bom", "")
    if raw not in ("", "0", "1", "true", "false"):
        raise HttpRefusal(400, "bom: 1 or 0")
    bom = raw in ("1", "true")
    if bom and fmt != "csv":
        raise HttpRefusal(400, "bom: only a csv file starts with a byte order mark")
    return bom


async def _open(
    portal: Portal, caller: Caller, code: str, fmt: str, bom: bool, offset: int, length: int
) -> tuple[Download, FileStart]:
    download = portal.node.download(
        caller,
        code,
        fmt,
        bom=bom,
        offset=offset,
        length=length,
        timeout_s=portal.config.section.download_seconds,
    )
    try:
        start = await download.open()
    except BaseException:
        download.cancel()
        raise
    return download, start


async def download(request: web.Request) -> web.StreamResponse:
    portal = portal_of(request)
    code, fmt = request.match_info["code"], request.match_info["fmt"]
    bom = _bom(request, fmt)
    caller = caller_of(request)
    wanted = _range(request)
    offset, length = 0, 0
    if wanted is not None:
        offset = wanted[0]
        length = 0 if wanted[1] is None else wanted[1] - wanted[0] + 1
    try:
        flow, start = await _open(portal, caller, code, fmt, bom, offset, length)
    except Exception as exc:
        if isinstance(exc, NodeRefusal) and exc.http_status == 416 and wanted is not None:
            raise HttpRefusal(416, f"Range: the file is shorter than byte {offset}") from None
        raise
    if_range = request.headers.get("If-Range")
    if wanted is not None and if_range is not None and if_range != _etag(start):
        flow.cancel()  # the file changed since the client's first part: send it whole
        wanted, offset, length = None, 0, 0
        flow, start = await _open(portal, caller, code, fmt, bom, 0, 0)
    try:
        return await _send(request, portal, flow, start, code, fmt, wanted, offset, length)
    finally:
        flow.cancel()


async def _send(
    request: web.Request,
    portal: Portal,
    flow: Download,
    start: FileStart,
    code: str,
    fmt: str,
    wanted: tuple[int, int | None] | None,
    offset: int,
    length: int,
) -> web.StreamResponse:
    size = start.size
    end = size if not length else min(size, offset + length)
    response = web.StreamResponse(status=206 if wanted is not None else 200)
    response.content_type = FORMATS[fmt][0].split(";")[0]
    response.charset = "utf-8"
    response.content_length = end - offset
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {offset}-{max(offset, end) - 1}/{size}"
    api = api_path(code)
    base = portal.base_url
    digest = base64.b64encode(bytes.fromhex(start.sha256)).decode()
    name = f"{code}-v{start.version}.{fmt}"
    response.headers.update(
        {
            "Accept-Ranges": "bytes",
            "ETag": _etag(start),
            "Repr-Digest": f"sha-256=:{digest}:",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Link": (
                f'<{start.dataset_iri}>; rel="cite-as", '
                f'<{base}{api}/data.{fmt}-metadata.json>; rel="describedby"; '
                'type="application/csvm+json"'
            ),
            "Govnode-Dataset": start.dataset_iri,
            "Govnode-Version": str(start.version),
            "Govnode-Source": _percent(start.source),
            "Govnode-Acquired-At": start.acquired_at,
            "Govnode-Receipt": base64.urlsafe_b64encode(start.receipt).decode().rstrip("="),
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    watch = _StallWatch(request, portal.config.section.write_stall_seconds)
    try:
        async for data in flow.chunks():
            watch.since = watch.now()
            await response.write(data)
            watch.since = None
        await response.write_eof()
    except NodeRefusal as exc:
        # The headers are sent: all the client can learn is a body shorter than its
        # Content-Length, which every HTTP client reports (resume with Range).
        log.warning("portal_download_broken", path=request.path[:200], refusal=str(exc)[:200])
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        # The client went away, or stopped reading and was dropped (watch.dropped): nothing
        # to tell it; the node's stream is cancelled.
        pass
    finally:
        watch.close()
    return response


class _StallWatch:
    """Drops a client whose download stops being read: a write under way for ``seconds`` (the
    client takes nothing, its socket's buffer is full) aborts the connection, rather than hold
    the file's bytes for it. One timer per download, due when the write under way would reach
    the limit, rather than a timeout armed around every chunk's write (most writes do not
    wait at all, and a timeout per chunk cost more than the write's bookkeeping)."""

    def __init__(self, request: web.Request, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._request = request
        self._seconds = seconds
        #: When the write under way started (None between writes).
        self.since: float | None = None
        self.dropped = False
        self.now = self._loop.time
        self._timer = self._loop.call_later(seconds, self._check)

    def _check(self) -> None:
        since = self.since
        if since is None:
            self._timer = self._loop.call_later(self._seconds, self._check)
        elif self.now() - since < self._seconds:
            self._timer = self._loop.call_at(since + self._seconds, self._check)
        else:
            self.dropped = True
            if self._request.transport is not None:
                self._request.transport.abort()

    def close(self) -> None:
        self._timer.cancel()


async def sidecar(request: web.Request) -> web.Response:
    """CSVW metadata of a download, with its provenance (第三十五条)."""
    portal = portal_of(request)
    code, fmt = request.match_info["code"], request.match_info["fmt"]
    resource = await portal.node.get_resource(caller_of(request, with_key=False), code)
    entry = resource.entry
    base = portal.base_url + api_path(code)
    columns: list[dict[str, Any]] = []
    for item in entry.items:
        column: dict[str, Any] = {"name": item.name, "titles": {"zh": item.title}}
        kind = _CSVW_TYPES.get(DATA_TYPES.get(item.data_type, ""))
        column["datatype"] = kind or "string"
        columns.append(column)
    obtained = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    document: dict[str, Any] = {
        "@context": ["http://www.w3.org/ns/csvw", {"@language": "zh"}],
        "url": f"{base}/data.{fmt}",
        "dc:title": entry.name,
        "dc:description": entry.summary,
        "dc:identifier": resource.dataset_iri,
        "dc:source": resource.source,
        "dc:publisher": entry.provider_name,
        "dc:created": resource.acquired_at.ToJsonString(),
        "schema:version": str(resource.version),
        "govnode:obtainedAt": obtained,
        "govnode:cite": cite_text(resource),
        "tableSchema": {"columns": columns},
    }
    if fmt == "csv":
        document["dialect"] = {"header": True, "encoding": "utf-8", "lineTerminators": ["\r\n"]}
    else:
        document["dialect"] = {"header": False, "encoding": "utf-8"}
        document["notes"] = "JSON Lines: one JSON object per row, keyed by the column names"
    response = web.json_response(document, content_type="application/csvm+json", dumps=_dumps)
    response.headers["Link"] = f'<{resource.dataset_iri}>; rel="cite-as"'
    return response


def add_routes(app: web.Application) -> None:
    fmt = "{fmt:csv|jsonl}"
    app.router.add_get(f"/api/v1/datasets/{{code}}/data.{fmt}", download, allow_head=False)
    app.router.add_get(f"/api/v1/datasets/{{code}}/data.{fmt}-metadata.json", sidecar)
