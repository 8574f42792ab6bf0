"""The province reading an approved city's open catalog (第三十一条), for its own listing
(node.opendata._cities).

The province calls the city's ListOpenResources as itself (its node certificate, no caller
assertion: it asks for no one), over the channel and circuit breaker it forwards calls to that
city with (gateway.forward), one page after another, all within ``within_s`` and within the
bounds of what it keeps of a city.
"""

from __future__ import annotations

import time

from govnode.v1 import common_pb2, opendata_pb2

from node.catalog import OpenType
from node.federation import Router
from node.opendata import MAX_CITY_BYTES, MAX_CITY_DATASETS, CityDataset

_METHOD = "/govnode.v1.OpenDataService/ListOpenResources"
#: The largest page ListOpenResources gives.
_PAGE = 200
#: The whole listing of a city is read within this (seconds), however many pages it takes.
FETCH_TIMEOUT_S = 20.0


def _open_type(number: int) -> OpenType | None:
    value = common_pb2.DESCRIPTOR.enum_types_by_name["OpenType"].values_by_number.get(number)
    name = value.name if value is not None else ""
    try:
        return OpenType(name.removeprefix("OPEN_TYPE_").lower())
    except ValueError:
        return None


def city_dataset(resource: opendata_pb2.OpenResource) -> CityDataset:
    entry = resource.entry
    return CityDataset(
        code=entry.resource_code,
        region=entry.region,
        open_type=_open_type(entry.open_type),
        name=entry.name,
        summary=entry.summary,
        provider_name=entry.provider_name,
        payload=resource.SerializeToString(),
    )


async def fetch_city_catalog(
    router: Router, region: str, *, within_s: float = FETCH_TIMEOUT_S
) -> list[CityDataset]:
    """Every dataset the node of ``region`` serves now, as it lists them (up to the bounds);
    raises when it does not answer (gateway.refusal.Refusal) or knows no endpoint."""
    endpoint, node_region = await router.endpoint_for(region)
    deadline = time.monotonic() + within_s
    found: list[CityDataset] = []
    spent = 0
    token = ""
    while True:
        reply = await router.forwarder.own_unary(
            endpoint,
            node_region,
            _METHOD,
            opendata_pb2.ListOpenResourcesRequest(page_size=_PAGE, page_token=token),
            opendata_pb2.ListOpenResourcesResponse,
            within_s=max(deadline - time.monotonic(), 0.001),
        )
        for resource in reply.resources:
            found.append(city_dataset(resource))
            spent += len(found[-1].payload)
        token = reply.next_page_token
        if not token or len(found) >= MAX_CITY_DATASETS or spent >= MAX_CITY_BYTES:
            return found
        if len(token) > 1000:  # not a token the city's own listing makes
            return found
