"""The keys behind checkpoints, and how a verifier learns them from the province root alone.

- A node signs its log's checkpoints with its node key (ECDSA P-256, signed-note type 0x02,
  key name = the log's origin); its certificate chain says whose key it is.
- A node cosigns other logs' checkpoints with its witness key (Ed25519, tlog-cosignature/v1).
  Nothing in the PKI certifies that key, so the node states it: a signed note by its node key
  (key name ``<host>/node``) whose text is ``govnode witness key v1``, the node's SPIFFE ID and
  the witness key as a C2SP vkey. Chain, statement and cosignature together verify against the
  root certificate only.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.identity import Identity
from node.pki import PkiError, verify_chain
from node.tlog import (
    CosignatureSigner,
    CosignatureVerifier,
    EcdsaSigner,
    EcdsaVerifier,
    NoteError,
    Verifier,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
    vkey,
)

STATEMENT_HEADER = "govnode witness key v1"
COSIGNATURE_TYPE = 0x04


class KeyStatementError(ValueError):
    """A witness key statement, or the chain it rests on, does not verify."""


#: The largest log epoch an origin may name (a restart is rare: one per restore at most).
MAX_EPOCH = 999_999


def log_origin(host: str, epoch: int = 0) -> str:
    """The origin of a node's audit log: ``<region>.<trust domain>/audit``, and
    ``…/audit/<epoch>`` for the log the node started after a restore lost witnessed records
    (node.audit._restart)."""
    return epoch_origin(f"{host}/audit", epoch)


def epoch_origin(first: str, epoch: int) -> str:
    """The origin of ``epoch`` of the log whose first origin is ``first``."""
    return first if epoch == 0 else f"{first}/{epoch}"


def origin_epoch(origin: str, host: str) -> int | None:
    """The epoch of ``origin`` if it is one of the audit logs of ``host``, else None."""
    base = log_origin(host)
    if origin == base:
        return 0
    rest = origin.removeprefix(base + "/")
    if (
        rest == origin
        or not rest.isascii()
        or not rest.isdigit()
        or rest.startswith("0")
        or len(rest) > len(str(MAX_EPOCH))
    ):
        return None
    return int(rest)


def origin_parts(origin: str) -> tuple[str, int]:
    """(the first origin of the log, epoch): ``h/audit/3`` -> (``h/audit``, 3); an origin
    with no epoch is its own first origin."""
    head, _, tail = origin.rpartition("/")
    if head.endswith("/audit") and origin_epoch(origin, head.removesuffix("/audit")):
        return head, int(tail)
    return origin, 0


def claimed_origin(note: bytes) -> str:
    """The origin a checkpoint note claims (its first line), unverified: which of a node's
    log keys to verify it with. Empty if the note cannot be read."""
    try:
        return parse_note(note).text.split("\n", 1)[0]
    except NoteError:
        return ""


def witness_name(host: str) -> str:
    """The key name a node cosigns others' checkpoints under."""
    return f"{host}/witness"


def node_key_name(host: str) -> str:
    """The key name a node signs statements about itself under."""
    return f"{host}/node"


def log_signer(host: str, key: ec.EllipticCurvePrivateKey, epoch: int = 0) -> EcdsaSigner:
    """The node key, signing checkpoints under the key name of its log's origin."""
    return EcdsaSigner(log_origin(host, epoch), key)


def log_verifier(host: str, certificate: x509.Certificate, epoch: int = 0) -> EcdsaVerifier:
    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise KeyStatementError(f"the certificate of {host} does not hold an ECDSA key")
    return EcdsaVerifier(log_origin(host, epoch), public)


def witness_signer(host: str, key: ed25519.Ed25519PrivateKey) -> CosignatureSigner:
    return CosignatureSigner(witness_name(host), key)


def witness_statement(
    identity: Identity, node_key: ec.EllipticCurvePrivateKey, witness_key: ed25519.Ed25519PublicKey
) -> bytes:
    """The node's signed statement of its witness key."""
    text = (
        f"{STATEMENT_HEADER}\n{identity.uri}\n"
        f"{vkey(witness_name(identity.host), witness_key, COSIGNATURE_TYPE)}\n"
    )
    return sign_note(text, EcdsaSigner(node_key_name(identity.host), node_key))


@dataclass(frozen=True)
class Cosigner:
    """A witness as a verifier knows it: its identity and its cosignature verifier."""

    identity: Identity
    verifier: Verifier


def read_witness_statement(
    statement: bytes, chain_pem: str, root: x509.Certificate, trust_domain: str
) -> Cosigner:
    """Check a statement against its node's chain (which must lead to ``root``) and return
    the witness it names. Raises KeyStatementError naming what fails."""
    try:
        identity, leaf = verify_chain(chain_pem, root, trust_domain)
    except PkiError as exc:
        raise KeyStatementError(str(exc)) from None
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise KeyStatementError(f"the certificate of {identity} does not hold an ECDSA key")
    try:
        note, _ = open_note(statement, [EcdsaVerifier(node_key_name(identity.host), public)])
    except NoteError as exc:
        raise KeyStatementError(f"witness key statement of {identity}: {exc}") from None
    lines = note.text.split("\n")
    if len(lines) != 4 or lines[0] != STATEMENT_HEADER or lines[3] != "":
        raise KeyStatementError(f"witness key statement of {identity}: not a govnode statement")
    if lines[1] != identity.uri:
        raise KeyStatementError(
            f"witness key statement names {lines[1][:80]!r}, but is signed by {identity}"
        )
    try:
        verifier = parse_vkey(lines[2])
    except NoteError as exc:
        raise KeyStatementError(f"witness key statement of {identity}: {exc}") from None
    if verifier.name != witness_name(identity.host) or not isinstance(
        verifier, CosignatureVerifier
    ):
        raise KeyStatementError(
            f"witness key statement of {identity}: the key is not a cosigning key named "
            f"{witness_name(identity.host)}"
        )
    return Cosigner(identity, verifier)


def read_log_signer(
    chain_pem: str, root: x509.Certificate, trust_domain: str, note: bytes = b""
) -> tuple[Identity, EcdsaVerifier]:
    """The identity of a log's node and the verifier of its checkpoints, from its chain: for
    the origin ``note`` claims when that is one of the node's logs, else its first log (whose
    verifier then fails the note)."""
    try:
        identity, leaf = verify_chain(chain_pem, root, trust_domain)
    except PkiError as exc:
        raise KeyStatementError(str(exc)) from None
    epoch = origin_epoch(claimed_origin(note), identity.host) if note else None
    return identity, log_verifier(identity.host, leaf, epoch or 0)
