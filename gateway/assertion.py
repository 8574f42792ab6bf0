"""Signed caller assertions: who the original caller of a forwarded call is.

When a node forwards a call for one of its callers (city B -> province -> city A), the owning
node must apply its access rules to the original caller, never to the forwarder, and must never
trust a bare header. The node that first accepted the call (the origin node) signs a
``CallerAssertion`` with its node key; nodes on the path relay it unchanged in the
``govnode-caller-assertion-bin`` metadata; the owning node verifies it here:

- the signer chain leads to the pinned province root and ends in a *node* identity, which is
  the assertion's ``origin_node``;
- the original caller belongs to the origin node's own region: a node vouches only for callers
  it authenticated itself, and those are its region's;
- the signature covers the exact assertion bytes (an altered assertion fails);
- it names this resource and this request (digest of the request message), so it cannot be
  moved to another call;
- it is not past its deadline, was issued within the allowed clock skew, and its nonce has not
  been seen before (a replay fails; the nonce store is the node's, in its database).

Every node on the path checks all of this, but only the node serving the call records the
nonce: a relay (the province, for a call on a city's resource) forwards the assertion
unchanged, and the owner refuses a replay of it. So a routed call writes one nonce, not one
per hop.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf.message import DecodeError
from govnode.v1 import common_pb2

from gateway.identity import (
    Identity,
    IdentityError,
    Role,
    check_chain,
    identity_of,
    parse_spiffe,
)
from gateway.quote import quote

ASSERTION_KEY = "govnode-caller-assertion-bin"
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
NONCE_BYTES = 16
_SIGNER_CACHE = 256

#: Records a nonce until ``expires_at``; returns False when it was already recorded (replay).
NonceStore = Callable[[bytes, dt.datetime], Awaitable[bool]]


class UntrustedAssertion(Exception):
    """The assertion cannot be trusted; the message says why and is safe to return."""


@dataclass(frozen=True)
class VerifiedAssertion:
    caller: Identity
    origin_node: Identity
    resource_code: str
    request_id: str
    deadline: dt.datetime


def request_digest(message_bytes: bytes) -> bytes:
    return hashlib.sha256(message_bytes).digest()


def make_assertion(
    *,
    caller: Identity,
    node_key: ec.EllipticCurvePrivateKey,
    node_chain: list[x509.Certificate],
    resource_code: str,
    request_bytes: bytes,
    deadline: dt.datetime,
    request_id: str,
    now: dt.datetime | None = None,
) -> bytes:
    """A serialized ``SignedCallerAssertion`` for forwarding one call.

    ``node_chain`` is the signing node's certificate first, then its issuing CA(s); the root is
    left out (the verifier trusts its own copy).
    """
    now = now or dt.datetime.now(dt.UTC)
    origin_uri, chain_der = _signer_material(tuple(node_chain))
    assertion = common_pb2.CallerAssertion(
        caller_identity=caller.uri,
        origin_node=origin_uri,
        resource_code=resource_code,
        request_digest=request_digest(request_bytes),
        nonce=os.urandom(NONCE_BYTES),
        request_id=request_id,
    )
    assertion.deadline.FromDatetime(deadline.astimezone(dt.UTC))
    assertion.issued_at.FromDatetime(now.astimezone(dt.UTC))
    body = assertion.SerializeToString()
    signature = node_key.sign(body, ec.ECDSA(hashes.SHA256()))
    return common_pb2.SignedCallerAssertion(
        assertion=body,
        signature=signature,
        signer_chain_der=chain_der,
    ).SerializeToString()


@functools.lru_cache(maxsize=16)
def _signer_material(chain: tuple[x509.Certificate, ...]) -> tuple[str, list[bytes]]:
    """The signing node's identity URI and DER chain: fixed per certificate, so computed once
    (certificates are hashable and compare by content)."""
    return identity_of(chain[0]).uri, [c.public_bytes(Encoding.DER) for c in chain]


class AssertionVerifier:
    def __init__(
        self,
        root: x509.Certificate,
        trust_domain: str,
        nonces: NonceStore,
        *,
        max_skew: dt.timedelta = MAX_CLOCK_SKEW,
        region: str | None = None,
    ) -> None:
        """``region``: this node's; an assertion for a resource of another region (a call this
        node relays to its owner) is checked but its nonce left to the owner. None: every
        nonce is recorded here."""
        self._root = root
        self._region = region
        self._trust_domain = trust_domain
        self._nonces = nonces
        self._max_skew = max_skew
        # Signer chains already verified (DER tuple -> identity and validity window): the
        # chain is fixed per signing certificate, so its signatures are checked once; the
        # validity window is still checked on every call.
        self._signers: OrderedDict[tuple[bytes, ...], tuple[Identity, dt.datetime, dt.datetime]] = (
            OrderedDict()
        )

    async def verify(
        self,
        blob: bytes,
        *,
        forwarder: Identity,
        resource_code: str,
        request_bytes: bytes,
        now: dt.datetime | None = None,
    ) -> VerifiedAssertion:
        """The original caller of a forwarded call; :class:`UntrustedAssertion` says why not."""
        now = now or dt.datetime.now(dt.UTC)
        if forwarder.role is not Role.NODE:
            raise UntrustedAssertion(
                f"{forwarder} is not a node: only nodes may forward calls with an assertion"
            )
        try:
            signed = common_pb2.SignedCallerAssertion.FromString(blob)
            assertion = common_pb2.CallerAssertion.FromString(signed.assertion)
        except DecodeError as exc:
            raise UntrustedAssertion(f"caller assertion is malformed: {exc}") from None
        origin, leaf = self._cached_signer(tuple(signed.signer_chain_der), now)
        try:
            public_key = leaf.public_key()
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise UntrustedAssertion("caller assertion signer has no EC key")
            public_key.verify(signed.signature, signed.assertion, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise UntrustedAssertion(
                "caller assertion signature does not verify (altered or forged)"
            ) from None
        if assertion.origin_node != origin.uri:
            raise UntrustedAssertion(
                f"caller assertion names origin {quote(assertion.origin_node)} but is signed by "
                f"{origin}"
            )
        try:
            caller = parse_spiffe(assertion.caller_identity)
        except IdentityError as exc:
            raise UntrustedAssertion(f"caller assertion names no valid caller: {exc}") from None
        if caller.trust_domain != self._trust_domain or caller.region != origin.region:
            raise UntrustedAssertion(
                f"{origin} may only vouch for callers of its own region, not {caller}"
            )
        if assertion.resource_code != resource_code:
            raise UntrustedAssertion(
                f"caller assertion is for resource {quote(assertion.resource_code)}, "
                f"not {quote(resource_code)}"
            )
        if assertion.request_digest != request_digest(request_bytes):
            raise UntrustedAssertion("caller assertion was made for a different request")
        try:
            deadline = assertion.deadline.ToDatetime(dt.UTC)
            issued = assertion.issued_at.ToDatetime(dt.UTC)
        except ValueError:  # outside what google.protobuf.Timestamp allows
            raise UntrustedAssertion(
                "caller assertion's deadline or issued_at is not a valid time"
            ) from None
        if deadline <= now:
            raise UntrustedAssertion(f"caller assertion expired at {deadline.isoformat()}")
        if abs(now - issued) > self._max_skew:
            raise UntrustedAssertion(
                f"caller assertion was issued at {issued.isoformat()}, more than "
                f"{int(self._max_skew.total_seconds())} s from this node's clock"
            )
        if len(assertion.nonce) < NONCE_BYTES:
            raise UntrustedAssertion("caller assertion nonce is too short")
        if self._serves(resource_code) and not await self._nonces(
            assertion.nonce, deadline + self._max_skew
        ):
            raise UntrustedAssertion("caller assertion was already used (replay)")
        return VerifiedAssertion(caller, origin, resource_code, assertion.request_id, deadline)

    def _serves(self, resource_code: str) -> bool:
        """Whether this node serves a call on ``resource_code`` itself (so records its nonce):
        a resource of its own region, or a call named by something else than a resource."""
        if self._region is None or not resource_code:
            return True
        return resource_code.partition("-")[0] == self._region

    def _cached_signer(
        self, ders: tuple[bytes, ...], now: dt.datetime
    ) -> tuple[Identity, x509.Certificate]:
        if not ders:
            raise UntrustedAssertion("caller assertion carries no signer certificate")
        try:
            leaf = x509.load_der_x509_certificate(ders[0])
        except ValueError as exc:
            raise UntrustedAssertion(f"caller assertion is malformed: {exc}") from None
        cached = self._signers.get(ders)
        if cached is None:
            try:
                chain = [leaf, *(x509.load_der_x509_certificate(d) for d in ders[1:])]
            except ValueError as exc:
                raise UntrustedAssertion(f"caller assertion is malformed: {exc}") from None
            identity = self._signer(chain)
            cached = (identity, leaf.not_valid_before_utc, leaf.not_valid_after_utc)
            self._signers[ders] = cached
            if len(self._signers) > _SIGNER_CACHE:
                self._signers.popitem(last=False)
        identity, not_before, not_after = cached
        if not not_before <= now <= not_after:
            raise UntrustedAssertion("caller assertion signer's certificate is not valid now")
        return identity, leaf

    def _signer(self, chain: list[x509.Certificate]) -> Identity:
        if not chain:
            raise UntrustedAssertion("caller assertion carries no signer certificate")
        chain = [c for c in chain if c != self._root]
        try:
            for child, parent in zip(chain, [*chain[1:], self._root], strict=True):
                child.verify_directly_issued_by(parent)
        except (InvalidSignature, ValueError, TypeError):
            raise UntrustedAssertion(
                "caller assertion signer does not chain to the province root"
            ) from None
        try:
            signer = check_chain(chain, self._trust_domain)
        except IdentityError as exc:
            raise UntrustedAssertion(f"caller assertion signer: {exc}") from None
        if signer.role is not Role.NODE:
            raise UntrustedAssertion(f"caller assertion is signed by {signer}, not by a node")
        return signer
