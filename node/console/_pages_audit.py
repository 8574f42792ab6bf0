"""The audit log (第三十九条): search with filters, newest first and keyset-paged by sequence
(the log is large: each page is one indexed range scan); a record's detail with its inclusion
proof against the newest checkpoint the node signed (checked on the page), and, once a
witness has cosigned one that covers it, the proof file (node.audit.prove_record, what
``govnode audit prove`` writes, checked here as ``govnode audit check-proof`` checks it);
and verification of the hash chain over a bounded range (``govnode audit verify`` checks it
whole, from the command line)."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway.quote import quote
from node.audit import (
    AuditRecord,
    CannotProve,
    ChainCheck,
    ProofFileError,
    RecordsPruned,
    check_proof_file,
    prove_record,
    record_leaf,
)
from node.console._identity import ConsoleRefusal
from node.console._params import number, page_size, text
from node.console._render import CST, render
from node.console._state import ConsoleState, state_of
from node.errors import InvalidArgument
from node.tlog import ProofError, verify_inclusion

#: The most records one chain verification request checks (a few hundred milliseconds of
#: database reads, in pages, each yielding the loop).
MAX_VERIFY = 10_000
DEFAULT_VERIFY = 1_000
#: Sequences one filtered search reads at most (about 60 ms on SQLite for a filter that matches
#: nothing; the next page goes on below).
SCAN_WINDOW = 100_000
#: Records verified per step: the hashing of one step runs on the event loop between reads.
VERIFY_STEP = 250
FILTERS = ("method", "caller", "outcome", "request_id", "since", "until")


def _moment(value: str, name: str) -> dt.datetime | None:
    """A filter time: ISO 8601 as a datetime-local field sends it (read as 北京时间), or with
    an offset."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConsoleRefusal(
            400, f"参数 {name} 不是有效时间：{quote(value, 40)}", "INVALID_ARGUMENT"
        ) from None
    return moment.replace(tzinfo=CST) if moment.tzinfo is None else moment


async def audit(request: web.Request) -> web.Response:
    """A page of records, newest first. With a filter, one request reads at most
    :data:`SCAN_WINDOW` sequences (a filter that matches rarely does not read the whole log
    at once); the page then says which range it searched and goes on below it."""
    state = state_of(request)
    query = request.query
    values = {name: text(query, name, max_chars=300).strip() for name in FILTERS}
    size = page_size(query)
    before = number(query, "before", default=0, low=0)
    since = _moment(values["since"], "since")
    until = _moment(values["until"], "until")
    head = (await state.audit.head())[0]
    upper = min(before, head + 1) if before else head + 1
    filtered = any(values.values())
    lower = max(0, upper - 1 - SCAN_WINDOW) if filtered else None
    rows = await state.audit.newest_first(
        before_sequence=upper,
        after_sequence=lower,
        limit=size + 1,
        method=values["method"] or None,
        caller=values["caller"] or None,
        outcome=values["outcome"] or None,
        request_id=values["request_id"] or None,
        since=since,
        until=until,
    )
    more = len(rows) > size
    rows = rows[:size]
    kept = {k: v for k, v in values.items() if v}
    next_before = 0
    if more:
        next_before = rows[-1].sequence
    elif lower:
        next_before = lower + 1  # nothing more in this window: search the one below it
    next_url = ""
    if next_before:
        next_url = "/audit?" + urlencode({**kept, "page_size": size, "before": next_before})
    first_url = "/audit?" + urlencode(kept) if kept else "/audit"
    searched = ""
    if lower is not None and not more:
        searched = f"已查找 #{lower + 1} 至 #{upper - 1}"
    return await render(
        request,
        "audit.html",
        rows=rows,
        filters=values,
        next_url=next_url,
        first_url=first_url if before else "",
        total=head,
        searched=searched,
    )


async def _proof(state: ConsoleState, sequence: int) -> tuple[bytes | None, str]:
    """The record's proof file and what checking it showed, or None and why there is none."""
    services = state.services
    if services.checkpoints is None or services.witness_rule is None or services.root is None:
        return None, "本节点未启用检查点"
    try:
        rule = await services.witness_rule()
        data = await prove_record(
            services.db, state.audit, services.checkpoints, sequence, services.chain_pem, rule
        )
    except CannotProve as exc:
        return None, f"暂无包含证明：{exc}"
    except RecordsPruned as exc:
        return None, f"记录已归档清理：{exc.message}"
    try:
        checked = check_proof_file(data, services.root, state.config.node.trust_domain)
    except ProofFileError as exc:
        return data, f"证明无效：{exc}"
    witnesses = "、".join(w for w, _ in checked.cosigned_by) or "无（本节点无见证要求）"
    return data, (
        f"证明有效：记录 #{checked.sequence} 在 {checked.origin} 的 {checked.size} 条记录中，"
        f"由 {checked.log_identity} 签名，见证：{witnesses}"
    )


@dataclass(frozen=True)
class Inclusion:
    """Record ``sequence`` in the tree the newest signed checkpoint commits to."""

    ok: bool
    message: str
    size: int = 0
    made_at: dt.datetime | None = None
    root: str = ""
    proof: tuple[str, ...] = ()


async def _inclusion(state: ConsoleState, record: AuditRecord) -> Inclusion:
    """The record's inclusion proof against the newest signed checkpoint, checked here
    (RFC 9162 §2.1.3.2) from the record's own chain hash to the checkpoint's root."""
    checkpoints = state.services.checkpoints
    newest = await checkpoints.newest() if checkpoints is not None else None
    if newest is None or newest.size < record.sequence:
        covered = 0 if newest is None else newest.size
        return Inclusion(
            False,
            f"尚无覆盖记录 #{record.sequence} 的检查点（最新检查点 {covered} 条；每 "
            f"{state.config.audit.checkpoint_seconds:g} 秒签署一次）",
        )
    try:
        _, proof = await state.audit.inclusion_proof(record.sequence, newest.size)
        verify_inclusion(
            record_leaf(record.hash), record.sequence - 1, newest.size, proof, newest.root
        )
    except RecordsPruned as exc:
        return Inclusion(False, f"记录已归档清理：{exc.message}")
    except (ProofError, InvalidArgument) as exc:
        return Inclusion(False, f"包含证明验证失败：{exc}")
    return Inclusion(
        True,
        f"包含证明验证通过：记录 #{record.sequence} 在节点签署的 {newest.size} 条记录的检查点中",
        newest.size,
        newest.made_at,
        newest.root.hex(),
        tuple(h.hex() for h in proof),
    )


async def _record(state: ConsoleState, request: web.Request) -> AuditRecord:
    raw = request.match_info["sequence"]
    if not raw.isdigit() or len(raw) > 18:
        raise ConsoleRefusal(400, f"序号应为正整数，收到 {quote(raw, 20)}", "INVALID_ARGUMENT")
    record = await state.audit.record(int(raw))
    if record is None:
        raise ConsoleRefusal(404, f"审计日志中没有记录 #{int(raw)}", "NOT_FOUND")
    return record


async def record_page(request: web.Request) -> web.Response:
    state = state_of(request)
    record = await _record(state, request)
    data, proof_status = await _proof(state, record.sequence)
    return await render(
        request,
        "audit_record.html",
        record=record,
        fields=_fields(record),
        inclusion=await _inclusion(state, record),
        proof=data.decode("utf-8", errors="replace") if data is not None else "",
        proof_ok=data is not None and proof_status.startswith("证明有效"),
        proof_status=proof_status,
    )


async def proof_download(request: web.Request) -> web.Response:
    state = state_of(request)
    record = await _record(state, request)
    data, status = await _proof(state, record.sequence)
    if data is None:
        raise ConsoleRefusal(409, status, "FAILED_PRECONDITION")
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="audit-{record.sequence}.tlog-proof"'
        },
    )


def _fields(record: AuditRecord) -> list[tuple[str, Any]]:
    return [
        ("序号", record.sequence),
        ("时间", record.at),
        ("调用方", record.caller),
        ("来源节点", record.origin_node or "—"),
        ("方法", record.method),
        ("操作", f"{record.operation.term}（{record.operation.value}）"),
        ("资源", record.resource_code or "—"),
        ("结果", record.outcome),
        ("说明", record.message or "—"),
        ("请求 ID", record.request_id),
        ("请求摘要", record.request_digest),
        ("前一哈希", record.prev_hash),
        ("本条哈希", record.hash),
    ]


async def verify(request: web.Request) -> web.Response:
    """Verify the chain over ``count`` records after ``after`` (bounded; the page offers the
    next range, so a long log is verified range by range with its progress shown)."""
    state = state_of(request)
    query = request.query
    ran = "after" in query
    after = number(query, "after", default=0, low=0)
    count = number(query, "count", default=DEFAULT_VERIFY, low=1, high=MAX_VERIFY)
    total = (await state.audit.head())[0]
    check = None
    if ran:
        check = await _verify(state, after, count)
    return await render(
        request,
        "audit_verify.html",
        check=check,
        after=after,
        count=count,
        total=total,
        max_verify=MAX_VERIFY,
    )


async def _verify(state: ConsoleState, after: int, count: int) -> ChainCheck:
    """AuditLog.verify_chain over ``count`` records after ``after``, in steps of
    :data:`VERIFY_STEP` (each step trusts the hash the previous one checked), so the node's
    calls are served between them."""
    checked, position = 0, after
    while checked < count:
        step = await state.audit.verify_chain(
            after=position, limit=min(VERIFY_STEP, count - checked)
        )
        checked += step.checked
        if not step.ok:
            return ChainCheck(False, checked, step.first_bad_sequence, step.reason, after=after)
        if step.checked == 0:
            break
        position += step.checked
        await asyncio.sleep(0)
    return ChainCheck(True, checked, after=after)


def routes(table: web.RouteTableDef) -> None:
    table.get("/audit")(audit)
    table.get("/audit/verify")(verify)
    table.get("/audit/record/{sequence}")(record_page)
    table.get("/audit/record/{sequence}/proof")(proof_download)
