"""Probes below gRPC: TCP, TLS handshakes with chosen credentials and versions, plaintext.

A mutual-TLS node must refuse an unauthenticated party during the TLS handshake, before any
HTTP/2 is spoken. Under TLS 1.3 a client sees its own handshake complete before the server
has checked the client certificate, so "the handshake worked" is not the question; the
question is whether the server then talks HTTP/2. :func:`tls_probe` answers it the same way
for every TLS version: after the handshake it sends the HTTP/2 client preface and an empty
SETTINGS frame, and reports whether a server SETTINGS frame came back.

These functions block; the runner calls them in a worker thread.
"""

from __future__ import annotations

import _ssl
import contextlib
import socket
import ssl
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, stream 0
SETTINGS_FRAME_TYPE = 0x04


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` into host and port; ValueError names the problem."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def tcp_connect(address: str, timeout: float) -> float:
    """Seconds a TCP connection to ``address`` took; raises OSError when unreachable."""
    host, port = split_address(address)
    began = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout):
        return time.perf_counter() - began


@dataclass
class TlsOutcome:
    handshake_ok: bool
    served_http2: bool  # the server answered the HTTP/2 preface with SETTINGS
    version: str = ""
    cipher: str = ""
    alpn: str = ""
    chain: list[x509.Certificate] = field(default_factory=list)  # server chain, leaf first
    error: str = ""  # why the handshake or the exchange after it failed

    @property
    def refused(self) -> bool:
        return not self.served_http2


def tls_probe(
    address: str,
    *,
    root: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
    max_version: ssl.TLSVersion | None = None,
    timeout: float = 5.0,
) -> TlsOutcome:
    """Connect with TLS presenting ``cert``/``key`` (or no certificate) and speak HTTP/2.

    ``root`` None skips verification of the server (used when the probe is about what the
    server accepts, not who it is). ``max_version`` below TLS 1.2 lowers the client's floor
    and security level so that it really offers the old version.
    """
    host, port = split_address(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if root is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(root))
        ctx.check_hostname = False  # a node is named by its SPIFFE identity, checked by callers
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    if max_version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # old TLS is the point
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = max_version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return TlsOutcome(False, False, error=f"TCP connection failed: {exc}")
    with raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            return TlsOutcome(False, False, error=f"handshake failed: {_describe(exc)}")
        with tls:
            outcome = TlsOutcome(
                True,
                False,
                version=tls.version() or "",
                cipher=(tls.cipher() or ("", "", 0))[0],
                alpn=tls.selected_alpn_protocol() or "",
                chain=_peer_chain(tls),
            )
            try:
                tls.sendall(HTTP2_PREFACE + EMPTY_SETTINGS)
                header = _read_exactly(tls, 9)
            except (ssl.SSLError, OSError) as exc:
                outcome.error = f"connection refused after the handshake: {_describe(exc)}"
                return outcome
            if header is None:
                outcome.error = "the server closed the connection after the handshake"
            elif header[3] == SETTINGS_FRAME_TYPE:
                outcome.served_http2 = True
            else:
                outcome.error = f"the server answered with an unexpected frame type {header[3]}"
            return outcome


def plaintext_probe(address: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Speak HTTP/2 without TLS: (served, what came back)."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.sendall(HTTP2_PREFACE + EMPTY_SETTINGS)
            header = _read_exactly(raw, 9)
    except OSError as exc:
        return False, f"connection ended: {exc}"
    if header is None:
        return False, "the server closed the connection without answering"
    if header[3] == SETTINGS_FRAME_TYPE and header[0] == 0:
        return True, "the server answered with an HTTP/2 SETTINGS frame in plaintext"
    if header[0] == 0x15:
        return False, "the server answered with a TLS alert"
    return False, f"the server answered with non-HTTP/2 bytes {header[:9].hex()}"


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except TimeoutError:
            return data or None
        if not chunk:
            return data or None
        data += chunk
    return data


def _peer_chain(tls: ssl.SSLSocket) -> list[x509.Certificate]:
    """The chain the server presented, leaf first (CPython's verified chain when available)."""
    sslobj = getattr(tls, "_sslobj", None)
    getter = getattr(sslobj, "get_unverified_chain", None)
    der_format = getattr(_ssl, "ENCODING_DER", None)
    if getter is not None and der_format is not None:
        with contextlib.suppress(Exception):
            ders = [c.public_bytes(der_format) for c in getter()]
            return [x509.load_der_x509_certificate(d) for d in ders]
    der = tls.getpeercert(binary_form=True)
    return [x509.load_der_x509_certificate(der)] if der else []


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace("\n", " ")[:300]
