"""Checking a certificate chain offline, with nothing but the province root certificate.

The gRPC guard checks callers' chains as TLS presents them (gateway.auth); what is checked here
arrives inside data: the chain of a node whose key signed an audit checkpoint, a witness key
statement or a proof file, to be verified by a witness, a provider or an auditor years later.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gateway.identity import Identity, IdentityError, check_chain
from node.pki._ca import PkiError

#: A chain in data is a leaf and its region CA, perhaps the root: a few kilobytes.
MAX_CHAIN_PEM_BYTES = 32 * 1024


def verify_chain(
    chain_pem: str | bytes,
    root: x509.Certificate,
    trust_domain: str,
    *,
    at: dt.datetime | None = None,
) -> tuple[Identity, x509.Certificate]:
    """The identity and leaf certificate of a PEM chain (leaf first) that leads to ``root``.

    Every signature on the path is checked and the identity rules of gateway.identity apply
    (the leaf's region CA must be allowed to vouch for it). With ``at``, each certificate must
    also have been valid at that instant. Raises PkiError naming what fails."""
    data = chain_pem.encode() if isinstance(chain_pem, str) else chain_pem
    if len(data) > MAX_CHAIN_PEM_BYTES:
        raise PkiError(
            f"certificate chain: {len(data)} bytes; at most {MAX_CHAIN_PEM_BYTES} are read"
        )
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"certificate chain: not PEM certificates ({exc})") from None
    chain = [c for c in certs if c != root]
    if not chain:
        raise PkiError("certificate chain: no certificate besides the root")
    try:
        for child, parent in zip(chain, [*chain[1:], root], strict=True):
            child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise PkiError(f"certificate chain does not lead to the province root: {exc}") from None
    if at is not None:
        for cert in [*chain, root]:
            if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
                raise PkiError(
                    f"certificate {cert.subject.rfc4514_string()} was not valid at {at.isoformat()}"
                )
    try:
        identity = check_chain(chain, trust_domain)
    except IdentityError as exc:
        raise PkiError(f"certificate chain: {exc}") from None
    return identity, chain[0]
