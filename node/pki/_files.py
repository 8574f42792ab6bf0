"""Keys and certificates on disk: PEM files with safe modes, and agency client bundles.

Private keys are written unencrypted (PKCS#8 PEM) with mode 0600, and are never readable by
anyone else, not even for an instant: the file is created 0600 under a temporary name and then
moved into place. An existing key is never overwritten unless the caller says so, because a
lost key means re-issuing every certificate that rests on it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.identity import identity_of
from node.pki._ca import KeyPair, PkiError

KEY_MODE = 0o600
CERT_MODE = 0o644


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certs_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _write_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have narrowed a certificate's 0644
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and fails if the target exists, unlike replace
            except FileExistsError:
                raise PkiError(f"{path} exists already; refusing to overwrite it") from None
            except OSError as exc:  # a file system without hard links: check, then replace
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                if os.path.lexists(path):
                    raise PkiError(f"{path} exists already; refusing to overwrite it") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_private_key(
    path: str | os.PathLike[str], key: ec.EllipticCurvePrivateKey, *, overwrite: bool = False
) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600; refuse an existing file by default."""
    out = Path(path)
    _write_atomic(out, private_key_pem(key), KEY_MODE, overwrite=overwrite)
    return out


def write_pem(path: str | os.PathLike[str], *certs: x509.Certificate) -> Path:
    """Write certificates (leaf first for a chain) as PEM, mode 0644, replacing any old file."""
    if not certs:
        raise PkiError(f"no certificates to write to {path}")
    out = Path(path)
    _write_atomic(out, certs_pem(*certs), CERT_MODE, overwrite=True)
    return out


def load_private_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise PkiError(f"{path} does not hold an ECDSA P-256 key")
    return key


def load_or_create_witness_key(path: str | os.PathLike[str]) -> ed25519.Ed25519PrivateKey:
    """The node's Ed25519 witness key (tls.witness_key), made on first use: a node made before
    witnessing existed gets one at its next start. Its public half reaches others in a
    statement signed by the node key (node.audit), so nothing about the certificates changes."""
    file = Path(path)
    if not file.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Another process of this node may have made it first: then that one is used.
        with contextlib.suppress(PkiError):
            _write_atomic(file, pem, KEY_MODE, overwrite=False)
    try:
        loaded = serialization.load_pem_private_key(file.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{file} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise PkiError(f"{file} does not hold an Ed25519 key")
    return loaded


def load_or_create_secret(path: str | os.PathLike[str], size: int = 32) -> bytes:
    """A node secret of ``size`` random bytes kept in a file (0600), made on first use, like
    the witness key: e.g. the key of the HMAC that 授权开放 keys are stored under."""
    file = Path(path)
    if not file.exists():
        # Another process of this node may have made it first: then that one is used.
        with contextlib.suppress(PkiError):
            _write_atomic(file, secrets.token_bytes(size), KEY_MODE, overwrite=False)
    try:
        secret = file.read_bytes()
    except OSError as exc:
        raise PkiError(f"{file}: {exc.strerror}") from None
    if len(secret) < size:
        raise PkiError(f"{file} holds {len(secret)} bytes; a secret of {size} is expected")
    return secret


def load_certs(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in file order (leaf first for a chain)."""
    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path} holds no readable PEM certificate: {exc}") from None
    return certs


def load_chain_pem(path: str | os.PathLike[str], root: x509.Certificate) -> str:
    """The certificates of a chain file (a node's ``tls.cert``), leaf first, as PEM without
    ``root``: what a node hands a verifier with its signatures (proof files, checkpoints, usage
    statements), since the verifier trusts the root it holds itself and no copy of it."""
    return certs_pem(*(c for c in load_certs(path) if c != root)).decode()


def load_keypair(key_path: str | os.PathLike[str], cert_path: str | os.PathLike[str]) -> KeyPair:
    """The key and the first certificate of ``cert_path``; refuses a key that does not match."""
    return KeyPair(load_private_key(key_path), load_certs(cert_path)[0])


_README = """\
govnode client credentials for {identity}
issued by {issuer}, valid until {until} (UTC)

  client.key  this system's private key; keep it secret (mode 0600), never send it anywhere
  client.crt  this system's certificate followed by its issuing CA (leaf first)
  ca.crt      the province root CA: trust only servers that chain to it

Try it with grpcurl (server reflection is on):

  grpcurl -cacert ca.crt -cert client.crt -key client.key HOST:PORT list
"""


def _bundle_chain(
    keypair: KeyPair, chain: Sequence[x509.Certificate], root: x509.Certificate
) -> list[x509.Certificate]:
    intermediates = [c for c in chain if c not in (keypair.cert, root)]
    if not intermediates:
        raise PkiError("a client bundle needs the issuing CA certificate in the chain")
    try:
        keypair.cert.verify_directly_issued_by(intermediates[0])
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError(f"the chain's first CA did not issue this certificate: {exc}") from None
    return intermediates


def _readme(keypair: KeyPair) -> bytes:
    return _README.format(
        identity=identity_of(keypair.cert),
        issuer=keypair.cert.issuer.rfc4514_string(),
        until=f"{keypair.cert.not_valid_after_utc:%Y-%m-%d %H:%M}",
    ).encode()


def write_client_bundle(
    out_dir: str | os.PathLike[str],
    keypair: KeyPair,
    chain: Sequence[x509.Certificate],
    root: x509.Certificate,
) -> dict[str, Path]:
    """Write an agency system's ``client.key``, ``client.crt``, ``ca.crt`` and ``README.txt``.

    ``chain`` is the issuing CA(s) above the leaf; the leaf and the root are left out of
    ``client.crt`` if passed. Refuses (before writing anything) when ``client.key`` exists.
    """
    out = Path(out_dir)
    paths = {
        "key": out / "client.key",
        "cert": out / "client.crt",
        "ca": out / "ca.crt",
        "readme": out / "README.txt",
    }
    if paths["key"].exists():
        raise PkiError(f"{paths['key']} exists already; refusing to overwrite a private key")
    intermediates = _bundle_chain(keypair, chain, root)
    write_private_key(paths["key"], keypair.key)
    write_pem(paths["cert"], keypair.cert, *intermediates)
    write_pem(paths["ca"], root)
    _write_atomic(paths["readme"], _readme(keypair), CERT_MODE, overwrite=True)
    return paths


def client_bundle_zip(
    keypair: KeyPair, chain: Sequence[x509.Certificate], root: x509.Certificate
) -> bytes:
    """The files of :func:`write_client_bundle` as one zip, made in memory (the console hands
    it to the operator once and keeps no copy of the key)."""
    import io
    import zipfile

    intermediates = _bundle_chain(keypair, chain, root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in (
            ("client.key", private_key_pem(keypair.key), KEY_MODE),
            ("client.crt", certs_pem(keypair.cert, *intermediates), CERT_MODE),
            ("ca.crt", certs_pem(root), CERT_MODE),
            ("README.txt", _readme(keypair), CERT_MODE),
        ):
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def pkcs12_bytes(
    keypair: KeyPair, chain: Sequence[x509.Certificate], *, name: str, password: str
) -> bytes:
    """The key, certificate and issuing CA(s) as one PKCS#12 file, the form a browser or an
    operating system's certificate store imports. Encrypted with ``password`` (AES-256 with
    PBKDF2, as current browsers read); an empty password leaves it unencrypted, for stores
    that protect it themselves."""
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        NoEncryption,
        pkcs12,
    )

    encryption = BestAvailableEncryption(password.encode()) if password else NoEncryption()
    return pkcs12.serialize_key_and_certificates(
        name.encode(),
        keypair.key,
        keypair.cert,
        [c for c in chain if c != keypair.cert],
        encryption,
    )


def write_pkcs12(
    path: str | os.PathLike[str],
    keypair: KeyPair,
    chain: Sequence[x509.Certificate],
    *,
    name: str,
    password: str,
) -> Path:
    """Write :func:`pkcs12_bytes` to ``path`` (0600, never over an existing file)."""
    file = Path(path)
    data = pkcs12_bytes(keypair, chain, name=name, password=password)
    _write_atomic(file, data, KEY_MODE, overwrite=False)
    return file
