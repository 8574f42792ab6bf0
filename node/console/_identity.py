"""Who is at the console: the operator named by the verified client certificate, and what
their console role (X-Road's model: observer, service, security, system) lets them do.

The TLS handshake has verified the chain to the province root (CERT_REQUIRED). Here, on every
request, the certificate must in addition:

- be issued directly by THIS node's region CA (an operator of another region, even a valid
  one, is no operator here), with the identity rules of :func:`gateway.identity.check_chain`;
- carry an ``operator`` identity ``spiffe://<this region>.<trust domain>/operator/<role>.<name>``;
  an agency, node, tester, portal or authority certificate is refused with 403. The data
  management authority (数据管理机构) is refused too: it is a system's credential used over
  gRPC (and by `govnode access` on the node); a person at the console uses an operator
  certificate of their own, so the audit log names the person;
- not be revoked (the node's revocation list, looked up on each request like the gRPC guard's).

:func:`requires` is the one role check: handlers call it, and templates call ``may(role)`` to
hide what the operator may not use.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.auth import RevocationCheck
from gateway.identity import (
    ConsoleRole,
    Identity,
    IdentityError,
    Role,
    check_chain,
    operator_subject,
)

__all__ = ["ConsoleRefusal", "ConsoleRole", "Operator", "Operators", "operator_of", "requires"]

_CACHE_SIZE = 256


class ConsoleRefusal(Exception):
    """A request the console refuses; ``message`` (Chinese) is shown to the operator."""

    def __init__(self, status: int, message: str, code: str = "PERMISSION_DENIED") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Operator:
    """An operator at the console, from their verified certificate."""

    identity: Identity
    role: ConsoleRole
    name: str
    serial_hex: str
    #: SHA-256 of the certificate (DER), hex: the form tokens are bound to it.
    fingerprint: str

    @property
    def uri(self) -> str:
        return self.identity.uri

    def may(self, role: ConsoleRole | str) -> bool:
        """Whether this operator may use what needs ``role`` (each role is its own: a system
        operator cannot revoke certificates, a security operator cannot switch maintenance)."""
        return self.role == ConsoleRole(role)


class Operators:
    """Turns a connection's client certificate into an :class:`Operator`, or refuses it."""

    def __init__(
        self,
        region_ca: x509.Certificate,
        *,
        region: str,
        trust_domain: str,
        is_revoked: RevocationCheck,
    ) -> None:
        self._ca = region_ca
        self._region = region
        self._trust_domain = trust_domain
        self._is_revoked = is_revoked
        self._cache: OrderedDict[bytes, Operator] = OrderedDict()

    async def operator(self, der: bytes | None) -> Operator:
        if not der:
            raise ConsoleRefusal(401, "控制台要求客户端证书（双向 TLS）", "UNAUTHENTICATED")
        operator = self._cache.get(der)
        if operator is None:
            operator = self._check(der)
            self._cache[der] = operator
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(der)
        reason = await self._is_revoked(operator.serial_hex)
        if reason is not None:
            raise ConsoleRefusal(
                403,
                f"证书 {operator.serial_hex}（{operator.uri}）已被吊销（{reason}），不能使用控制台",
                "UNAUTHENTICATED",
            )
        return operator

    def _check(self, der: bytes) -> Operator:
        try:
            leaf = x509.load_der_x509_certificate(der)
            leaf.verify_directly_issued_by(self._ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ConsoleRefusal(
                403, "此证书不是本节点的 CA 签发的，不能使用本节点的控制台"
            ) from None
        try:
            identity = check_chain([leaf, self._ca], self._trust_domain)
        except IdentityError as exc:
            raise ConsoleRefusal(403, f"证书身份无效：{exc}") from None
        if identity.role is not Role.OPERATOR:
            raise ConsoleRefusal(
                403,
                f"身份 {identity} 的角色是 {identity.role.value}，不是运维人员（operator）："
                "控制台只接受 `govnode certs issue-operator` 签发的运维人员证书",
            )
        if identity.region != self._region:
            raise ConsoleRefusal(403, f"身份 {identity} 不属于本节点的区域 {self._region}")
        role, name = operator_subject(identity.subject)
        return Operator(
            identity=identity,
            role=role,
            name=name,
            serial_hex=format(leaf.serial_number, "x"),
            fingerprint=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
        )


OPERATOR: web.RequestKey[Operator] = web.RequestKey("govnode_operator", Operator)
#: The request's id: in its audit record, and in the node log of a refusal.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("govnode_request_id", str)


def operator_of(request: web.Request) -> Operator:
    """The operator of this request (set by the identity middleware before any handler)."""
    return request[OPERATOR]


#: The Chinese names of the roles, for pages and refusals.
ROLE_NAMES = {
    ConsoleRole.OBSERVER: "观察员",
    ConsoleRole.SERVICE: "业务管理员",
    ConsoleRole.SECURITY: "安全管理员",
    ConsoleRole.SYSTEM: "系统管理员",
}


def refusal_for(operator: Operator, role: ConsoleRole) -> ConsoleRefusal | None:
    """The refusal when ``operator`` may not use what needs ``role``, else None."""
    if operator.may(role):
        return None
    return ConsoleRefusal(
        403,
        f"此操作需要{ROLE_NAMES[role]}（{role.value}）角色；{operator.name} 的角色是"
        f"{ROLE_NAMES[operator.role]}（{operator.role.value}）",
    )


def requires(request: web.Request, role: ConsoleRole) -> Operator:
    """The request's operator, or raise the 403 refusal when their role is not ``role``
    (pages that only show a form; actions go through ``_actions.audited``, which also
    audits the refusal)."""
    operator = operator_of(request)
    refusal = refusal_for(operator, role)
    if refusal is not None:
        raise refusal
    return operator
