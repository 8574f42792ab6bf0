"""The audit records of the CLI's desk actions: what the data management authority decides at
the command line (an application approved, a grant revoked, a change request reviewed, an error
report resolved) is in the node's audit log, as the same decision made over gRPC or at the
console is (第三十九条).

A record names the node's authority as the caller (the CLI runs on the node, with its
config), the method ``cli:<command>`` (``cli:access/approve``), the outcome (``OK`` or the
refusal's status code), and ``auth="cli"`` with what was asked in its detail. The record is
durable before the command prints its result, and written whether the service layer agreed or
refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gateway.audit import MAX_DETAIL_CHARS, cut
from gateway.identity import Identity
from node.audit import AuditEntry, AuditLog, Operation, request_digest
from node.errors import DomainError

T = TypeVar("T")

AUTH = "cli"
#: Prefix of every CLI method name in the audit log.
METHOD_PREFIX = "cli:"


@dataclass(frozen=True)
class Action:
    """One desk action as the audit log names it."""

    name: str  # "access/approve"
    operation: Operation = Operation.MAINTAIN
    resource_code: str = ""
    detail: Mapping[str, str | int] = field(default_factory=dict)


class Auditor:
    """Runs service-layer calls for ``actor`` and audits each in ``audit`` (started)."""

    def __init__(self, audit: AuditLog, actor: Identity) -> None:
        self._audit = audit
        self._actor = actor

    async def __call__(self, action: Action, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` and write one audit record of it, durably, before returning or
        raising."""
        asked = {key: cut(str(v), MAX_DETAIL_CHARS) for key, v in action.detail.items()}
        outcome, message = "OK", ""
        try:
            return await call()
        except DomainError as exc:
            # Here, not at the top: node.servicers is the whole gRPC service layer, which
            # a command would otherwise import to print its help.
            from node.servicers.status import status_for

            outcome, message = status_for(exc).name, exc.message
            raise
        except Exception as exc:
            outcome, message = "INTERNAL", type(exc).__name__
            raise
        finally:
            await self._audit.append(
                AuditEntry(
                    caller=self._actor.uri,
                    method=METHOD_PREFIX + action.name,
                    operation=action.operation,
                    outcome=outcome,
                    message=message,
                    request_digest=request_digest(repr(sorted(asked.items())).encode()),
                    request_id=str(uuid.uuid4()),
                    resource_code=action.resource_code,
                    detail={"auth": AUTH, **asked},
                )
            )
