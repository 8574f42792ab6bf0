"""The human pages, in Chinese: the catalog with search, a dataset's page (metadata,
provenance, download links, a preview), the 授权开放 application form and its status, the use
report form, and the receipt check. Forms post back to the portal, which calls the same node
RPCs as the JSON API; no page needs JavaScript. Templates autoescape everything."""

from __future__ import annotations

import datetime as dt
import uuid
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web
from govnode.v1 import opendata_pb2

from portal.api import application_request, decode_receipt
from portal.app import HttpRefusal, ReceiptRefused, caller_of, portal_of
from portal.node import Caller, NodeRefusal
from portal.views import (
    ENTITY_TYPES,
    OPEN_TYPE_NAMES,
    USES,
    api_path,
    application_view,
    dataset_path,
    dataset_view,
    use_report_view,
)

SITE = "政务数据开放平台"
PREVIEW_ROWS = 10
MAX_FORM_FIELD = 60_000
_HEADINGS = {
    400: "请求有误",
    401: "需要密钥",
    403: "无权访问",
    404: "未找到",
    409: "暂不能办理",
    413: "请求过大",
    414: "请求过长",
    416: "范围无效",
    429: "请求过于频繁",
    503: "服务暂不可用",
    504: "服务暂不可用",
}

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("portal", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_CSS = (resources.files("portal") / "static" / "portal.css").read_bytes()
_CST = dt.timezone(dt.timedelta(hours=8))


def render(name: str, status: int = 200, **values: Any) -> web.Response:
    text = _ENV.get_template(name).render(site=SITE, status=status, **values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    heading = _HEADINGS.get(status, "出错了")
    return render("error.html", status=status, code=status, heading=heading, message=message)


async def catalog(request: web.Request) -> web.Response:
    portal = portal_of(request)
    q = request.query.get("q", "")[:100]
    open_type = request.query.get("open_type", "")
    if open_type not in ("", *OPEN_TYPE_NAMES):
        open_type = ""
    token = request.query.get("page_token", "")[:200]
    answer = await portal.node.list_resources(
        caller_of(request, with_key=False),
        query=q,
        open_type=OPEN_TYPE_NAMES.get(open_type, 0),
        page_size=20,
        page_token=token,
    )
    datasets = []
    for resource in answer.resources:
        view = dataset_view(resource, portal.base_url)
        view["page_path"] = dataset_path(resource.entry.resource_code)
        datasets.append(view)
    next_url = ""
    if answer.next_page_token:
        query = {"q": q, "open_type": open_type, "page_token": answer.next_page_token}
        next_url = str(request.url.with_query({k: v for k, v in query.items() if v}).relative())
    return render("catalog.html", datasets=datasets, q=q, open_type=open_type, next=next_url)


async def dataset(request: web.Request) -> web.Response:
    portal = portal_of(request)
    caller = caller_of(request, with_key=False)
    code = request.match_info["code"]
    resource = await portal.node.get_resource(caller, code)
    view = dataset_view(resource, portal.base_url)
    preview: list[dict[str, str]] = []
    if not view["needs_key"]:
        try:
            rows = await portal.node.rows(caller, code, [], page_size=PREVIEW_ROWS)
            preview = [dict(r.values) for r in rows.rows]
        except NodeRefusal as exc:
            if exc.http_status == 429:
                raise
    acquired = resource.acquired_at.ToDatetime(tzinfo=dt.UTC).astimezone(_CST)
    return render(
        "dataset.html",
        d=view,
        api=api_path(code),
        preview=preview,
        acquired=f"{acquired:%Y-%m-%d %H:%M}（北京时间）",
    )


async def _form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    form: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(value, str):
            raise HttpRefusal(400, f"{name[:40]}: 表单不接受文件")
        if len(value) > MAX_FORM_FIELD:
            raise HttpRefusal(400, f"{name[:40]}: 过长")
        form[name] = value
    return form


def _apply_page(form: dict[str, str], error: str = "", status: int = 200) -> web.Response:
    return render(
        "apply.html",
        status=status,
        form=form,
        error=error,
        entity_types=[(name, label) for name, (_, label) in ENTITY_TYPES.items()],
        uses=[(name, label) for name, (_, label) in USES.items()],
    )


_EMPTY_FORM = {
    "resource_code": "",
    "entity_type": "university",
    "entity_code": "",
    "entity_name": "",
    "use": "research",
    "purpose": "",
    "domestic_control_declared": "",
    "evidence_reference": "",
    "contact": "",
}


async def apply_form(request: web.Request) -> web.Response:
    form = dict(_EMPTY_FORM, request_id=str(uuid.uuid4()))
    form["resource_code"] = request.query.get("resource_code", "")[:20]
    return _apply_page(form)


async def apply_submit(request: web.Request) -> web.Response:
    portal = portal_of(request)
    form = dict(_EMPTY_FORM, request_id="")
    form.update(await _form(request))
    try:
        application = await portal.node.apply(
            caller_of(request, with_key=False), application_request(dict(form))
        )
    except (NodeRefusal, HttpRefusal) as exc:
        if isinstance(exc, NodeRefusal) and exc.http_status in (429, 502, 503, 504):
            raise
        status = exc.http_status if isinstance(exc, NodeRefusal) else exc.status
        return _apply_page(form, error=f"申请未受理：{exc.message}", status=status)
    return render("application.html", status=201, a=application_view(application), created=True)


async def application(request: web.Request) -> web.Response:
    portal = portal_of(request)
    found = await portal.node.application(
        caller_of(request, with_key=False), request.match_info["id"][:100]
    )
    return render("application.html", a=application_view(found), created=False)


async def use_report_form(request: web.Request) -> web.Response:
    return render("use_reports.html", error="", report=None, request_id=str(uuid.uuid4()))


async def use_report_submit(request: web.Request) -> web.Response:
    portal = portal_of(request)
    form = await _form(request)
    key = form.get("key", "").strip()
    period_raw = form.get("period", "").strip()
    retry = str(uuid.uuid4())
    if not key or len(key) > 200:
        return render("use_reports.html", 400, error="请填写密钥", report=None, request_id=retry)
    if period_raw and (not period_raw.isdigit() or len(period_raw) > 5):
        return render("use_reports.html", 400, error="报告期为整数", report=None, request_id=retry)
    try:
        report: opendata_pb2.UseReport = await portal.node.file_use_report(
            Caller(caller_of(request, with_key=False).address, key),
            key=key,
            period=int(period_raw or 0),
            text=form.get("text", "")[:20_000],
            request_id=form.get("request_id", "")[:64] or retry,
        )
    except NodeRefusal as exc:
        if exc.http_status in (429, 502, 503, 504):
            raise
        return render(
            "use_reports.html",
            exc.http_status,
            error=f"未能报送：{exc.message}",
            report=None,
            request_id=retry,
        )
    return render(
        "use_reports.html", 201, error="", report=use_report_view(report), request_id=retry
    )


async def receipts_form(request: web.Request) -> web.Response:
    return render("receipts.html", result=None, error="")


async def receipts_submit(request: web.Request) -> web.Response:
    portal = portal_of(request)
    form = await _form(request)
    sha256 = form.get("sha256", "").strip().lower() or None
    size_raw = form.get("size", "").strip() or None
    if (sha256 is None) != (size_raw is None) or (
        size_raw is not None and (not size_raw.isdigit() or len(size_raw) > 19)
    ):
        return render(
            "receipts.html", 400, result=None, error="文件的 SHA-256 和大小须同时填写（大小为整数）"
        )
    try:
        receipt = decode_receipt(form.get("receipt", "").encode())
        stated = portal.check_receipt(
            receipt, sha256=sha256, size=None if size_raw is None else int(size_raw)
        )
    except HttpRefusal as exc:
        return render("receipts.html", 400, result=None, error=exc.message)
    except ReceiptRefused as exc:
        result = {"valid": False, "check": exc.check, "problem": exc.message}
        return render("receipts.html", 422, result=result, error="")
    return render("receipts.html", result={"valid": True, "receipt": dict(stated)}, error="")


async def legislation(request: web.Request) -> web.Response:
    return render("legislation.html")


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(body=_CSS, content_type="text/css", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", catalog)
    app.router.add_get("/dataset/{code}", dataset)
    app.router.add_get("/apply", apply_form)
    app.router.add_post("/apply", apply_submit)
    app.router.add_get("/applications/{id}", application)
    app.router.add_get("/use-reports", use_report_form)
    app.router.add_post("/use-reports", use_report_submit)
    app.router.add_get("/receipts", receipts_form)
    app.router.add_post("/receipts", receipts_submit)
    app.router.add_get("/legislation/fujian-government-data-measures", legislation)
    app.router.add_get("/static/portal.css", stylesheet)
