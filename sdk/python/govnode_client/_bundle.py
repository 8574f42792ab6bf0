"""The client bundle ``govnode agency add`` writes, and the channel built from it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio

#: The files of a bundle (node.pki writes them): the agency's private key, its certificate
#: with the issuing CA after it, and the province root that signed the node's certificate.
KEY_FILE = "client.key"
CERT_FILE = "client.crt"
CA_FILE = "ca.crt"
#: Optional: the node's address (HOST:PORT), one line; `govnode agency add --endpoint` writes it.
ENDPOINT_FILE = "endpoint"
#: Used when neither the caller nor the bundle names the node.
ENDPOINT_ENV = "GOVNODE_ENDPOINT"

#: A PEM file of a bundle is a few KiB; anything far larger is not one.
_MAX_PEM_BYTES = 1024 * 1024
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class BundleError(ValueError):
    """The bundle directory lacks a file, or names no endpoint."""


@dataclass(frozen=True)
class Bundle:
    """An agency system's credentials: PEM bytes, and the node's address when known."""

    key: bytes
    chain: bytes
    root: bytes
    endpoint: str

    @classmethod
    def read(cls, path: str | os.PathLike[str], endpoint: str | None = None) -> Bundle:
        directory = Path(path)
        key, chain, root = (_pem(directory / name) for name in (KEY_FILE, CERT_FILE, CA_FILE))
        address = endpoint or _endpoint_file(directory) or os.environ.get(ENDPOINT_ENV, "")
        if not address:
            raise BundleError(
                f"no endpoint: pass endpoint='HOST:PORT', write it into {directory / ENDPOINT_FILE}"
                f" or set {ENDPOINT_ENV}"
            )
        return cls(key=key, chain=chain, root=root, endpoint=address.strip())


def _pem(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(
            f"{path} is missing: a bundle directory holds {KEY_FILE}, {CERT_FILE} and {CA_FILE}"
            " (as `govnode agency add --out DIR` writes them)"
        ) from None
    if len(data) > _MAX_PEM_BYTES or b"-----BEGIN " not in data:
        raise BundleError(f"{path} is not a PEM file")
    return data


def _endpoint_file(directory: Path) -> str:
    path = directory / ENDPOINT_FILE
    if not path.is_file():
        return ""
    with path.open("r", encoding="ascii") as file:
        return file.read(300).strip()


def channel_options() -> list[tuple[str, int | str]]:
    """Keepalive within what a govnode server allows (it refuses pings more often than every
    10 s, and sends its own every 60 s), so that a dead connection is found in about 80 s and
    an idle one is not ended for pinging too often; message sizes as the node's defaults.
    Retries are the SDK's (govnode_client._calls), not gRPC's service-config ones."""
    return [
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ]


def secure_channel(bundle: Bundle) -> grpc.aio.Channel:
    """A mutual-TLS channel to the bundle's node: the node's certificate is checked against
    the province root, and the agency's certificate is the client certificate."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=bundle.root, private_key=bundle.key, certificate_chain=bundle.chain
    )
    return grpc.aio.secure_channel(bundle.endpoint, credentials, options=channel_options())
