"""The portal's one way to its node: OpenDataService over mutual TLS with the portal's
certificate (``govnode certs issue-portal``).

The node decides everything (what is served, who may read what, every budget): the portal
names the member of the public it calls for (``govnode-recipient``: ``ip:<address>``) and
passes on a 授权开放 key (``govnode-open-key``), never in a request message. A refusal comes
back as :class:`NodeRefusal`, which the HTTP side turns into a status of its own. Each call
carries the trace context of the HTTP request it serves (gateway.tracing), so the node's span
of it joins the request's trace.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import grpc
import grpc.aio
from govnode.v1 import opendata_pb2, opendata_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.channel import secure_channel
from gateway.tls import TlsFiles
from gateway.tracing import inject_current

RECIPIENT_KEY = "govnode-recipient"
OPEN_KEY = "govnode-open-key"
RETRY_AFTER_KEY = "retry-after-ms"

#: gRPC status -> HTTP status. A refusal the node explains keeps its message; the node's own
#: faults (INTERNAL, UNKNOWN) are 502 without it.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.OUT_OF_RANGE: 416,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 503,
}


@dataclass(frozen=True)
class NodeRefusal(Exception):
    """The node refused or failed a call."""

    code: str  # the gRPC status name, e.g. "NOT_FOUND"
    http_status: int
    message: str
    #: Seconds until the caller may try again (RESOURCE_EXHAUSTED), rounded up.
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def refusal_of(exc: grpc.aio.AioRpcError) -> NodeRefusal:
    code = exc.code()
    status = HTTP_STATUS.get(code, 502)
    if status == 502:
        message = "the node failed to answer this request; try again later"
    else:
        message = exc.details() or code.name
    retry_after = None
    pairs = cast(Iterable[tuple[str, str | bytes]], exc.trailing_metadata() or ())
    for key, value in pairs:
        if key == RETRY_AFTER_KEY and isinstance(value, str) and value.isdigit():
            retry_after = max(1, math.ceil(int(value) / 1000))
    if status == 429 and retry_after is None:
        retry_after = 1
    return NodeRefusal(code.name, status, message, retry_after)


@dataclass(frozen=True)
class Caller:
    """Whom the portal calls for: an address (anonymous) or a key's holder."""

    address: str
    key: str = ""

    @property
    def recipient(self) -> str:
        return f"ip:{self.address}"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        # With a key the node names its holder (key:<id>) and refuses any other recipient.
        if self.key:
            return ((OPEN_KEY, self.key),)
        return ((RECIPIENT_KEY, self.recipient),)


@dataclass(frozen=True)
class FileStart:
    """What the first chunk of a download says about the whole file."""

    size: int
    sha256: str
    receipt: bytes
    version: int
    source: str
    acquired_at: str  # RFC 3339, UTC
    dataset_iri: str


class Download:
    """A download under way: :meth:`open` reads the first chunk (the file's size, digest and
    receipt), :meth:`chunks` the bytes."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
        self._call = call
        self._stream: AsyncIterator[opendata_pb2.DownloadChunk] = call.__aiter__()
        self._first: opendata_pb2.DownloadChunk | None = None

    async def open(self) -> FileStart:
        try:
            first = await anext(self._stream)
        except grpc.aio.AioRpcError as exc:
            raise refusal_of(exc) from None
        except StopAsyncIteration:
            raise NodeRefusal("UNKNOWN", 502, "the node sent no file") from None
        self._first = first
        return FileStart(
            size=first.size,
            sha256=first.sha256,
            receipt=first.receipt,
            version=first.version,
            source=first.source,
            acquired_at=first.acquired_at.ToJsonString(),
            dataset_iri=first.dataset_iri,
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes, chunk by chunk; NodeRefusal if the node ends the stream with an error."""
        if self._first is None:
            raise RuntimeError("open() first")
        if self._first.data:
            yield self._first.data
        if self._first.last:
            return
        try:
            async for chunk in self._stream:
                if chunk.data:
                    yield chunk.data
                if chunk.last:
                    return
        except grpc.aio.AioRpcError as exc:
            raise refusal_of(exc) from None

    def cancel(self) -> None:
        self._call.cancel()


class NodeClient:
    """OpenDataService and health at the node, for the portal."""

    def __init__(
        self, target: str, tls: TlsFiles, *, server_name: str = "", timeout_s: float = 10.0
    ) -> None:
        options: list[tuple[str, int | str]] = []
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = secure_channel(
            target, tls, timeout=timeout_s, streaming_timeout=None, extra_options=options
        )
        self._stub = opendata_pb2_grpc.OpenDataServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout_s

    async def close(self) -> None:
        await self._channel.close(None)

    async def serving(self) -> bool:
        """The node answers health checks SERVING."""
        try:
            answer = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=3.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    async def _unary(self, method: str, request: object, caller: Caller | None) -> object:
        rpc = getattr(self._stub, method)
        metadata = (caller.metadata() if caller is not None else ()) + inject_current()
        try:
            return await rpc(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise refusal_of(exc) from None

    async def list_resources(
        self,
        caller: Caller,
        *,
        query: str = "",
        open_type: int = 0,
        region: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> opendata_pb2.ListOpenResourcesResponse:
        request = opendata_pb2.ListOpenResourcesRequest(
            query=query,
            open_type=open_type,  # type: ignore[arg-type]
            region=region,
            page_size=page_size,
            page_token=page_token,
        )
        answer = await self._unary("ListOpenResources", request, caller)
        assert isinstance(answer, opendata_pb2.ListOpenResourcesResponse)
        return answer

    async def get_resource(self, caller: Caller, code: str) -> opendata_pb2.OpenResource:
        request = opendata_pb2.GetOpenResourceRequest(resource_code=code)
        answer = await self._unary("GetOpenResource", request, caller)
        assert isinstance(answer, opendata_pb2.GetOpenResourceResponse)
        return answer.resource

    async def catalog_document(
        self, caller: Caller, fmt: str, page: int, page_size: int = 0
    ) -> opendata_pb2.GetOpenCatalogDocumentResponse:
        request = opendata_pb2.GetOpenCatalogDocumentRequest(
            format=fmt, page=page, page_size=page_size
        )
        answer = await self._unary("GetOpenCatalogDocument", request, caller)
        assert isinstance(answer, opendata_pb2.GetOpenCatalogDocumentResponse)
        return answer

    async def rows(
        self,
        caller: Caller,
        code: str,
        filters: Sequence[tuple[str, str]],
        *,
        items: Sequence[str] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> opendata_pb2.QueryOpenRowsResponse:
        request = opendata_pb2.QueryOpenRowsRequest(
            resource_code=code,
            filters=[opendata_pb2.FilterTerm(key=k, value=v) for k, v in filters],
            items=list(items),
            page_size=page_size,
            page_token=page_token,
        )
        answer = await self._unary("QueryOpenRows", request, caller)
        assert isinstance(answer, opendata_pb2.QueryOpenRowsResponse)
        return answer

    def download(
        self,
        caller: Caller,
        code: str,
        fmt: str,
        *,
        bom: bool = False,
        offset: int = 0,
        length: int = 0,
        timeout_s: float,
    ) -> Download:
        request = opendata_pb2.DownloadRequest(
            resource_code=code, format=fmt, bom=bom, offset=offset, length=length
        )
        call = self._stub.Download(
            request, metadata=caller.metadata() + inject_current(), timeout=timeout_s
        )
        return Download(call)

    async def apply(
        self, caller: Caller, request: opendata_pb2.ApplyOpenAccessRequest
    ) -> opendata_pb2.OpenApplication:
        answer = await self._unary("ApplyOpenAccess", request, caller)
        assert isinstance(answer, opendata_pb2.ApplyOpenAccessResponse)
        return answer.application

    async def application(
        self, caller: Caller, application_id: str
    ) -> opendata_pb2.OpenApplication:
        request = opendata_pb2.GetOpenApplicationRequest(id=application_id)
        answer = await self._unary("GetOpenApplication", request, caller)
        assert isinstance(answer, opendata_pb2.GetOpenApplicationResponse)
        return answer.application

    async def file_use_report(
        self, caller: Caller, *, key: str, period: int, text: str, request_id: str
    ) -> opendata_pb2.UseReport:
        request = opendata_pb2.FileUseReportRequest(
            key=key, period=period, text=text, request_id=request_id
        )
        answer = await self._unary("FileUseReport", request, caller)
        assert isinstance(answer, opendata_pb2.FileUseReportResponse)
        return answer.report
