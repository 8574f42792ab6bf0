"""The audited-action helper: every change an operator makes at the console goes through
:func:`audited`.

It checks the operator's role (the same check the templates use to hide the button), runs the
service-layer call, the same function the gRPC servicer or the CLI calls, and writes one audit
record through the node's AuditLog before the response leaves, as the gRPC guard does:

- ``caller``: the operator's SPIFFE URI (``spiffe://350000.fujian.gov.cn/operator/security.li``);
- ``method``: a stable name, ``console:/certificates/revoke``;
- ``outcome``: ``OK``, or the refusal's code (PERMISSION_DENIED for a role that may not,
  INVALID_ARGUMENT, NOT_FOUND... for what the service layer refused);
- ``detail``: ``auth="console-mtls"`` and what the handler adds (the serial revoked...).

So a console action shows in ``govnode audit tail`` beside the gRPC calls, and a refused one
too. A refusal of the service layer becomes a :class:`ConsoleRefusal` with its message.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from aiohttp import web

from gateway.audit import MAX_DETAIL_CHARS, cut
from gateway.identity import ConsoleRole
from node.audit import AuditEntry, Operation, request_digest
from node.console._identity import REQUEST_ID, ConsoleRefusal, operator_of, refusal_for
from node.console._state import state_of
from node.errors import DomainError
from node.servicers.status import status_for

T = TypeVar("T")

AUTH = "console-mtls"
#: Prefix of every console method name in the audit log.
METHOD_PREFIX = "console:"


async def audited(
    request: web.Request,
    action: str,
    role: ConsoleRole,
    call: Callable[[], Awaitable[T]],
    *,
    resource_code: str = "",
    detail: Mapping[str, str | int] | None = None,
    operation: Operation = Operation.MAINTAIN,
) -> T:
    """Run ``call`` for this request's operator if their role is ``role``, and audit it
    (durably, before returning or raising). ``action`` is the path-like name, e.g.
    ``/certificates/revoke``; ``detail`` describes what was asked (no secrets)."""
    operator = operator_of(request)
    method = METHOD_PREFIX + action
    asked = {key: cut(str(v), MAX_DETAIL_CHARS) for key, v in (detail or {}).items()}
    refusal = refusal_for(operator, role)
    outcome, message = "OK", ""
    try:
        if refusal is not None:
            raise refusal
        try:
            return await call()
        except DomainError as exc:
            code = status_for(exc).name
            raise ConsoleRefusal(http_status(code), exc.message, code) from None
    except ConsoleRefusal as exc:
        outcome, message = exc.code, exc.message
        raise
    except Exception as exc:
        outcome, message = "INTERNAL", type(exc).__name__
        raise
    finally:
        await state_of(request).audit.append(
            AuditEntry(
                caller=operator.uri,
                method=method,
                operation=operation,
                outcome=outcome,
                message=message,
                request_digest=request_digest(repr(sorted(asked.items())).encode()),
                request_id=request.get(REQUEST_ID) or str(uuid.uuid4()),
                resource_code=resource_code,
                detail={"auth": AUTH, "role": operator.role.value, **asked},
            )
        )


def http_status(code: str) -> int:
    """The HTTP status of a gRPC status code's name, for the console's error pages."""
    return {
        "INVALID_ARGUMENT": 400,
        "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409,
        "FAILED_PRECONDITION": 409,
        "ABORTED": 409,
        "PERMISSION_DENIED": 403,
        "UNAUTHENTICATED": 403,
        "RESOURCE_EXHAUSTED": 429,
        "UNAVAILABLE": 503,
    }.get(code, 500)
