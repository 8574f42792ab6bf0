"""Authentication of every call from the verified TLS peer.

The handshake has already verified the client's chain to the province root and applied the
CAs' name constraints. Here we check the same rules again from the chain gRPC exposes in the
auth context (leaf in ``x509_pem_cert``, intermediates in ``x509_pem_cert_chain``), then ask the
node whether the certificate is revoked. Revocation is looked up on every call, so a revoked
certificate is refused on its next call; the certificate parsing is cached per certificate.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.identity import Identity, IdentityError, check_chain


class AuthenticationError(Exception):
    """The caller could not be authenticated; the message is safe to return."""


@dataclass(frozen=True)
class Peer:
    """An authenticated caller: its identity and the certificate it used."""

    identity: Identity
    serial_hex: str
    not_after_iso: str


#: Returns a reason when the certificate with this serial is revoked, None otherwise.
RevocationCheck = Callable[[str], Awaitable[str | None]]

_current_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar(
    "govnode_peer", default=None
)


def current_peer() -> Peer:
    """The authenticated caller of the RPC being served (set by the guard interceptor)."""
    peer = _current_peer.get()
    if peer is None:
        raise RuntimeError("no authenticated peer in this context")
    return peer


@dataclass(frozen=True)
class Forwarded:
    """How a forwarded call reached this node: the node that forwarded it (the TLS peer), the
    node that first accepted it (the assertion's signer) and the verified assertion itself,
    relayed unchanged if this node forwards the call again."""

    forwarder: Peer
    origin_node: Identity
    assertion: bytes


_current_forwarded: contextvars.ContextVar[Forwarded | None] = contextvars.ContextVar(
    "govnode_forwarded", default=None
)


def current_forwarded() -> Forwarded | None:
    """Set by the guard when the call was forwarded by a node with a verified assertion (the
    current peer is then the original caller); None for a direct call."""
    return _current_forwarded.get()


def set_current_forwarded(forwarded: Forwarded | None) -> contextvars.Token[Forwarded | None]:
    return _current_forwarded.set(forwarded)


def reset_current_forwarded(token: contextvars.Token[Forwarded | None]) -> None:
    _current_forwarded.reset(token)


def set_current_peer(peer: Peer) -> contextvars.Token[Peer | None]:
    return _current_peer.set(peer)


def reset_current_peer(token: contextvars.Token[Peer | None]) -> None:
    _current_peer.reset(token)


class Authenticator:
    """Turns a call's auth context into a :class:`Peer`, or raises AuthenticationError."""

    def __init__(
        self,
        root: x509.Certificate,
        trust_domain: str,
        is_revoked: RevocationCheck,
        *,
        cache_size: int = 4096,
    ) -> None:
        self._root = root
        self._trust_domain = trust_domain
        self._is_revoked = is_revoked
        self._cache: OrderedDict[bytes, Peer] = OrderedDict()
        self._cache_size = cache_size

    async def authenticate(self, auth_context: Mapping[str, Iterable[bytes]]) -> Peer:
        leaf_pems = list(auth_context.get("x509_pem_cert") or [])
        if not leaf_pems:
            raise AuthenticationError("no client certificate: govnode requires mutual TLS")
        chain_pems = list(auth_context.get("x509_pem_cert_chain") or [])
        key = b"".join([leaf_pems[0], *chain_pems])
        peer = self._cache.get(key)
        if peer is None:
            peer = self._verify(leaf_pems[0], chain_pems)
            self._cache[key] = peer
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        reason = await self._is_revoked(peer.serial_hex)
        if reason is not None:
            raise AuthenticationError(
                f"certificate {peer.serial_hex} of {peer.identity} is revoked ({reason})"
            )
        return peer

    def _verify(self, leaf_pem: bytes, chain_pems: list[bytes]) -> Peer:
        try:
            leaf = x509.load_pem_x509_certificate(leaf_pem)
            presented: list[x509.Certificate] = []
            for pem in chain_pems:
                presented.extend(x509.load_pem_x509_certificates(pem))
        except ValueError as exc:
            raise AuthenticationError(f"unreadable client certificate: {exc}") from None
        # Keep only the path from the leaf up to (not including) the root, in order.
        chain = [leaf]
        for cert in presented:
            if cert == leaf or cert == self._root:
                continue
            chain.append(cert)
        try:
            for child, parent in zip(chain, [*chain[1:], self._root], strict=True):
                child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise AuthenticationError(
                f"client certificate chain does not lead to the province root: {exc}"
            ) from None
        try:
            identity = check_chain(chain, self._trust_domain)
        except IdentityError as exc:
            raise AuthenticationError(str(exc)) from None
        return Peer(
            identity=identity,
            serial_hex=format(leaf.serial_number, "x"),
            not_after_iso=leaf.not_valid_after_utc.isoformat(),
        )
