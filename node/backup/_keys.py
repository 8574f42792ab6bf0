"""Private keys in a backup: only when asked for (``--with-keys``), and then encrypted under a
passphrase as PKCS#8 PEM (PBES2: a key derived from the passphrase by PBKDF2-HMAC-SHA256,
AES-256-CBC), a form OpenSSL reads too (``openssl pkey -in keys/node.key``)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.backup._manifest import BackupError

#: Shorter passphrases are refused: the encrypted keys may sit in off-site storage for years.
MIN_PASSPHRASE = 12


def check_passphrase(passphrase: bytes, where: str) -> bytes:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(
            f"the passphrase from {where} is {len(passphrase)} bytes; use at least {MIN_PASSPHRASE}"
        )
    return passphrase


def encrypt_key(key: ec.EllipticCurvePrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def decrypt_key(data: bytes, passphrase: bytes, name: str) -> ec.EllipticCurvePrivateKey:
    """The key in an encrypted PEM; a wrong passphrase is refused naming the file."""
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError):
        raise BackupError(
            f"{name}: cannot decrypt the key with this passphrase (wrong passphrase, or the "
            "file is damaged)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BackupError(f"{name}: not an ECDSA key")
    return key


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, as the node reads its keys (node.pki)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_secret(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a key file created 0600 (never readable by others, not even for an instant)."""
    if overwrite:
        path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BackupError(f"{path} exists already; pass --force to overwrite it") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
