"""Agencies and certificates: the certificates this node's CA issued (soonest expiry first,
paged, with warnings 30 days ahead), issuing an agency's or an operator's certificate, and
revoking one.

Issuing is what ``govnode agency add`` and ``govnode certs issue-operator`` do (the same
node.pki functions), made in memory: the bundle (a zip for an agency system, a PKCS#12 file
for an operator's browser) is the response, handed over once; the node keeps no copy of the
key, only the certificate's record. Revoking is the call ``govnode certs revoke`` makes
(node.pki.Revocations.revoke): the gRPC guard refuses the certificate from its next call on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from urllib.parse import quote as url_quote

from aiohttp import web

from gateway.identity import ConsoleRole, Role
from node.console._actions import audited
from node.console._identity import ConsoleRefusal, operator_of
from node.console._params import number, page_size, text
from node.console._render import render
from node.console._state import ConsoleState, state_of
from node.errors import InvalidArgument
from node.pki import (
    REASONS,
    IssuedCertificate,
    IssuedCertificates,
    ProvisionError,
    client_bundle_zip,
    make_client,
    normalise_serial,
    parse_cursor,
    pkcs12_bytes,
)

KINDS = ("agency", "operator", "tester", "portal", "authority")
MAX_DAYS = 825


def _issued(state: ConsoleState) -> IssuedCertificates:
    return IssuedCertificates(state.services.db)


async def certificates(request: web.Request) -> web.Response:
    state = state_of(request)
    query = request.query
    kind = text(query, "kind", max_chars=16)
    if kind and kind not in KINDS:
        raise ConsoleRefusal(400, f"参数 kind 应为 {'、'.join(KINDS)} 之一", "INVALID_ARGUMENT")
    after_text = text(query, "after", max_chars=120)
    after = parse_cursor(after_text) if after_text else None
    if after_text and after is None:
        raise ConsoleRefusal(400, "参数 after 不是有效的分页位置", "INVALID_ARGUMENT")
    size = page_size(query)
    rows = await _issued(state).page(after=after, limit=size + 1, kind=kind or None)
    more = len(rows) > size
    rows = rows[:size]
    now = dt.datetime.now(dt.UTC)
    warn_days = state.config.console.expiry_warning_days
    next_url = ""
    if more:
        next_url = f"/certificates?page_size={size}&after={url_quote(rows[-1].cursor)}"
        if kind:
            next_url += f"&kind={kind}"
    return await render(
        request,
        "certificates.html",
        rows=[(row, _state(row, now, warn_days)) for row in rows],
        kinds=KINDS,
        kind=kind,
        next_url=next_url,
        first_page=after is None,
        reasons=REASONS,
        warn_days=warn_days,
        region=state.config.node.region,
    )


def _state(row: IssuedCertificate, now: dt.datetime, warn_days: int) -> str:
    if row.revoked is not None:
        return "revoked"
    if row.not_after <= now:
        return "expired"
    if row.expires_within(warn_days, now):
        return "expiring"
    return "valid"


async def revoke(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    form = await request.post()
    serial_text = str(form.get("serial", ""))[:80]
    reason = str(form.get("reason", "unspecified"))[:40]
    operator = operator_of(request)

    async def call() -> None:
        serial = normalise_serial(serial_text)
        if len(serial) > 64:
            raise InvalidArgument("序列号至多 64 个十六进制数字")
        record = await _issued(state).get(serial)
        await state.revocations.revoke(
            serial_hex=serial,
            identity=record.identity if record is not None else "",
            issuer_region=state.config.node.region,
            reason=reason,
            revoked_by=operator.uri,
        )

    await audited(
        request,
        "/certificates/revoke",
        ConsoleRole.SECURITY,
        call,
        detail={"serial": serial_text, "reason": reason},
    )
    raise web.HTTPSeeOther("/certificates")


def _days(form_value: object) -> int:
    return number({"days": str(form_value or "")[:20]}, "days", default=365, low=1, high=MAX_DAYS)


async def issue(request: web.Request) -> web.StreamResponse:
    """Issue an agency's (zip) or an operator's (PKCS#12) certificate, returned as a download
    once."""
    state = state_of(request)
    form = await request.post()
    kind = str(form.get("kind", ""))[:16]
    subject_text = str(form.get("subject", ""))[:100]
    label = str(form.get("name", ""))[:100]
    role_text = str(form.get("role", ""))[:16]
    password = str(form.get("password", ""))[:200]
    days = _days(form.get("days"))
    config = state.config
    operator = operator_of(request)

    async def call() -> tuple[bytes, str, str]:
        if kind == "agency":
            role, subject = Role.AGENCY, subject_text
            name = label or subject_text
        elif kind == "operator":
            if role_text not in ConsoleRole.__members__.values():
                raise InvalidArgument(f"角色应为 {'、'.join(ConsoleRole)} 之一")
            role, subject = Role.OPERATOR, f"{role_text}.{subject_text}"
            name = f"{config.node.name} 控制台运维人员 {subject_text}"
        else:
            raise InvalidArgument("kind 应为 agency 或 operator")
        try:
            # Key generation and signing: a few milliseconds, off the loop all the same.
            keypair, ca, root = await asyncio.to_thread(
                make_client, config, role=role, subject=subject, name=name, days=days
            )
        except (ProvisionError, ValueError) as exc:
            raise InvalidArgument(str(exc)) from None
        await _issued(state).record(keypair.cert, issued_by=operator.uri)
        serial = format(keypair.cert.serial_number, "x")
        if role is Role.AGENCY:
            data = await asyncio.to_thread(client_bundle_zip, keypair, [ca], root)
            return data, f"agency-{subject}-{serial[:8]}.zip", "application/zip"
        # The key's encryption derives from the password (PBKDF2): off the loop too.
        data = await asyncio.to_thread(pkcs12_bytes, keypair, [ca], name=subject, password=password)
        return data, f"operator-{subject}-{serial[:8]}.p12", "application/x-pkcs12"

    data, filename, content_type = await audited(
        request,
        "/certificates/issue",
        ConsoleRole.SECURITY,
        call,
        detail={"kind": kind, "subject": subject_text, "issued_role": role_text, "days": days},
    )
    return web.Response(
        body=data,
        content_type=content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


def routes(table: web.RouteTableDef) -> None:
    table.get("/certificates")(certificates)
    table.post("/certificates/revoke")(revoke)
    table.post("/certificates/issue")(issue)
