"""Typed callables for the node's methods: one descriptor per RPC, bound to a client's channel.

A service class (govnode_client._services) declares each method once, with its request and
response types, its default deadline and whether it may be retried; calling it sends the
request message, or one built from keyword arguments, with a request id, a deadline and the
retry policy, and turns a failed call into a :mod:`govnode_client.errors` exception.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

import grpc
import grpc.aio
from google.protobuf.message import Message

from govnode_client._retry import DEFAULT_RETRY, NO_RETRY, Retry
from govnode_client.errors import REQUEST_ID_KEY, from_rpc_error

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Item = TypeVar("Item")

Metadata = Sequence[tuple[str, str]]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: "The method's own default" for ``timeout`` and ``retry``.
DEFAULT: Any = _Default()

#: Unary calls: a read or a small write is answered in well under a second; ten leave room.
UNARY_TIMEOUT = 10.0
#: Bulk streams (Compare, Exchange, Download, Submit): long, never unbounded.
BULK_TIMEOUT = 3600.0


class Bound(Protocol):
    """What a method needs of the client it is bound to."""

    @property
    def channel(self) -> grpc.aio.Channel: ...


class Service:
    """A group of methods of one gRPC service, bound to a client."""

    def __init__(self, client: Bound) -> None:
        self._client = client

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._client.channel


@dataclass(frozen=True)
class Method(Generic[Req, Resp]):
    """One RPC: its full name, its message types, its default deadline and retry policy;
    ``idempotent``: the request has a ``request_id`` the node applies at most once, which the
    SDK fills in (a fresh UUID) when the caller leaves it empty, so that a retry is safe."""

    path: str
    request_type: type[Req]
    response_type: type[Resp]
    timeout: float | None = UNARY_TIMEOUT
    retry: Retry = DEFAULT_RETRY
    idempotent: bool = False

    def build(self, request: Req | None, fields: dict[str, Any]) -> Req:
        if request is not None and fields:
            raise TypeError(f"{self.path}: pass the request message or keyword fields, not both")
        message = request if request is not None else self.request_type(**fields)
        if not isinstance(message, self.request_type):
            raise TypeError(
                f"{self.path} takes a {self.request_type.__name__}, not a {type(message).__name__}"
            )
        if self.idempotent and not getattr(message, "request_id", "x"):
            copy = self.request_type()
            copy.CopyFrom(message)
            copy.request_id = uuid.uuid4().hex  # type: ignore[attr-defined]
            message = copy
        return message


def _metadata(request_id: str, metadata: Metadata) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_KEY, request_id), *metadata)


async def call_unary(
    channel: grpc.aio.Channel,
    method: Method[Req, Resp],
    request: Req,
    *,
    timeout: float | None,
    retry: Retry,
    metadata: Metadata = (),
) -> Resp:
    """One call, tried again as ``retry`` says within the one ``timeout`` of every attempt.
    Every attempt carries the same request id, so the node's audit log shows them together."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    request_id = uuid.uuid4().hex
    callable_ = channel.unary_unary(
        method.path,
        request_serializer=method.request_type.SerializeToString,
        response_deserializer=method.response_type.FromString,
    )
    attempt = 0
    while True:
        attempt += 1
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            response: Resp = await callable_(
                request, timeout=remaining, metadata=_metadata(request_id, metadata)
            )
            return response
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc, request_id)
        delay = retry.delay(error, attempt)
        if delay is None or (deadline is not None and loop.time() + delay >= deadline):
            raise error
        await asyncio.sleep(delay)


class Unary(Generic[Req, Resp]):
    """A unary RPC as a method of a service class."""

    def __init__(
        self,
        path: str,
        request_type: type[Req],
        response_type: type[Resp],
        *,
        timeout: float | None = UNARY_TIMEOUT,
        write: bool = False,
        idempotent: bool = False,
    ) -> None:
        retry = NO_RETRY if write and not idempotent else DEFAULT_RETRY
        self.method = Method(path, request_type, response_type, timeout, retry, idempotent)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Unary[Req, Resp]: ...
    @overload
    def __get__(self, obj: Service, owner: type[Any]) -> BoundUnary[Req, Resp]: ...
    def __get__(
        self, obj: Service | None, owner: type[Any]
    ) -> Unary[Req, Resp] | BoundUnary[Req, Resp]:
        if obj is None:
            return self
        return BoundUnary(obj, self.method)


class BoundUnary(Generic[Req, Resp]):
    def __init__(self, service: Service, method: Method[Req, Resp]) -> None:
        self._service = service
        self.method = method

    async def __call__(
        self,
        request: Req | None = None,
        /,
        *,
        timeout: float | None = DEFAULT,
        retry: Retry = DEFAULT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> Resp:
        """Call the method with ``request``, or a request built from ``fields``; ``timeout``
        in seconds for the whole call, retries included (None: no deadline)."""
        m = self.method
        return await call_unary(
            self._service.channel,
            m,
            m.build(request, fields),
            timeout=m.timeout if timeout is DEFAULT else timeout,
            retry=m.retry if retry is DEFAULT else retry,
            metadata=metadata,
        )


class Paged(Generic[Req, Resp, Item]):
    """A list RPC (page_size, page_token -> next_page_token; README "Paging"): calling it
    reads one page; ``.all(...)`` iterates over every item of every page, ``.pages(...)`` over
    the pages."""

    def __init__(
        self,
        path: str,
        request_type: type[Req],
        response_type: type[Resp],
        items: Callable[[Resp], Sequence[Item]],
        *,
        timeout: float | None = UNARY_TIMEOUT,
    ) -> None:
        self.method = Method(path, request_type, response_type, timeout, DEFAULT_RETRY)
        self.items = items

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Paged[Req, Resp, Item]: ...
    @overload
    def __get__(self, obj: Service, owner: type[Any]) -> BoundPaged[Req, Resp, Item]: ...
    def __get__(
        self, obj: Service | None, owner: type[Any]
    ) -> Paged[Req, Resp, Item] | BoundPaged[Req, Resp, Item]:
        if obj is None:
            return self
        return BoundPaged(obj, self.method, self.items)


class BoundPaged(BoundUnary[Req, Resp], Generic[Req, Resp, Item]):
    def __init__(
        self, service: Service, method: Method[Req, Resp], items: Callable[[Resp], Sequence[Item]]
    ) -> None:
        super().__init__(service, method)
        self._items = items

    async def pages(
        self,
        request: Req | None = None,
        /,
        *,
        timeout: float | None = DEFAULT,
        retry: Retry = DEFAULT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> AsyncIterator[Resp]:
        """Every page, from ``request``'s page_token (empty: the first) to the last; each
        page is one call with its own deadline and retries."""
        message = self.method.build(request, fields)
        seen: set[str] = set()
        while True:
            page = await self(message, timeout=timeout, retry=retry, metadata=metadata)
            yield page
            token: str = getattr(page, "next_page_token", "")
            if not token:
                return
            if token in seen:  # a node never repeats a token; a loop is not followed
                raise RuntimeError(f"{self.method.path}: the node repeated a page token")
            seen.add(token)
            following = self.method.request_type()
            following.CopyFrom(message)
            following.page_token = token  # type: ignore[attr-defined]
            message = following

    async def all(
        self,
        request: Req | None = None,
        /,
        *,
        timeout: float | None = DEFAULT,
        retry: Retry = DEFAULT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> AsyncIterator[Item]:
        """Every item of every page, in the list's order."""
        pages = self.pages(request, timeout=timeout, retry=retry, metadata=metadata, **fields)
        async for page in pages:
            for item in self._items(page):
                yield item


class ServerStream(Generic[Req, Resp]):
    """A server-streaming RPC: calling it gives an async iterator over the responses. Not
    retried: a stream resumes where the caller says (after_sequence, resume_token, offset)."""

    def __init__(
        self,
        path: str,
        request_type: type[Req],
        response_type: type[Resp],
        *,
        timeout: float | None = None,
    ) -> None:
        self.method = Method(path, request_type, response_type, timeout, NO_RETRY)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> ServerStream[Req, Resp]: ...
    @overload
    def __get__(self, obj: Service, owner: type[Any]) -> BoundStream[Req, Resp]: ...
    def __get__(
        self, obj: Service | None, owner: type[Any]
    ) -> ServerStream[Req, Resp] | BoundStream[Req, Resp]:
        if obj is None:
            return self
        return BoundStream(obj, self.method)


class BoundStream(Generic[Req, Resp]):
    def __init__(self, service: Service, method: Method[Req, Resp]) -> None:
        self._service = service
        self.method = method

    async def __call__(
        self,
        request: Req | None = None,
        /,
        *,
        timeout: float | None = DEFAULT,
        metadata: Metadata = (),
        **fields: Any,
    ) -> AsyncIterator[Resp]:
        """The responses, as the node sends them; leaving the loop early cancels the call."""
        m = self.method
        request_id = uuid.uuid4().hex
        call = self._service.channel.unary_stream(
            m.path,
            request_serializer=m.request_type.SerializeToString,
            response_deserializer=m.response_type.FromString,
        )(
            m.build(request, fields),
            timeout=m.timeout if timeout is DEFAULT else timeout,
            metadata=_metadata(request_id, metadata),
        )
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, request_id) from None
        finally:
            call.cancel()
