"""govnode_client: a typed Python client for agency systems calling a govnode node.

    from govnode_client import Client, errors

    async with Client.from_bundle("fzga/", endpoint="node.example:7443") as gn:
        async for entry in gn.catalog.list_resources.all(provider_code=code):
            print(entry.resource_code)

Built on the generated ``govnode.v1`` messages (the request and response types), grpcio and
protobuf only. See sdk/python/README.md.
"""

from govnode_client import errors
from govnode_client._bundle import Bundle, BundleError, channel_options
from govnode_client._calls import (
    BULK_TIMEOUT,
    DEFAULT,
    UNARY_TIMEOUT,
    BoundPaged,
    BoundStream,
    BoundUnary,
    Method,
)
from govnode_client._client import Client
from govnode_client._retry import DEFAULT_RETRY, NO_RETRY, Retry
from govnode_client._submit import SubmitResult, batches_of
from govnode_client.errors import GovnodeError

__all__ = [
    "BULK_TIMEOUT",
    "DEFAULT",
    "DEFAULT_RETRY",
    "NO_RETRY",
    "UNARY_TIMEOUT",
    "BoundPaged",
    "BoundStream",
    "BoundUnary",
    "Bundle",
    "BundleError",
    "Client",
    "GovnodeError",
    "Method",
    "Retry",
    "SubmitResult",
    "batches_of",
    "channel_options",
    "errors",
]
