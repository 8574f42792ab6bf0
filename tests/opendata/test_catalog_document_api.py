"""The open catalog for the portal over the wire: one resource (GetOpenResource) as the listing
has it, and a page of the catalog as DCAT-AP 3 (GetOpenCatalogDocument) for harvesters, JSON-LD
or Turtle, in resource-code order, Hydra-paged over every served dataset, called with a portal
certificate. What is not served is NOT_FOUND; a bad format, page or page size is
INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import grpc
from govnode.v1 import opendata_pb2, opendata_pb2_grpc
from rdflib import Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCTERMS, RDF

from gateway.tls import TlsFiles
from node.app import RunningNode
from node.catalog import OpenType
from tests.opendata.test_download_api import (
    AUTHORIZED,
    TD,
    UNIVERSAL,
    WITHDRAWN,
    listing,
    open_entry,
    publish,
)
from tests.support.access import refused
from tests.support.nodes import PROVINCE, channel, make_province, start

DCAT = Namespace("http://www.w3.org/ns/dcat#")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
BASE = f"https://opendata.{TD}"
FOURTH = open_entry(10, OpenType.UNIVERSAL, name="道路名录")


async def resource(node: RunningNode, files: TlsFiles, code: str) -> Any:
    async with channel(node, files) as ch:
        return await opendata_pb2_grpc.OpenDataServiceStub(ch).GetOpenResource(
            opendata_pb2.GetOpenResourceRequest(resource_code=code)
        )


async def document(node: RunningNode, files: TlsFiles, **fields: Any) -> Any:
    async with channel(node, files) as ch:
        return await opendata_pb2_grpc.OpenDataServiceStub(ch).GetOpenCatalogDocument(
            opendata_pb2.GetOpenCatalogDocumentRequest(**fields)
        )


def parsed(reply: Any) -> Graph:
    if reply.media_type == "text/turtle":
        return Graph().parse(data=reply.document.decode(), format="turtle")
    assert reply.media_type == "application/ld+json"
    json.loads(reply.document)  # JSON first
    with warnings.catch_warnings():
        # rdflib's own JSON-LD parser builds the ConjunctiveGraph rdflib deprecates.
        warnings.filterwarnings("ignore", "ConjunctiveGraph is deprecated", DeprecationWarning)
        return Graph().parse(data=reply.document.decode(), format="json-ld")


def datasets(graph: Graph) -> list[str]:
    return sorted(
        str(graph.value(d, DCTERMS.identifier)) for d in graph.subjects(RDF.type, DCAT.Dataset)
    )


def view(graph: Graph, page: int, fmt: str = "jsonld") -> URIRef:
    iri = URIRef(f"{BASE}/catalog.{fmt}?page={page}")
    assert (iri, RDF.type, HYDRA.PartialCollectionView) in graph
    return iri


async def test_the_portal_reads_one_resource_and_the_catalog_as_dcat(
    tmp_path: Path, db_url: str
) -> None:
    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        portal = setup.portal()
        for entry in (UNIVERSAL, AUTHORIZED, WITHDRAWN, FOURTH):
            await publish(node, setup, entry, 20)
        async with channel(node, setup.authority()) as ch:
            await opendata_pb2_grpc.OpenDataServiceStub(ch).UnpublishOpenResource(
                opendata_pb2.UnpublishOpenResourceRequest(resource_code=WITHDRAWN.resource_code)
            )
        listed = (await listing(node, portal)).resources
        served = [r.entry.resource_code for r in listed]
        assert len(served) == 3 and served == sorted(served)

        # --- one resource, as listed; what is not served is NOT_FOUND ------------------------
        for one in listed:
            assert (await resource(node, portal, one.entry.resource_code)).resource == one
        withdrawn = await refused(resource(node, portal, WITHDRAWN.resource_code))
        assert withdrawn.code() is grpc.StatusCode.NOT_FOUND
        assert "its publication was withdrawn" in (withdrawn.details() or "")
        never = await refused(resource(node, portal, f"{PROVINCE}-3-999999"))
        assert never.code() is grpc.StatusCode.NOT_FOUND
        assert "never published" in (never.details() or "")
        for bad in ("", "3" * 5000):
            wrong = await refused(resource(node, portal, bad))
            assert wrong.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert (wrong.details() or "").startswith("resource_code: ")
            assert len(wrong.details() or "") < 200

        # --- the whole catalog on one page, JSON-LD and Turtle the same graph -----------------
        whole = await document(node, portal, format="jsonld")
        assert whole.total == 3
        graph = parsed(whole)
        assert datasets(graph) == served
        catalog = URIRef(f"{BASE}/catalog")
        assert (catalog, RDF.type, DCAT.Catalog) in graph
        assert len(list(graph.objects(catalog, DCAT.dataset))) == 3
        first = URIRef(f"{BASE}/dataset/{served[0]}")
        assert graph.value(first, DCTERMS.title) == Literal(listed[0].entry.name, lang="zh")
        assert graph.value(view(graph, 1), HYDRA.totalItems) == Literal(3)
        turtle = await document(node, portal, format="ttl")
        assert turtle.media_type == "text/turtle" and turtle.total == 3
        assert datasets(parsed(turtle)) == served
        assert len(parsed(turtle)) == len(graph)

        # --- pages of two, in resource-code order, with Hydra links ---------------------------
        page1 = parsed(await document(node, portal, format="jsonld", page=1, page_size=2))
        page2 = parsed(await document(node, portal, format="jsonld", page=2, page_size=2))
        assert datasets(page1) == served[:2] and datasets(page2) == served[2:]
        assert page1.value(view(page1, 1), HYDRA.next) == URIRef(f"{BASE}/catalog.jsonld?page=2")
        assert page2.value(view(page2, 2), HYDRA.next) is None
        # Past the last page: empty, linking back to the first and last.
        beyond = await document(node, portal, format="jsonld", page=5, page_size=2)
        assert beyond.total == 3
        page5 = parsed(beyond)
        assert datasets(page5) == []
        last = URIRef(f"{BASE}/catalog.jsonld?page=2")
        assert page5.value(view(page5, 5), HYDRA.last) == last
        assert page5.value(view(page5, 5), HYDRA.previous) == last
        assert page5.value(view(page5, 5), HYDRA.next) is None

        # --- refusals naming the field --------------------------------------------------------
        for fields, name in (
            ({"format": "rdf"}, "format"),
            ({"format": ""}, "format"),
            ({"format": "jsonld", "page": -1}, "page"),
            ({"format": "jsonld", "page_size": -1}, "page_size"),
        ):
            status = await refused(document(node, portal, **fields))
            assert status.code() is grpc.StatusCode.INVALID_ARGUMENT, fields
            assert (status.details() or "").startswith(f"{name}: "), status.details()
        huge = await refused(document(node, portal, format="x" * 10_000))
        assert len(huge.details() or "") < 200
    finally:
        await node.stop(grace=0)
