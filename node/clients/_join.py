"""The city's side of joining online (`govnode join`): pin the province root, then call Join.

1. :func:`pinned_root` opens a plain TLS connection to the province's join port WITHOUT
   verification, reads the certificate chain the server presents (node chain plus the province
   root), picks the self-signed root and compares its SHA-256 fingerprint with the one the
   province operator gave out of band. On a mismatch nothing is sent.
2. :func:`call_join` then opens a gRPC channel that trusts ONLY that root (no client
   certificate: the city has none yet) and calls FederationService/Join with a deadline.
3. The request carries the invitation and two CSRs (:func:`build_join_request`); the keys
   stay in memory until the city directory is written, and never leave this machine.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from govnode.v1 import federation_pb2, federation_pb2_grpc

from gateway.channel import channel_options
from gateway.identity import Identity
from node.codes import Region
from node.pki import (
    CityRequests,
    PkiError,
    city_requests,
    create_joined_city,
    fingerprint,
    fingerprint_matches,
    parse_fingerprint,
)


class JoinError(Exception):
    """Joining cannot go on; the message is one line for the operator."""


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise JoinError(f"--province: {address!r} must be HOST:PORT of the province's join port")
    return host.strip("[]"), int(port)


def _presented_chain(tls: ssl.SSLSocket) -> list[x509.Certificate]:
    """Every certificate the server presented, unverified, in the order it sent them.

    Python 3.13 has the public ``SSLSocket.get_unverified_chain()`` (DER bytes); 3.10 to 3.12
    have it only on the private ``_ssl._SSLSocket`` behind ``SSLSocket._sslobj`` (returning
    ``_ssl.Certificate`` objects with ``public_bytes()``). We need the whole chain, not just
    the leaf (``getpeercert``), because the root is what we pin.
    """
    public = getattr(tls, "get_unverified_chain", None)
    if public is not None:
        return [x509.load_der_x509_certificate(der) for der in public() or []]
    sslobj: Any = getattr(tls, "_sslobj", None)
    get_chain = getattr(sslobj, "get_unverified_chain", None)
    if get_chain is None:
        raise JoinError("this Python cannot read a TLS peer's certificate chain (needs 3.10+)")
    # public_bytes() with no argument gives PEM text (ENCODING_PEM) on every version.
    return [x509.load_pem_x509_certificate(c.public_bytes().encode("ascii")) for c in get_chain()]


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def pinned_root(address: str, expected_fingerprint: str, *, timeout: float = 10.0) -> bytes:
    """The province root's PEM, read from the join port and checked against the fingerprint.

    Raises :class:`JoinError` when the port cannot be reached, presents no self-signed root,
    or its root has another fingerprint. No application data is sent on this connection.
    """
    try:
        parse_fingerprint(expected_fingerprint)
    except PkiError as exc:
        raise JoinError(f"--fingerprint: {exc}") from None
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Deliberately unverified: we do not trust anything yet, we only read the chain in order to
    # compare the root with the fingerprint given out of band. Trust comes from that match.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # gRPC servers expect HTTP/2 negotiated by ALPN
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            chain = _presented_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise JoinError(f"cannot reach the province's join port at {address}: {exc}") from None
    roots = [c for c in chain if _is_self_signed(c)]
    if not roots:
        raise JoinError(
            f"{address} presents no root certificate: is it the province's join port "
            "(federation.join_listen)?"
        )
    root = roots[-1]
    if not fingerprint_matches(root, expected_fingerprint):
        raise JoinError(
            f"the root presented at {address} has fingerprint {fingerprint(root)}, not the one "
            "given: refusing to join (nothing was sent)"
        )
    return root.public_bytes(Encoding.PEM)


def build_join_request(
    requests: CityRequests, *, token: str, region: str, name: str, listen_address: str
) -> federation_pb2.JoinRequest:
    """The JoinRequest: the invitation and the two CSRs. No private key is ever put in it."""
    ca_csr_pem, node_csr_pem = requests.csr_pems()
    return federation_pb2.JoinRequest(
        invitation_token=token,
        region=region,
        name=name,
        city_ca_csr_pem=ca_csr_pem,
        node_csr_pem=node_csr_pem,
        listen_address=listen_address,
    )


def call_join(
    address: str, root_pem: bytes, request: federation_pb2.JoinRequest, *, timeout: float = 10.0
) -> federation_pb2.JoinResponse:
    """Call Join over TLS that trusts only the pinned root; a refusal becomes a JoinError."""
    credentials = grpc.ssl_channel_credentials(root_certificates=root_pem)
    with grpc.secure_channel(address, credentials, options=channel_options()) as channel:
        stub = federation_pb2_grpc.FederationServiceStub(channel)
        try:
            response: federation_pb2.JoinResponse = stub.Join(request, timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            name = code.name if code is not None else "ERROR"
            raise JoinError(f"the province refused the join ({name}): {details}") from None
    return response


@dataclass(frozen=True)
class JoinedCity:
    config_path: Path
    identity: Identity
    root: x509.Certificate
    province_endpoint: str


def join_province(
    *,
    province: str,
    invitation: str,
    root_fingerprint: str,
    region: str,
    name: str,
    base: Path,
    listen: str,
    hosts: list[str],
    trust_domain: str,
    timeout: float = 10.0,
) -> JoinedCity:
    """``govnode join``: pin the root, send the CSRs with the invitation, write the city.

    Blocking (plain sockets and a synchronous gRPC call): async callers run it in a thread.
    Raises :class:`JoinError` for a refusal or an unusable answer; nothing is written then.
    """
    root_pem = pinned_root(province, root_fingerprint, timeout=timeout)
    requests = city_requests(region, name, trust_domain, hosts)
    request = build_join_request(
        requests, token=invitation, region=region, name=name, listen_address=listen
    )
    response = call_join(province, root_pem, request, timeout=timeout)
    root = x509.load_pem_x509_certificate(root_pem)
    try:
        answered_root = x509.load_pem_x509_certificate(response.province_root_pem.encode())
        ca_cert = x509.load_pem_x509_certificate(response.city_ca_certificate_pem.encode())
        split_address(response.province_endpoint)
    except ValueError as exc:
        raise JoinError(f"the province's answer is unusable: {exc}") from None
    if answered_root != root:
        raise JoinError("the province answered with another root than the one pinned; refusing")
    if response.trust_domain != trust_domain:
        raise JoinError(
            f"the province's trust domain is {response.trust_domain}, not {trust_domain}: "
            "run again with --trust-domain (the invitation is used; ask for a new one)"
        )
    config_path, identity = create_joined_city(
        base,
        requests,
        region=region,
        name=name,
        listen=listen,
        trust_domain=trust_domain,
        hosts=hosts,
        province_region=Region(region).province_code,
        province_endpoint=response.province_endpoint,
        root=root,
        ca_cert=ca_cert,
    )
    return JoinedCity(config_path, identity, root, response.province_endpoint)
