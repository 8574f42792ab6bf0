"""Statements a node signs about itself, checked offline against the province root: the shared
file shape of download receipts (node.opendata, 第三十五条) and project acceptance
certificates (node.supervision, 第九、二十二条).

A signed file is a JSON object of three keys:

- ``format``: the statement's header line, e.g. ``govnode download receipt v1``;
- ``note``: a C2SP signed note by the node key (node.audit's ``sign_node_note``, which the
  province's supervision summaries use too), given as its lines so that a person can read it
  in the file; its text starts with the header line;
- ``chain_pem``: the node's certificate chain without the root.

The note's bytes are the lines joined with newlines plus a final newline. Nothing outside the
signed note is believed: :func:`open_signed` checks the size, the shape, the chain up to the
root and the signature, and gives back the note's text with the signer; the caller parses the
text and checks that the signer is the node it names, and when (:func:`valid_at`).

Pure: no grpc, no storage.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import Identity, IdentityError, identity_of
from node.audit import NodeNoteError, open_node_note, sign_node_note
from node.pki import PkiError, verify_chain

__all__ = ["SignedError", "SignedNote", "open_signed", "sign_statement", "valid_at"]


class SignedError(ValueError):
    """A signed file that is malformed or does not verify. ``check`` names the check that
    failed: ``size``, ``format``, ``chain``, ``signature`` or ``time`` (``signing`` when making
    one); the callers add their own (``fields``, ``node``, ...)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class SignedNote:
    """A signed file whose chain and signature verified: the note's text, the signing node and
    its chain (for :func:`valid_at`)."""

    text: str
    signer: Identity
    chain_pem: str


def sign_statement(
    text: str,
    node_uri: str,
    key: ec.EllipticCurvePrivateKey,
    chain_pem: str,
    *,
    what: str,
    max_bytes: int,
) -> bytes:
    """The signed file of ``text`` (its first line the header), by the node key ``key`` whose
    chain (leaf first, without the root: node.pki.load_chain_pem) is ``chain_pem``. Refuses
    (check ``signing``) a key or chain that is not the one of ``node_uri``, the node the text
    names: such a file would never verify. ``what`` names the statement in messages."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
        identity = identity_of(leaf)
    except (ValueError, IndexError, IdentityError) as exc:
        raise SignedError("signing", f"the node's chain: {exc}") from None
    if identity.uri != node_uri:
        raise SignedError("signing", f"the {what} names {node_uri}, but the chain is {identity}'s")
    try:
        _, note = sign_node_note(text, key, chain_pem)
    except NodeNoteError as exc:
        raise SignedError(exc.check, str(exc)) from None
    document = {
        "format": text.split("\n", 1)[0],
        "note": note.decode().removesuffix("\n").split("\n"),
        "chain_pem": chain_pem,
    }
    data = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
    if len(data) > max_bytes:
        raise SignedError("signing", f"the {what} would be {len(data)} bytes, too large")
    return data


def _read_document(data: bytes, header: str, what: str) -> tuple[bytes, str]:
    """The note bytes and chain PEM of a signed file (check ``format``)."""
    try:
        document: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignedError("format", f"not a govnode {what}: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != header:
        raise SignedError("format", f"not a govnode {what} (format {header!r})")
    lines, chain_pem = document.get("note"), document.get("chain_pem")
    if (
        not isinstance(lines, list)
        or not all(isinstance(line, str) and "\n" not in line for line in lines)
        or not isinstance(chain_pem, str)
    ):
        raise SignedError(
            "format", f"a {what} has 'note' (the signed note's lines) and 'chain_pem' (text)"
        )
    return ("\n".join(lines) + "\n").encode(), chain_pem


def open_signed(
    data: bytes,
    root: x509.Certificate,
    trust_domain: str,
    *,
    header: str,
    what: str,
    max_bytes: int,
) -> SignedNote:
    """The note of a signed file once its size, shape, chain (up to ``root``, in
    ``trust_domain``, a node's with an ECDSA key) and the node's signature are checked.
    Raises :class:`SignedError` naming the check that failed."""
    if len(data) > max_bytes:
        raise SignedError(
            "size", f"{len(data)} bytes; a {what} is at most {max_bytes}, refused unread"
        )
    note, chain_pem = _read_document(data, header, what)
    try:
        identity, text = open_node_note(note, chain_pem, root, trust_domain)
    except NodeNoteError as exc:
        raise SignedError(exc.check, str(exc)) from None
    return SignedNote(text, identity, chain_pem)


def valid_at(
    signed: SignedNote, root: x509.Certificate, trust_domain: str, at: dt.datetime, when: str
) -> None:
    """Refuses (check ``time``) when the signer's chain was not valid at ``at`` (``when``
    names that moment in the message, e.g. "the receipt's time")."""
    try:
        verify_chain(signed.chain_pem, root, trust_domain, at=at)
    except PkiError as exc:
        raise SignedError("time", f"at {when}: {exc}") from None
