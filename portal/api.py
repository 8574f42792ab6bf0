"""The public REST/JSON API (``/api/v1/…``), the DCAT-AP catalog documents and the OpenAPI
document. Every handler asks the node and shapes its answer; none decides anything itself."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import uuid
from typing import Any

from aiohttp import web
from govnode.v1 import opendata_pb2

from portal.app import HttpRefusal, caller_of, portal_of
from portal.openapi import openapi_document
from portal.views import (
    ENTITY_TYPES,
    OPEN_TYPE_NAMES,
    USES,
    application_view,
    dataset_view,
    use_report_view,
)

MAX_SEARCH = 100
MAX_ITEMS_PARAM = 2000
#: Query parameters of the row API that are not filters.
ROW_PARAMS = frozenset({"page_size", "page_token", "items"})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(value, ensure_ascii=False),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def _int_param(request: web.Request, name: str, *, low: int, high: int) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return 0
    if not raw.isdigit() or len(raw) > 9 or not low <= int(raw) <= high:
        raise HttpRefusal(400, f"{name}: a whole number from {low} to {high}")
    return int(raw)


def _text_param(request: web.Request, name: str, limit: int) -> str:
    value = request.query.get(name, "")
    if len(value) > limit:
        raise HttpRefusal(400, f"{name}: at most {limit} characters")
    return value


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def list_datasets(request: web.Request) -> web.Response:
    portal = portal_of(request)
    open_type = request.query.get("open_type", "")
    if open_type and open_type not in OPEN_TYPE_NAMES:
        raise HttpRefusal(400, f"open_type: one of {', '.join(OPEN_TYPE_NAMES)}")
    answer = await portal.node.list_resources(
        caller_of(request, with_key=False),
        query=_text_param(request, "q", MAX_SEARCH),
        open_type=OPEN_TYPE_NAMES.get(open_type, 0),
        region=_text_param(request, "region", 6),
        page_size=_int_param(request, "page_size", low=1, high=200),
        page_token=_text_param(request, "page_token", 200),
    )
    body: dict[str, Any] = {
        "datasets": [dataset_view(r, portal.base_url) for r in answer.resources],
        "next_page_token": answer.next_page_token,
    }
    if answer.next_page_token:
        query = dict(request.query)
        query["page_token"] = answer.next_page_token
        body["next"] = str(request.url.with_query(query).relative())
    return _json(body)


async def get_dataset(request: web.Request) -> web.Response:
    portal = portal_of(request)
    resource = await portal.node.get_resource(
        caller_of(request, with_key=False), request.match_info["code"]
    )
    return _json(dataset_view(resource, portal.base_url))


async def query_rows(request: web.Request) -> web.Response:
    """A page of rows that pass ``item__op=value`` filters, in a JSON envelope that carries
    the source and the dates (第三十五条)."""
    portal = portal_of(request)
    filters: list[tuple[str, str]] = []
    for name, value in request.query.items():
        if name in ROW_PARAMS:
            continue
        if "__" not in name:
            raise HttpRefusal(
                400,
                f"{name[:40]}: not a parameter of this API; a filter is <item>__<op>=value "
                "(see /openapi.json), the others are page_size, page_token and items",
            )
        filters.append((name, value))
    items_raw = _text_param(request, "items", MAX_ITEMS_PARAM)
    items = [i for i in items_raw.split(",") if i] if items_raw else []
    answer = await portal.node.rows(
        caller_of(request),
        request.match_info["code"],
        filters,
        items=items,
        page_size=_int_param(request, "page_size", low=1, high=100),
        page_token=_text_param(request, "page_token", 200),
    )
    body: dict[str, Any] = {
        "metadata": {
            "resource_code": request.match_info["code"],
            "dataset": answer.dataset_iri,
            "version": answer.version,
            "source": answer.source,
            "acquired_at": answer.acquired_at.ToJsonString(),
            "obtained_at": _now(),
            "cite": (
                f"数据来源：{answer.source}；数据集 {answer.dataset_iri}，第 {answer.version} 版；"
                f"获取日期：{answer.acquired_at.ToDatetime():%Y-%m-%d}"
            ),
        },
        "rows": [{"row": r.row, "values": dict(r.values)} for r in answer.rows],
        "scanned": answer.scanned,
        "next_page_token": answer.next_page_token,
    }
    if answer.next_page_token:
        query = dict(request.query)
        query["page_token"] = answer.next_page_token
        body["next"] = str(request.url.with_query(query).relative())
    response = _json(body)
    response.headers["Link"] = f'<{answer.dataset_iri}>; rel="cite-as"'
    return response


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise HttpRefusal(415, "send application/json")
    try:
        body = json.loads(await request.text())
    except (ValueError, UnicodeDecodeError):
        raise HttpRefusal(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HttpRefusal(400, "the body is a JSON object")
    return body


def _field(body: dict[str, Any], name: str, limit: int, *, required: bool = False) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise HttpRefusal(400, f"{name}: text")
    if len(value) > limit:
        raise HttpRefusal(400, f"{name}: at most {limit} characters")
    if required and not value:
        raise HttpRefusal(400, f"{name}: required")
    return value


def application_request(body: dict[str, Any]) -> opendata_pb2.ApplyOpenAccessRequest:
    """An application from the form or the JSON API; the node checks eligibility (第三十二条)."""
    entity_type = _field(body, "entity_type", 40, required=True)
    use = _field(body, "use", 40, required=True)
    if entity_type not in ENTITY_TYPES:
        raise HttpRefusal(400, f"entity_type: one of {', '.join(ENTITY_TYPES)}")
    if use not in USES:
        raise HttpRefusal(400, f"use: one of {', '.join(USES)}")
    declared = body.get("domestic_control_declared", False)
    if declared in ("on", "true", "1"):
        declared = True
    if declared in ("", "false", "0"):
        declared = False
    if not isinstance(declared, bool):
        raise HttpRefusal(400, "domestic_control_declared: true or false")
    return opendata_pb2.ApplyOpenAccessRequest(
        resource_code=_field(body, "resource_code", 20, required=True),
        entity_type=ENTITY_TYPES[entity_type][0],
        entity_code=_field(body, "entity_code", 40, required=True),
        entity_name=_field(body, "entity_name", 200, required=True),
        use=USES[use][0],
        purpose=_field(body, "purpose", 2000, required=True),
        domestic_control_declared=declared,
        evidence_reference=_field(body, "evidence_reference", 500),
        contact=_field(body, "contact", 200),
        request_id=_field(body, "request_id", 64) or str(uuid.uuid4()),
    )


async def apply(request: web.Request) -> web.Response:
    portal = portal_of(request)
    application = await portal.node.apply(
        caller_of(request, with_key=False), application_request(await _json_body(request))
    )
    return _json(application_view(application), status=201)


async def get_application(request: web.Request) -> web.Response:
    portal = portal_of(request)
    application = await portal.node.application(
        caller_of(request, with_key=False), request.match_info["id"][:100]
    )
    return _json(application_view(application))


async def file_use_report(request: web.Request) -> web.Response:
    """A key holder's periodic report (第三十五条), authenticated by the key in the header."""
    portal = portal_of(request)
    caller = caller_of(request)
    if not caller.key:
        raise HttpRefusal(401, "a use report is filed with the key it is about, in X-API-Key")
    body = await _json_body(request)
    period = body.get("period", 0)
    if not isinstance(period, int) or isinstance(period, bool) or not 0 <= period <= 10_000:
        raise HttpRefusal(400, "period: a whole number from 0 (the earliest one due)")
    report = await portal.node.file_use_report(
        caller,
        key=caller.key,
        period=period,
        text=_field(body, "text", 20_000, required=True),
        request_id=_field(body, "request_id", 64) or str(uuid.uuid4()),
    )
    return _json(use_report_view(report), status=201)


async def check_receipt(request: web.Request) -> web.Response:
    """Checks a download receipt offline against the province root: the body is the receipt
    (as the Govnode-Receipt header or the receipt file carries it); ``?sha256=&size=`` of a file
    check that the file is the one it describes."""
    portal = portal_of(request)
    raw = await request.read()
    receipt = decode_receipt(raw)
    sha256 = request.query.get("sha256") or None
    size_raw = request.query.get("size") or None
    if (sha256 is None) != (size_raw is None):
        raise HttpRefusal(400, "sha256 and size: give both (of the file) or neither")
    if sha256 is not None and not _SHA256_RE.match(sha256):
        raise HttpRefusal(400, "sha256: 64 lower-case hexadecimal digits")
    if size_raw is not None and (not size_raw.isdigit() or len(size_raw) > 19):
        raise HttpRefusal(400, "size: a whole number of bytes")
    from portal.app import ReceiptRefused

    try:
        stated = portal.check_receipt(
            receipt, sha256=sha256, size=None if size_raw is None else int(size_raw)
        )
    except ReceiptRefused as exc:
        return _json({"valid": False, "check": exc.check, "problem": exc.message}, status=422)
    return _json({"valid": True, "receipt": dict(stated)})


def decode_receipt(raw: bytes) -> bytes:
    """A receipt as sent: its JSON, or the base64url of the Govnode-Receipt header."""
    text = raw.strip()
    if text.startswith(b"{"):
        return text
    try:
        padded = text + b"=" * (-len(text) % 4)
        return base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        raise HttpRefusal(400, "the body is a receipt: its JSON or its base64url") from None


async def catalog_document(request: web.Request) -> web.Response:
    portal = portal_of(request)
    fmt = request.match_info["fmt"]
    answer = await portal.node.catalog_document(
        caller_of(request, with_key=False),
        fmt,
        _int_param(request, "page", low=1, high=1_000_000),
        _int_param(request, "page_size", low=1, high=200),
    )
    return web.Response(body=answer.document, content_type=answer.media_type, charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    return _json(openapi_document(portal_of(request).base_url))


async def healthz(request: web.Request) -> web.Response:
    """200 when the node answers SERVING, else 503 (for load balancers)."""
    serving = await portal_of(request).node.serving()
    return _json({"node": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/datasets", list_datasets)
    app.router.add_get("/api/v1/datasets/{code}", get_dataset)
    app.router.add_get("/api/v1/datasets/{code}/rows", query_rows)
    app.router.add_post("/api/v1/applications", apply)
    app.router.add_get("/api/v1/applications/{id}", get_application)
    app.router.add_post("/api/v1/use-reports", file_use_report)
    app.router.add_post("/api/v1/receipts/check", check_receipt)
    app.router.add_get("/catalog.{fmt:jsonld|ttl}", catalog_document)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
