"""TLS credentials for nodes and clients: mutual TLS only, TLS 1.2 or newer.

gRPC's BoringSSL refuses TLS below 1.2 by default and we never open a plaintext port, so the
only knobs here are which key, chain and trust anchor to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files one party needs: its key, its chain (leaf first) and the province root."""

    key: Path
    chain: Path
    root: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        missing = [str(p) for p in (self.key, self.chain, self.root) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"TLS file(s) not found: {', '.join(missing)}")
        return self.key.read_bytes(), self.chain.read_bytes(), self.root.read_bytes()


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate on every connection."""
    key, chain, root = files.read()
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=root, require_client_auth=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client credentials presenting our certificate chain and trusting only the root."""
    key, chain, root = files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )


def join_server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials for the province's join port: TLS WITHOUT a client certificate.

    A joining city has no certificate yet; it authenticates by its one-time invitation (the
    guard lets only FederationService/Join through without a client certificate, see
    ``gateway.interceptors.TOKEN_AUTHORISED_METHODS``). The chain presented is the node's
    chain plus the province root, so the city can pin the root by its fingerprint before it
    sends anything.
    """
    key, chain, root = files.read()
    if not chain.endswith(b"\n"):
        chain += b"\n"
    return grpc.ssl_server_credentials(
        [(key, chain + root)], root_certificates=None, require_client_auth=False
    )
