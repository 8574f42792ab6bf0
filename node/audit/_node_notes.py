"""Statements a node signs about itself for others to check with nothing but the province root:
a C2SP signed note by the node key (key name ``<host>/node``, :func:`node_key_name`) carried
with the node's certificate chain (leaf first, without the root). Download receipts
(node.opendata) and the supervision summaries a city sends its province (node.supervision) are
made and checked this way.

Pure: no grpc, no storage.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import Identity, IdentityError, Role, identity_of
from node.audit._keys import node_key_name
from node.pki import PkiError, verify_chain
from node.tlog import EcdsaSigner, EcdsaVerifier, NoteError, open_note, sign_note

__all__ = ["NodeNoteError", "open_node_note", "sign_node_note"]


class NodeNoteError(ValueError):
    """A node's statement that cannot be signed or does not verify. ``check`` names what
    failed: ``signing`` (making one), ``chain`` (the certificate chain up to the root, or not
    a node with an ECDSA key), ``signature`` (the note's signature by the node key)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign_node_note(
    text: str, key: ec.EllipticCurvePrivateKey, chain_pem: str
) -> tuple[Identity, bytes]:
    """The signed note of ``text`` by the node key ``key`` whose chain is ``chain_pem``, and
    the node's identity. Refuses (check ``signing``) a key that is not the one the chain's
    leaf certifies: such a note would never verify."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        identity = identity_of(leaf)
    except (ValueError, IndexError, IdentityError) as exc:
        raise NodeNoteError("signing", f"the node's chain: {exc}") from None
    certified = leaf.public_key()
    if not isinstance(certified, ec.EllipticCurvePublicKey) or (
        _public_der(certified) != _public_der(key.public_key())
    ):
        raise NodeNoteError("signing", f"the key is not the one certified for {identity}")
    return identity, sign_note(text, EcdsaSigner(node_key_name(identity.host), key))


def open_node_note(
    note: bytes,
    chain_pem: str,
    root: x509.Certificate,
    trust_domain: str,
    *,
    at: dt.datetime | None = None,
) -> tuple[Identity, str]:
    """The signing node's identity and the note's text, once the chain verifies up to ``root``
    (at ``at``, default now) and the note carries the signature of the node key the leaf
    certifies. Raises :class:`NodeNoteError`."""
    try:
        identity, leaf = verify_chain(chain_pem, root, trust_domain, at=at)
    except PkiError as exc:
        raise NodeNoteError("chain", f"the node's certificate chain: {exc}") from None
    public = leaf.public_key()
    if identity.role is not Role.NODE or not isinstance(public, ec.EllipticCurvePublicKey):
        raise NodeNoteError("chain", f"{identity} is not a node with an ECDSA key")
    try:
        opened, _ = open_note(note, [EcdsaVerifier(node_key_name(identity.host), public)])
    except NoteError as exc:
        raise NodeNoteError("signature", f"the node's signature: {exc}") from None
    return identity, opened.text
