"""Signed notes (c2sp.org/signed-note): a UTF-8 text ending in a newline, a blank line, and one
or more lines ``— <key name> base64(key id || signature)``; the key types the audit log needs,
and verifier keys (vkeys) to configure them with.

- type 0x01, Ed25519 over the text (golang.org/x/mod/sumdb/note);
- type 0x02, ECDSA over SHA-256 of the text, DER-encoded, as transparency-dev implements it: the
  key id is SHA-256 of the DER SubjectPublicKeyInfo alone (no name, no type byte), and the vkey
  carries that DER. This is what a node's ECDSA P-256 key signs its log's checkpoints with;
- type 0x04, the timestamped Ed25519 cosignature of c2sp.org/tlog-cosignature (v1), what a
  witness (见证节点) adds to a checkpoint it has checked.

A verifier ignores signatures by keys it does not know, refuses a note in which a known key's
signature fails (the spec says SHOULD; a failing signature by a trusted key is a forgery or a
bug, and neither should pass) and refuses one that no known key signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from node.tlog._checkpoint import CheckpointError, parse_checkpoint

TYPE_ED25519 = 0x01
TYPE_ECDSA = 0x02
TYPE_COSIGNATURE_V1 = 0x04

_DASH = "\u2014 "  # em dash and a space open every signature line
_KEY_ID_SIZE = 4
_TIMESTAMP_SIZE = 8
_ED25519_SIZE = 64
_MAX_TIMESTAMP = 2**63 - 1
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)  # the curves the spec allows for 0x02
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A note, signature line or key that is malformed, or a note that does not verify."""


def quote(text: str | bytes, limit: int = 40) -> str:
    """At most ``limit`` characters of caller text, for an error message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "…")


def b64decode_strict(text: str) -> bytes | None:
    """Standard base64 in its one canonical spelling (padding, zero trailing bits), else None:
    a note's bytes are signed, so two spellings of one signature must not both pass."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None


def valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode spaces, no ``+`` (signed-note)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes  # 4 bytes
    signature: bytes  # the bytes after the key id

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"a key name is non-empty, without spaces or '+': {quote(self.name)}")
        if len(self.key_id) != _KEY_ID_SIZE:
            raise NoteError(f"a key id is {_KEY_ID_SIZE} bytes, not {len(self.key_id)}")
        if not self.signature:
            raise NoteError(f"the signature by {quote(self.name)} is empty")

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_DASH}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[NoteSignature, ...]


class Signer(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """The signature over the note text ``message`` (the bytes after the key id)."""
        ...


class Verifier(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (the bytes after the key id) signs the note text ``message``."""
        ...


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError(f"a note text ends with a newline: {quote(text[-40:])}")
    for i, c in enumerate(text):
        if c < " " and c != "\n":
            raise NoteError(f"control character {c!r} at offset {i} of the note text")


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_DASH):
        raise NoteError(f"a signature line starts with '— ': {quote(line)}")
    name, space, encoded = line[len(_DASH) :].partition(" ")
    if not space or not valid_name(name):
        raise NoteError(f"a signature line is '— <name> <base64>': {quote(line)}")
    raw = b64decode_strict(encoded)
    if raw is None:
        raise NoteError(f"the signature by {quote(name)} is not canonical base64")
    if len(raw) <= _KEY_ID_SIZE:
        raise NoteError(f"the signature by {quote(name)} is shorter than a key id and one byte")
    return NoteSignature(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])


def _decode(data: bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise NoteError(f"the note is {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"the note is not UTF-8 (byte {exc.start})") from None
    for i, c in enumerate(text):
        if c < " " and c != "\n":
            raise NoteError(f"control character {c!r} at offset {i} of the note")
    return text


def parse_signature_lines(data: bytes, *, max_bytes: int = 65536) -> tuple[NoteSignature, ...]:
    """Signature lines alone, each ending in a newline (a witness's add-checkpoint answer)."""
    text = _decode(data, max_bytes)
    if not text.endswith("\n"):
        raise NoteError("signature lines end with a newline")
    return tuple(_parse_signature_line(line) for line in text[:-1].split("\n"))


def parse_note(data: bytes, *, max_bytes: int = 65536, max_signatures: int = 64) -> Note:
    """Split a signed note into its text and signature lines, refusing anything the spec does
    not allow. Verifies nothing: see :func:`open_note`."""
    text = _decode(data, max_bytes)
    # The text may hold blank lines; the last blank line is the one before the signatures.
    split = text.rfind("\n\n")
    if split < 0:
        raise NoteError("a signed note has a blank line between its text and its signatures")
    body, sigs = text[: split + 1], text[split + 2 :]
    if not sigs:
        raise NoteError("the note has no signature lines")
    if not sigs.endswith("\n"):
        raise NoteError(f"the last signature line ends with a newline: {quote(sigs[-40:])}")
    lines = sigs[:-1].split("\n")
    if len(lines) > max_signatures:
        raise NoteError(f"the note has {len(lines)} signatures, more than {max_signatures}")
    return Note(body, tuple(_parse_signature_line(line) for line in lines))


def format_note(note: Note) -> bytes:
    _check_text(note.text)
    if not note.signatures:
        raise NoteError("a signed note has at least one signature")
    return (note.text + "\n" + "".join(s.line() for s in note.signatures)).encode("utf-8")


def _signature(text: str, signer: Signer) -> NoteSignature:
    return NoteSignature(signer.name, signer.key_id, signer.sign(text.encode("utf-8")))


def _merge(
    existing: Iterable[NoteSignature], added: Iterable[NoteSignature]
) -> tuple[NoteSignature, ...]:
    """``existing`` in order, a line by a key in ``added`` replaced where it stands, the rest
    of ``added`` after them."""
    merged = list(existing)
    for sig in added:
        key = (sig.name, sig.key_id)
        at = [i for i, s in enumerate(merged) if (s.name, s.key_id) == key]
        if at:
            merged[at[0]] = sig
            for i in reversed(at[1:]):
                del merged[i]
        else:
            merged.append(sig)
    return tuple(merged)


def sign_note(text: str, *signers: Signer) -> bytes:
    """The note ``text`` signed by each signer, in order."""
    _check_text(text)
    if not signers:
        raise NoteError("signing a note needs at least one signer")
    return format_note(Note(text, _merge((), (_signature(text, s) for s in signers))))


def add_signatures(note: bytes, *signers: Signer) -> bytes:
    """``note`` with a signature by each signer: the existing lines are kept in order, except
    that a signer's own earlier line (same name and key id) is replaced where it stands."""
    parsed = parse_note(note)
    added = [_signature(parsed.text, s) for s in signers]
    return format_note(Note(parsed.text, _merge(parsed.signatures, added)))


def add_signature_lines(note: bytes, lines: bytes) -> bytes:
    """``note`` with the signature ``lines`` (e.g. a witness's answer) merged in as
    :func:`add_signatures` does. Nothing is verified: open the result to trust it."""
    parsed = parse_note(note)
    added = parse_signature_lines(lines)
    return format_note(Note(parsed.text, _merge(parsed.signatures, added)))


def verified_signatures(note: Note, verifiers: Sequence[Verifier]) -> tuple[NoteSignature, ...]:
    """The signatures of ``note`` that known keys made, each verified; those by unknown keys
    (name and key id not both matching a verifier) are ignored. Raises :class:`NoteError` if a
    known key's signature fails or two different verifiers claim one name and key id."""
    message = note.text.encode("utf-8")
    verified: list[NoteSignature] = []
    for sig in note.signatures:
        known = [v for v in verifiers if v.name == sig.name and v.key_id == sig.key_id]
        if not known:
            continue
        if any(v is not known[0] for v in known[1:]):
            raise NoteError(f"two verifiers share the key {sig.name}+{sig.key_id.hex()}")
        if not known[0].verify(message, sig.signature):
            raise NoteError(f"the signature by {sig.name}+{sig.key_id.hex()} does not verify")
        if sig not in verified:
            verified.append(sig)
    return tuple(verified)


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> tuple[Note, tuple[NoteSignature, ...]]:
    """Parse and verify a signed note: the note and the signatures that verified. Raises
    :class:`NoteError` if it is malformed, a known key's signature fails, or no known key
    signed it."""
    note = parse_note(data)
    verified = verified_signatures(note, verifiers)
    if not verified:
        names = ", ".join(sorted({s.name for s in note.signatures}))
        raise NoteError(f"no signature by a known key (signed by {quote(names)})")
    return note, verified


# -- key ids and the key types ---------------------------------------------------------------


def key_id(name: str, type_: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4], the spec's recommended key id."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([type_]) + public_key).digest()
    return digest[:_KEY_ID_SIZE]


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise NoteError(f"a key name is non-empty, without spaces or '+': {quote(name)}")


def _ed25519_raw(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    if not isinstance(key.curve, _CURVES):
        raise NoteError(f"ECDSA note keys are on P-256, P-384 or P-521, not {key.curve.name}")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ecdsa_key_id(spki: bytes) -> bytes:
    return hashlib.sha256(spki).digest()[:_KEY_ID_SIZE]


class Ed25519Signer:
    """Signed-note type 0x01."""

    type = TYPE_ED25519

    def __init__(self, name: str, private_key: ed25519.Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self.key_id = key_id(name, TYPE_ED25519, _ed25519_raw(private_key.public_key()))
        self._key = private_key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.name, self._key.public_key())


class Ed25519Verifier:
    """Signed-note type 0x01."""

    type = TYPE_ED25519

    def __init__(self, name: str, public_key: ed25519.Ed25519PublicKey) -> None:
        _check_name(name)
        self.name = name
        self.public_key = public_key
        self.public_bytes = _ed25519_raw(public_key)
        self.key_id = key_id(name, TYPE_ED25519, self.public_bytes)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _ED25519_SIZE:
            return False
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class EcdsaSigner:
    """Signed-note type 0x02: DER ECDSA over SHA-256 of the text; key id from the DER SPKI."""

    type = TYPE_ECDSA

    def __init__(self, name: str, private_key: ec.EllipticCurvePrivateKey) -> None:
        _check_name(name)
        self.name = name
        self.key_id = _ecdsa_key_id(_spki(private_key.public_key()))
        self._key = private_key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def verifier(self) -> EcdsaVerifier:
        return EcdsaVerifier(self.name, self._key.public_key())

    def named(self, name: str) -> EcdsaSigner:
        """The same key under another key name."""
        return EcdsaSigner(name, self._key)


class EcdsaVerifier:
    """Signed-note type 0x02."""

    type = TYPE_ECDSA

    def __init__(self, name: str, public_key: ec.EllipticCurvePublicKey) -> None:
        _check_name(name)
        self.name = name
        self.public_key = public_key
        self.public_bytes = _spki(public_key)
        self.key_id = _ecdsa_key_id(self.public_bytes)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def _now() -> int:
    return int(time.time())


def cosignature_message(timestamp: int, text: str) -> bytes:
    """What a v1 cosignature signs: ``cosignature/v1``, ``time <t>``, the checkpoint text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


class CosignatureSigner:
    """tlog-cosignature v1 (type 0x04): Ed25519 over :func:`cosignature_message`, the signature
    carried as u64 big-endian timestamp || 64 bytes. Signs checkpoints and nothing else."""

    type = TYPE_COSIGNATURE_V1

    def __init__(
        self,
        name: str,
        private_key: ed25519.Ed25519PrivateKey,
        clock: Callable[[], int] = _now,
    ) -> None:
        _check_name(name)
        self.name = name
        self.key_id = key_id(name, TYPE_COSIGNATURE_V1, _ed25519_raw(private_key.public_key()))
        self._key = private_key
        self._clock = clock

    def sign(self, message: bytes) -> bytes:
        text = message.decode("utf-8")
        try:
            parse_checkpoint(text)
        except CheckpointError as exc:
            raise NoteError(f"a cosigner signs checkpoints only: {exc}") from None
        timestamp = self._clock()
        if not 0 < timestamp <= _MAX_TIMESTAMP:
            raise NoteError(f"a cosignature's time is in 1..2**63-1, not {timestamp}")
        signature = self._key.sign(cosignature_message(timestamp, text))
        return timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + signature

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self._key.public_key())


class CosignatureVerifier:
    """tlog-cosignature v1 (type 0x04)."""

    type = TYPE_COSIGNATURE_V1

    def __init__(self, name: str, public_key: ed25519.Ed25519PublicKey) -> None:
        _check_name(name)
        self.name = name
        self.public_key = public_key
        self.public_bytes = _ed25519_raw(public_key)
        self.key_id = key_id(name, TYPE_COSIGNATURE_V1, self.public_bytes)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != _TIMESTAMP_SIZE + _ED25519_SIZE:
            return False
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > _MAX_TIMESTAMP:
            return False
        try:
            text = message.decode("utf-8")
            self.public_key.verify(
                signature[_TIMESTAMP_SIZE:], cosignature_message(timestamp, text)
            )
        except (InvalidSignature, UnicodeDecodeError):
            return False
        return True


def cosignature_time(sig: NoteSignature) -> int:
    """The unix time a v1 cosignature carries (unverified: verify the note first)."""
    if len(sig.signature) != _TIMESTAMP_SIZE + _ED25519_SIZE:
        raise NoteError(
            f"a v1 cosignature is {_TIMESTAMP_SIZE + _ED25519_SIZE} bytes after the key id, "
            f"not {len(sig.signature)}"
        )
    return int.from_bytes(sig.signature[:_TIMESTAMP_SIZE], "big")


# -- vkeys ------------------------------------------------------------------------------------

AnyVerifier = Ed25519Verifier | EcdsaVerifier | CosignatureVerifier


def vkey(name: str, key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey, type: int) -> str:
    """``<name>+<hex key id>+<base64(type || public key)>``; for type 0x02 the public key is
    its DER SubjectPublicKeyInfo, as transparency-dev encodes it."""
    verifier: AnyVerifier
    if type == TYPE_ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
        verifier = EcdsaVerifier(name, key)
    elif type == TYPE_ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
        verifier = Ed25519Verifier(name, key)
    elif type == TYPE_COSIGNATURE_V1 and isinstance(key, ed25519.Ed25519PublicKey):
        verifier = CosignatureVerifier(name, key)
    else:
        raise NoteError(f"no vkey of type 0x{type:02x} for a {key.__class__.__name__}")
    return vkey_of(verifier)


def vkey_of(verifier: AnyVerifier) -> str:
    """The vkey of a verifier of a supported type."""
    material = base64.b64encode(bytes([verifier.type]) + verifier.public_bytes).decode("ascii")
    return f"{verifier.name}+{verifier.key_id.hex()}+{material}"


def parse_vkey(text: str) -> AnyVerifier:
    """The verifier a vkey describes, for types 0x01, 0x02 and 0x04; the key id written in it
    must be the one its key computes to."""
    name, _, rest = text.partition("+")
    hex_id, _, material = rest.partition("+")
    if not valid_name(name):
        raise NoteError(f"a vkey starts with a key name without spaces: {quote(text)}")
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise NoteError(f"a vkey's key id is 8 lowercase hex digits: {quote(text)}")
    raw = b64decode_strict(material)
    if not raw or len(raw) < 2:
        raise NoteError(f"a vkey ends with base64(type || key): {quote(text)}")
    type_, key = raw[0], raw[1:]
    verifier: AnyVerifier
    try:
        if type_ in (TYPE_ED25519, TYPE_COSIGNATURE_V1):
            if len(key) != 32:
                raise NoteError(f"an Ed25519 vkey holds 32 bytes, not {len(key)}: {quote(text)}")
            public = ed25519.Ed25519PublicKey.from_public_bytes(key)
            if type_ == TYPE_ED25519:
                verifier = Ed25519Verifier(name, public)
            else:
                verifier = CosignatureVerifier(name, public)
        elif type_ == TYPE_ECDSA:
            loaded = serialization.load_der_public_key(key)
            if not isinstance(loaded, ec.EllipticCurvePublicKey):
                raise NoteError(f"a type 0x02 vkey holds an ECDSA key: {quote(text)}")
            verifier = EcdsaVerifier(name, loaded)
            if verifier.public_bytes != key:
                raise NoteError(f"the vkey's DER is not canonical: {quote(text)}")
        else:
            raise NoteError(f"vkey type 0x{type_:02x} is not supported: {quote(text)}")
    except ValueError as exc:
        if isinstance(exc, NoteError):
            raise
        raise NoteError(f"the vkey's key does not load ({exc}): {quote(text)}") from None
    if verifier.key_id.hex() != hex_id:
        raise NoteError(
            f"the vkey says key id {hex_id}, its key computes to {verifier.key_id.hex()}"
        )
    return verifier
