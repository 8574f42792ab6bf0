"""OpenDataService, the public's part (第二十九至三十五条): the open catalog, downloads and
the row API.

Any authenticated caller lists the open catalog, downloads 普遍开放 data and queries its rows
(the row API: node.opendata._filters): agencies, the authority, and the open data portal
(gateway.roles confines a portal to these RPCs), which serves the public. A portal names, in
the request metadata ``govnode-recipient``, the member of the public it downloads for; a
receipt names them, and for every other caller the caller itself (a header it sends is
ignored: an agency cannot make a receipt name someone else).

授权开放 data is read with the key of an approved application (第三十二条、第三十三条), sent in
the request metadata ``govnode-open-key``: never in the request message, whose bytes the
audit hook digests, and never in a log line or an audit field (only the key's id is). With a
key the recipient is its holder, ``key:<key id>``, whoever calls: a portal need not name one,
and one it names must be that same ``key:<key id>``, so that the portal's record and the
receipt never disagree. A key sent for 普遍开放 data is checked for its form only.

A download states the whole file's size, SHA-256 and receipt in its first chunk and sends the
byte range asked for (node.opendata._download). Every call of a portal spends from the budget
of the member of the public it names (node.opendata._budget; :func:`spend_budget`).

The portal serves the catalog to harvesters as DCAT-AP (GetOpenCatalogDocument, one page at a
time, node.opendata._dcat) and a dataset's page from GetOpenResource.

At the province, the open catalog also holds the served datasets of every city it approved
as an open-data sub-platform (第三十一条), as each city last listed them (node.opendata._cities),
merged with the province's own in resource-code order. GetOpenResource, Download and
QueryOpenRows of a city's dataset (its resource code starts with the city's region) are
forwarded to the city with a signed caller assertion (node.federation.Router), with the
recipient the portal names and the 授权开放 key passed on in the metadata: the city serves the
original caller, applies its own budgets and keys, and signs the receipt itself. The
province's budgets apply at the province first. A dataset of a city the province has not
approved is NOT_FOUND, naming 第三十一条: it is in no open catalog here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from govnode.v1 import common_pb2, opendata_pb2

from gateway.auth import current_peer
from gateway.identity import Identity, Role
from gateway.interceptors import add_audit_detail
from gateway.quote import quote
from gateway.refusal import Refusal
from node import paging
from node.catalog import PAGE_BYTES, OpenType
from node.codes import FUJIAN_DIVISIONS
from node.errors import DomainError, InvalidArgument, NotFound, PermissionDenied
from node.federation import Router
from node.opendata import (
    DEFAULT_PAGE_ROWS,
    FORMATS,
    MAX_FILTERS,
    MAX_PAGE_ROWS,
    Access,
    CityCatalogs,
    CityDataset,
    DownloadFile,
    FilterError,
    OpenCatalog,
    OpenData,
    OpenKeys,
    PublicBudgets,
    Publisher,
    Served,
    catalog_jsonld,
    catalog_turtle,
    check_format,
    check_range,
    key_problem,
    merge_page,
    needs_key,
    open_access,
    parse_filters,
    projection_problem,
    query_rows,
    receipt_for,
    recipient_problem,
    sign_download,
)
from node.servicers.convert import _enum_in, _ts, entry_from_proto, entry_to_proto, item_to_proto

log = structlog.get_logger("govnode.opendata")

MAX_PAGE = 200
#: GetOpenCatalogDocument's formats and their media types.
DOCUMENT_TYPES = {"jsonld": "application/ld+json", "ttl": "text/turtle"}
_CODE_CHARS = 15
#: The metadata key a portal names the member of the public it serves in.
RECIPIENT_KEY = "govnode-recipient"
#: The metadata key a 授权开放 key travels in (never the request message).
OPEN_KEY = "govnode-open-key"
_ROWS_TOKEN = "q:"  # noqa: S105  # a page token's prefix, not a secret
_SERVICE = "/govnode.v1.OpenDataService/"


def served_of_city(city: CityDataset) -> Served | None:
    """An approved city's dataset as the province's DCAT catalog describes it: published by the
    city's authority, under its own IRI; None (and logged) when the city's listing of it cannot
    be read back as an entry."""
    resource = opendata_pb2.OpenResource.FromString(city.payload)
    suffix = f"/dataset/{city.code}"
    try:
        entry = entry_from_proto(resource.entry)
    except DomainError as exc:
        log.warning("opendata.city_dataset_unreadable", resource_code=city.code, error=str(exc))
        return None
    if not resource.dataset_iri.endswith(suffix):
        log.warning("opendata.city_dataset_unreadable", resource_code=city.code, error="iri")
        return None
    name = FUJIAN_DIVISIONS.get(city.region, city.region)
    return Served(
        entry=entry,
        version=resource.version,
        made_at=resource.acquired_at.ToDatetime(tzinfo=dt.UTC),
        rows=resource.rows,
        dataset_iri=resource.dataset_iri,
        source=resource.source,
        publisher=Publisher(
            region=city.region,
            name=f"{name}数据管理机构",
            base_url=resource.dataset_iri.removesuffix(suffix),
        ),
    )


def served_to_proto(served: Served) -> opendata_pb2.OpenResource:
    entry = entry_to_proto(served.entry)
    del entry.items[:]
    for item in served.entry.items:
        full = item_to_proto(item)
        # What the public sees of an item: its name, title, type and how it was treated.
        entry.items.append(
            common_pb2.DataItem(
                name=full.name, title=full.title, data_type=full.data_type, open=full.open
            )
        )
    return opendata_pb2.OpenResource(
        entry=entry,
        source=served.source,
        acquired_at=_ts(served.made_at),
        formats=list(FORMATS),
        version=served.version,
        rows=served.rows,
        dataset_iri=served.dataset_iri,
    )


def _metadata(context: Any, name: str) -> str | None:
    """The one value of metadata ``name``, "" when it is not text, None when it is absent."""
    given = [v for k, v in context.invocation_metadata() or () if k == name]
    if not given:
        return None
    if len(given) > 1:
        raise InvalidArgument(f"{name}: give it once, not {len(given)} times")
    return given[0] if isinstance(given[0], str) else ""


def _open_key(context: Any) -> str:
    """The 授权开放 key the caller presents, "" for none; INVALID_ARGUMENT, without repeating
    it, when it cannot be a key."""
    value = _metadata(context, OPEN_KEY)
    if value is None:
        return ""
    problem = key_problem(value)
    if problem is not None:
        raise InvalidArgument(f"{OPEN_KEY}: {problem}")
    return value


def _recipient(caller: Identity, context: Any, holder: str = "") -> str:
    """Who a receipt names: a key's holder (``holder``, ``key:<key id>``), else for a portal
    the member of the public it names, else the caller."""
    named = _metadata(context, RECIPIENT_KEY) if caller.role is Role.PORTAL else None
    if holder:
        if named is not None and named != holder:
            raise InvalidArgument(
                f"{RECIPIENT_KEY}: names someone other than the holder of the key presented; "
                f"with a key the receipt names its holder, {holder}: name that or none"
            )
        return holder
    if caller.role is not Role.PORTAL:
        return caller.uri
    if named is None:
        raise InvalidArgument(
            f"{RECIPIENT_KEY}: a portal names the member of the public it downloads for in this "
            "metadata header (e.g. ip:203.0.113.9 or key:ab12cd34); the receipt names them"
        )
    problem = recipient_problem(named)
    if problem is not None:
        raise InvalidArgument(f"{RECIPIENT_KEY}: {problem}")
    return named


def spend_budget(
    budgets: PublicBudgets | None,
    caller: Identity,
    context: Any,
    recipient: str = "",
    *,
    download: bool = False,
) -> None:
    """A portal's call spends from the budget of the member of the public it is for:
    ``recipient`` when known (a key's holder, a download's recipient), else the one the portal
    names in ``govnode-recipient``, else the portal's own. Other callers have no such budget."""
    if budgets is None or caller.role is not Role.PORTAL:
        return
    if not recipient:
        named = _metadata(context, RECIPIENT_KEY)
        if named is not None:
            problem = recipient_problem(named)
            if problem is not None:
                raise InvalidArgument(f"{RECIPIENT_KEY}: {problem}")
        recipient = named or caller.uri
    budgets.spend(recipient, download=download)


def _authorized_refusal(code: str, what: str) -> PermissionDenied:
    return PermissionDenied(
        f"resource {code} is 授权开放: its data is {what} only with the key of an approved "
        f"授权开放 application (第三十二条、第三十三条), presented in the request metadata "
        f"{OPEN_KEY} (the open data portal does so for the key's holder); 普遍开放 data needs "
        "none"
    )


def _code(request_code: str) -> str:
    if not request_code:
        raise InvalidArgument("resource_code: required")
    if len(request_code) > _CODE_CHARS:
        raise InvalidArgument(f"resource_code: {quote(request_code)} is not a resource code")
    return request_code


def _rows_token(token: str) -> tuple[int, int]:
    """(version, row number) a QueryOpenRows page token continues from; (0, 0) for none."""
    if not token:
        return 0, 0
    raw = paging.decode_text(token) or ""
    version, _, after = raw.removeprefix(_ROWS_TOKEN).partition(":")
    parsed = (paging.parse_count(version), paging.parse_count(after))
    if not raw.startswith(_ROWS_TOKEN) or parsed[0] is None or parsed[1] is None:
        raise InvalidArgument("page_token: not a token from this list; omit it to start")
    return parsed[0], parsed[1]


class OpenCatalogServicer:
    def __init__(
        self,
        catalog: OpenCatalog,
        opendata: OpenData,
        identity: Identity,
        key: ec.EllipticCurvePrivateKey,
        chain_pem: str,
        keys: OpenKeys | None = None,
        budgets: PublicBudgets | None = None,
        cities: CityCatalogs | None = None,
        router: Router | None = None,
        *,
        on_download: Callable[[str], None] | None = None,
    ) -> None:
        self._catalog = catalog
        #: See Services.on_download: files served here to their end (not relayed ones).
        self._on_download = on_download
        #: The province: its approved cities' open catalogs, and the router that forwards
        #: calls on their datasets to them. None (a city): only this node's own datasets.
        self._cities = cities if router is not None else None
        self._router = router
        #: Budgets per member of the public for portals' calls; None: no budgets.
        self._budgets = budgets
        self._opendata = opendata
        #: 授权开放 keys; None: 授权开放 data is refused to everyone.
        self._keys = keys
        self._node = identity
        self._key = key
        self._chain_pem = chain_pem

    async def _access(self, served: Served, key: str, what: str) -> Access:
        """What the caller reads of ``served`` (node.opendata._access), and the key's id and
        use in the audit detail (第三十三条: the use is what the data was authorized for)."""
        if needs_key(served) and not key:
            raise _authorized_refusal(served.entry.resource_code, what)
        access = await open_access(served, self._keys, key)
        if access.scope is not None:
            add_audit_detail(key_id=access.scope.key_id, use=access.scope.use.value)
        return access

    async def _city_of(self, code: str) -> str | None:
        """The region of the approved city whose dataset ``code`` is, to forward the call to;
        None when this node serves it itself. NOT_FOUND for a city not approved (第三十一条)."""
        region = code[:6]
        if self._cities is None or region == self._node.region:
            return None
        if not (region.isascii() and region.isdigit()):
            return None  # not a resource code: this node's own catalog says NOT_FOUND
        if region not in await self._cities.approved():
            raise NotFound(
                f"resource {code} is not in the open catalog: the node of region {region} is "
                "not approved by this province as an open-data sub-platform (第三十一条), so its "
                "data is neither listed nor served here"
            )
        return region

    def _passed_on(self, caller: Identity, context: Any, key: str) -> tuple[tuple[str, str], ...]:
        """What the city needs of the caller's metadata: the 授权开放 key and the recipient a
        portal names (both checked here already), so that the city's receipt, keys and
        budgets see the member of the public the portal serves."""
        passed: list[tuple[str, str]] = []
        if key:
            passed.append((OPEN_KEY, key))
        if caller.role is Role.PORTAL:
            named = _metadata(context, RECIPIENT_KEY)
            if named is not None:
                problem = recipient_problem(named)
                if problem is not None:
                    raise InvalidArgument(f"{RECIPIENT_KEY}: {problem}")
                passed.append((RECIPIENT_KEY, named))
        return tuple(passed)

    @staticmethod
    def _unreachable(code: str, region: str, refusal: Refusal) -> Refusal:
        if refusal.code is not grpc.StatusCode.UNAVAILABLE:
            return refusal
        return Refusal(
            grpc.StatusCode.UNAVAILABLE,
            f"resource {code} is served by the open-data sub-platform of region {region}, "
            f"which cannot be reached now; try again later ({refusal.message})",
            refusal.trailing_metadata,
        )

    async def _forward(
        self, region: str, method: str, request: Any, response_type: Any, context: Any, key: str
    ) -> Any:
        assert self._router is not None
        add_audit_detail(routed_to=region)
        passed = self._passed_on(current_peer().identity, context, key)
        try:
            return await self._router.unary_to(
                region,
                _SERVICE + method,
                request,
                response_type,
                context,
                resource_code=request.resource_code,
                extra_metadata=passed,
            )
        except Refusal as refusal:
            raise self._unreachable(request.resource_code, region, refusal) from None

    async def ListOpenResources(
        self, request: opendata_pb2.ListOpenResourcesRequest, context: Any
    ) -> opendata_pb2.ListOpenResourcesResponse:
        spend_budget(self._budgets, current_peer().identity, context)
        size = paging.page_size(request.page_size, default=50, maximum=MAX_PAGE)
        after = paging.decode_text(request.page_token) if request.page_token else ""
        if after is None or len(after) > _CODE_CHARS:
            raise InvalidArgument("page_token: not a token from this list; omit it to start")
        open_type = (
            _enum_in("OpenType", request.open_type, "open_type", OpenType)
            if request.open_type
            else None
        )
        if len(request.region) > 6:
            raise InvalidArgument(f"region: {quote(request.region)} is not a division code")
        found, next_after = await self._catalog.search(
            after=after,
            limit=size,
            open_type=open_type,
            region=request.region,
            query=request.query,
        )
        page: list[Served | CityDataset] = list(found)
        if self._cities is not None and request.region != self._node.region:
            needle = request.query.strip().casefold()
            others = [
                d
                for d in await self._cities.datasets(context.time_remaining())
                if d.matches(after=after, open_type=open_type, region=request.region, needle=needle)
            ]
            page, next_after = merge_page(
                found, next_after, others, size, lambda s: s.entry.resource_code
            )
        resources: list[opendata_pb2.OpenResource] = []
        spent = 0
        for served in page:
            resource = (
                served_to_proto(served)
                if isinstance(served, Served)
                else opendata_pb2.OpenResource.FromString(served.payload)
            )
            spent += resource.ByteSize()
            if resources and spent > PAGE_BYTES:  # the page must fit in a message
                next_after = resources[-1].entry.resource_code
                break
            resources.append(resource)
        return opendata_pb2.ListOpenResourcesResponse(
            resources=resources,
            next_page_token=paging.encode_text(next_after) if next_after else "",
        )

    async def Download(
        self, request: opendata_pb2.DownloadRequest, context: Any
    ) -> AsyncIterator[opendata_pb2.DownloadChunk]:
        caller = current_peer().identity
        key = _open_key(context)
        unkeyed = "" if key else _recipient(caller, context)
        if not key:  # a portal names its recipient, and spends its budget, before any read
            spend_budget(self._budgets, caller, context, unkeyed, download=True)
        check_range(request.offset, request.length)
        code = _code(request.resource_code)
        region = await self._city_of(code)
        if region is not None:
            if key:  # the key is the city's to check: the portal's recipient, or its own
                spend_budget(self._budgets, caller, context, download=True)
            else:
                add_audit_detail(recipient=unkeyed)
            async for relayed in self._forwarded_download(region, request, context, key):
                yield relayed
            return
        obtained = dt.datetime.now(dt.UTC)
        found = await self._catalog.get(code)
        fmt = check_format(request.format, bom=request.bom)
        add_audit_detail(version=found.version, format=fmt)
        access = await self._access(found, key, "downloaded")
        served = access.served  # 授权开放: only the approved items
        recipient = _recipient(caller, context, access.holder)
        if key:
            spend_budget(self._budgets, caller, context, recipient, download=True)
        add_audit_detail(recipient=recipient)
        file = DownloadFile(self._opendata, served, fmt, bom=request.bom, whole=access.whole)
        digest = await file.digest()
        add_audit_detail(
            sha256=digest.sha256, size=digest.size, offset=request.offset, length=request.length
        )
        receipt = receipt_for(
            served,
            self._catalog.publisher,
            fmt=file.format,
            recipient=recipient,
            node=self._node.uri,
            obtained_at=obtained,
            digest=digest,
        )
        signed = sign_download(receipt, self._key, self._chain_pem)
        acquired_at = _ts(served.made_at)
        first = True
        async for chunk in file.chunks(request.offset, request.length):
            message = opendata_pb2.DownloadChunk(
                data=chunk.data,
                source=served.source,
                acquired_at=acquired_at,
                version=served.version,
                dataset_iri=served.dataset_iri,
                offset=chunk.offset,
                last=chunk.last,
            )
            if first:
                message.size = digest.size
                message.sha256 = digest.sha256
                message.receipt = signed
                first = False
            if chunk.last:
                add_audit_detail(rows=file.rows)
                if self._on_download is not None:
                    self._on_download("keyed" if key else "public")
            yield message

    async def _forwarded_download(
        self, region: str, request: opendata_pb2.DownloadRequest, context: Any, key: str
    ) -> AsyncIterator[opendata_pb2.DownloadChunk]:
        """The city's download, relayed as it comes (a chunk read from the city only once the
        previous one is taken here: gateway.forward); audited here with what the city stated
        of the file, and at the city as the call it serves."""
        assert self._router is not None
        add_audit_detail(routed_to=region, format=request.format)
        passed = self._passed_on(current_peer().identity, context, key)
        sent = 0
        chunks = self._router.stream_to(
            region,
            _SERVICE + "Download",
            request,
            opendata_pb2.DownloadChunk,
            context,
            resource_code=request.resource_code,
            # As long as its reader takes it (the city ends a stalled one): without a caller
            # deadline a large file is not cut off by the forwarder's default one.
            open_ended=True,
            extra_metadata=passed,
        )
        try:
            async for chunk in chunks:
                if sent == 0 and chunk.sha256:
                    add_audit_detail(
                        version=chunk.version,
                        sha256=chunk.sha256,
                        size=chunk.size,
                        offset=request.offset,
                        length=request.length,
                    )
                sent += len(chunk.data)
                yield chunk
        except Refusal as refusal:
            raise self._unreachable(request.resource_code, region, refusal) from None
        finally:
            add_audit_detail(relayed_bytes=sent)

    async def GetOpenResource(
        self, request: opendata_pb2.GetOpenResourceRequest, context: Any
    ) -> opendata_pb2.GetOpenResourceResponse:
        spend_budget(self._budgets, current_peer().identity, context)
        code = _code(request.resource_code)
        region = await self._city_of(code)
        if region is not None:
            forwarded: opendata_pb2.GetOpenResourceResponse = await self._forward(
                region,
                "GetOpenResource",
                request,
                opendata_pb2.GetOpenResourceResponse,
                context,
                "",
            )
            return forwarded
        served = await self._catalog.get(code)
        add_audit_detail(version=served.version)
        return opendata_pb2.GetOpenResourceResponse(resource=served_to_proto(served))

    async def GetOpenCatalogDocument(
        self, request: opendata_pb2.GetOpenCatalogDocumentRequest, context: Any
    ) -> opendata_pb2.GetOpenCatalogDocumentResponse:
        spend_budget(self._budgets, current_peer().identity, context)
        media_type = DOCUMENT_TYPES.get(request.format)
        if media_type is None:
            raise InvalidArgument(
                f"format: {quote(request.format)} is not offered; one of "
                f"{', '.join(DOCUMENT_TYPES)}"
            )
        if request.page < 0:
            raise InvalidArgument(f"page: {request.page} is negative; pages start at 1")
        page = request.page or 1
        size = paging.page_size(request.page_size, default=50, maximum=MAX_PAGE)
        # A page past the last is empty, with the Hydra links (first, last, previous) that
        # lead back: what a harvester that guessed a page number can follow.
        start = (page - 1) * size
        datasets, total = await self._catalog.page(start, size)
        if self._cities is not None:
            # An approved city's codes start with its region, so they all sort after the
            # province's own (350000-...): the merged catalog in code order is the province's
            # datasets, then the cities' as the province lists them (ListOpenResources).
            cities = await self._cities.datasets(context.time_remaining())
            city_start = max(0, start - total)
            for city in cities[city_start : city_start + size - len(datasets)]:
                served = served_of_city(city)
                if served is not None:
                    datasets.append(served)
            total += len(cities)
        publisher = self._catalog.publisher
        args: dict[str, Any] = {
            "base_url": publisher.base_url,
            "publisher_name": publisher.name,
            "region": publisher.region,
            "page": page,
            "page_size": size,
            "total": total,
        }
        if request.format == "jsonld":
            document = json.dumps(catalog_jsonld(datasets, **args), ensure_ascii=False)
        else:
            document = catalog_turtle(datasets, **args)
        add_audit_detail(page=page, datasets=len(datasets))
        return opendata_pb2.GetOpenCatalogDocumentResponse(
            document=document.encode(), media_type=media_type, total=total
        )

    async def QueryOpenRows(
        self, request: opendata_pb2.QueryOpenRowsRequest, context: Any
    ) -> opendata_pb2.QueryOpenRowsResponse:
        code = _code(request.resource_code)
        size = paging.page_size(request.page_size, default=DEFAULT_PAGE_ROWS, maximum=MAX_PAGE_ROWS)
        version, after = _rows_token(request.page_token)
        if len(request.filters) > MAX_FILTERS:  # before reading anything for them
            raise FilterError("", f"at most {MAX_FILTERS} filters, got {len(request.filters)}")
        key = _open_key(context)
        caller = current_peer().identity
        if not key:
            spend_budget(self._budgets, caller, context)
        region = await self._city_of(code)
        if region is not None:
            if key:  # the key is the city's to check: the portal's recipient, or its own
                spend_budget(self._budgets, caller, context)
            answer: opendata_pb2.QueryOpenRowsResponse = await self._forward(
                region, "QueryOpenRows", request, opendata_pb2.QueryOpenRowsResponse, context, key
            )
            return answer
        found = await self._catalog.get(code)
        add_audit_detail(version=found.version, filters=len(request.filters))
        # 授权开放: filters, projection and rows reach only the approved items.
        access = await self._access(found, key, "read")
        if key:
            spend_budget(self._budgets, caller, context, access.holder or caller.uri)
        served = access.served
        row_filter = parse_filters([(f.key, f.value) for f in request.filters], served.entry)
        items = list(request.items)
        problem = projection_problem(items, served.entry)
        if problem is not None:
            raise InvalidArgument(f"items: {problem}")
        page = await query_rows(
            self._opendata,
            served,
            row_filter,
            version=version or served.version,
            after=after,
            size=size,
            items=items,
        )
        rows: list[opendata_pb2.OpenRow] = []
        next_after = page.next_after
        spent = 0
        for number, values in page.rows:
            row = opendata_pb2.OpenRow(row=number, values=values)
            spent += row.ByteSize()
            if rows and spent > PAGE_BYTES:  # the page must fit in a message
                next_after = rows[-1].row
                break
            rows.append(row)
        add_audit_detail(rows=len(rows), scanned=page.scanned)
        return opendata_pb2.QueryOpenRowsResponse(
            rows=rows,
            next_page_token=(
                paging.encode_text(f"{_ROWS_TOKEN}{served.version}:{next_after}")
                if next_after
                else ""
            ),
            version=served.version,
            source=served.source,
            acquired_at=_ts(served.made_at),
            scanned=page.scanned,
            dataset_iri=served.dataset_iri,
        )
