"""The open data portal as the public reaches it: HTTPS with no client certificate.

:func:`https_probe` is a TLS handshake (stdlib ``ssl``) that also notes whether the server
asked for a client certificate: OpenSSL's message callback sees every handshake message,
the TLS 1.3 ones after decryption too, so a CertificateRequest is seen whatever the
version. :func:`client` is the HTTP client of every open data case (aiohttp). Neither checks
the portal's certificate against a trust store: a portal in trial mode has a self-signed one,
and the cases judge the certificate themselves (OPEN-01).

:func:`https_probe` blocks; the cases call it in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509

from conformance.wire import _describe, _peer_chain

_CERTIFICATE_REQUEST = 13  # TLS HandshakeType certificate_request (RFC 8446, 5246)
_HANDSHAKE = 22  # TLS ContentType handshake


def portal_address(url: str) -> tuple[str, int]:
    """Host and port of an ``https://`` base URL; ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an https:// URL: the public portal speaks only HTTPS")
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return parts.hostname, port


@dataclass
class HttpsOutcome:
    handshake_ok: bool
    version: str = ""
    cipher: str = ""
    chain: list[x509.Certificate] = field(default_factory=list)
    #: The server sent a CertificateRequest; None when this Python cannot tell.
    client_cert_requested: bool | None = None
    error: str = ""


def https_probe(
    url: str, *, max_version: ssl.TLSVersion | None = None, timeout: float = 5.0
) -> HttpsOutcome:
    """A TLS handshake with the portal, presenting no certificate; ``max_version`` below TLS
    1.2 lowers the client's floor and security level so that it really offers the old
    version."""
    host, port = portal_address(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old TLS is the point
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    requested: list[bool] = []
    observable = hasattr(ctx, "_msg_callback")
    if observable:

        def seen(
            conn: Any, direction: str, version: Any, content: Any, msg: Any, data: Any
        ) -> None:
            handshake = direction == "read" and int(content) == _HANDSHAKE
            if handshake and int(msg) == _CERTIFICATE_REQUEST:
                requested.append(True)

        ctx._msg_callback = seen  # type: ignore[attr-defined]  # CPython's TLS message hook
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return HttpsOutcome(False, error=f"TCP connection failed: {exc}")
    with raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            return HttpsOutcome(False, error=f"handshake failed: {_describe(exc)}")
        with tls:
            return HttpsOutcome(
                True,
                version=tls.version() or "",
                cipher=(tls.cipher() or ("", "", 0))[0],
                chain=_peer_chain(tls),
                client_cert_requested=bool(requested) if observable else None,
            )


def verifies_with_system_roots(url: str, timeout: float = 5.0) -> str:
    """ "" when the portal's certificate verifies against this machine's trust store for its
    host name, else why not (a trial portal's self-signed certificate does not)."""
    host, port = portal_address(url)
    ctx = ssl.create_default_context()
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return ""
    except (ssl.SSLError, OSError) as exc:
        return _describe(exc)


def certificate_problem(cert: x509.Certificate, now: dt.datetime | None = None) -> str:
    """Why the portal's leaf certificate cannot serve now, or ""."""
    now = now or dt.datetime.now(dt.UTC)
    if now < cert.not_valid_before_utc:
        return f"it is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if now > cert.not_valid_after_utc:
        return f"it expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return ""


def client(timeout_s: float) -> aiohttp.ClientSession:
    """A member of the public's HTTP client: no client certificate, no cookies kept, each
    request bounded by ``timeout_s``."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=False, limit=32),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
