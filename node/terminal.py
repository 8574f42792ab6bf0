"""What the edges of node show an operator in a terminal: a node and its peers (``govnode status``
and the demo), audit records (``govnode audit`` and the demo), and text from a caller made safe
to print. Both the cli and the demo use these and neither may import the other."""

from __future__ import annotations

import datetime as dt
import unicodedata

from google.protobuf.timestamp_pb2 import Timestamp
from govnode.v1 import audit_pb2, federation_pb2

from node.audit import AuditRecord
from node.times import CST

# Control characters a caller could smuggle into a record (its presented identity, a message
# quoting its input) must not drive the operator's terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def safe_text(text: str) -> str:
    """``text`` with control characters shown as escapes, safe to print on a terminal."""
    return text.translate(_CONTROLS)


def format_record(record: AuditRecord) -> str:
    """One readable line: time (CST), sequence, outcome, operation, resource, caller, request."""
    op = record.operation
    parts = [
        f"{record.at.astimezone(CST):%Y-%m-%d %H:%M:%S} CST",
        f"#{record.sequence}",
        record.outcome,
        f"{op.term} {op.label}",
        record.resource_code or "-",
        record.caller,
    ]
    if record.origin_node:
        parts.append(f"via {record.origin_node}")
    if record.request_id:
        parts.append(f"(request {record.request_id})")
    line = "  ".join(parts)
    if record.outcome != "OK" and record.message:
        line += f"  — {record.message}"
    return safe_text(line)


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


def checkpoint_lines(
    newest: audit_pb2.GetCheckpointResponse | None,
    witnessed: audit_pb2.GetCheckpointResponse | None,
    evidence: list[tuple[str, str, dt.datetime]],
    now: dt.datetime,
) -> list[str]:
    """The audit log's evidence (第三十九条): its newest checkpoint and who cosigned it, how old
    the newest witnessed one is, and the logs this node refused to cosign as a witness."""
    if newest is None:
        return ["Audit     no checkpoint signed yet"]
    cp = newest.checkpoint
    by = ", ".join(cp.cosigned_by) or "no witness yet"
    lines = [
        f"Audit     checkpoint of {cp.size} records, signed {_cst(cp.made_at, True)}, "
        f"cosigned by {by}"
    ]
    if newest.witness_rule:
        lacks = f"; the newest lacks {newest.missing}" if newest.missing else ""
        lines.append(f"          witnessed when it has {newest.witness_rule}{lacks}")
    if witnessed is None:
        lines.append("          no witnessed checkpoint yet")
    else:
        made = witnessed.checkpoint.made_at.ToDatetime(dt.UTC)
        age = max(0, round((now - made).total_seconds()))
        lines.append(
            f"          newest witnessed: {witnessed.checkpoint.size} records, {age} s old "
            f"(cosigned by {', '.join(witnessed.checkpoint.cosigned_by)})"
        )
    for origin, kind, at in evidence:
        when = at.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S CST")
        if kind == "restarted":
            lines.append(
                f"RESTARTED {origin} at {when}: its node lost records this node had cosigned "
                "(witness_evidence)"
            )
        else:
            lines.append(
                f"REFUSED   {kind} of {origin} at {when}: evidence kept (witness_evidence)"
            )
    return lines


def restart_lines(
    restore: tuple[int, dt.datetime] | None, restarts: list[tuple[str, int, str]]
) -> list[str]:
    """A restored database still waiting for its witnesses, and each origin the log went on
    under after a restore lost records its witnesses had cosigned (第三十九条)."""
    lines = []
    if restore is not None:
        size, at = restore
        lines.append(
            f"RESTORED  from a backup of {size} records at "
            f"{at.astimezone(CST):%Y-%m-%d %H:%M:%S} CST: no checkpoint is signed until a "
            "witness says what it cosigned of this log"
        )
    for origin, first, gap in restarts:
        lines.append(f"RESTARTED this log goes on as {origin} from record #{first}: {gap}")
    return lines


def status_lines(node: federation_pb2.NodeInfo, peers: list[federation_pb2.Peer]) -> list[str]:
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
