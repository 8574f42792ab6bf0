"""The open catalog as DCAT-AP 3 (node.opendata._dcat): the JSON-LD and the Turtle of a page
are the same graph (parsed with rdflib), it satisfies shapes written from the DCAT-AP 3
mandatory and recommended properties (pyshacl), 普遍开放/授权开放, the update cycle and the
Measures map onto the EU vocabularies, Hydra paging reads as ckanext-dcat and uData read it,
and no catalog text can break out of a literal or an IRI."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from pyshacl import validate
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import DCTERMS, FOAF, RDF, RDFS, SH, XSD

from node.catalog import DataType, OpenType, UpdateCycle
from node.opendata import Publisher, Served, catalog_jsonld, catalog_turtle
from node.opendata._dcat import ACCESS_RIGHTS, FREQUENCY
from tests.support.entries import agency_code, item, make_entry

# DCAT 3 (dcat:version): rdflib's DCAT is DCAT 2.
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCATAP = Namespace("http://data.europa.eu/r5r/")
ELI = Namespace("http://data.europa.eu/eli/ontology#")
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
EU = "http://publications.europa.eu/resource/authority/"
SHAPES = Graph().parse(Path(__file__).with_name("dcat_ap_shapes.ttl"), format="turtle")

BASE = "https://opendata.fz.gov.cn"
ACQUIRED = dt.datetime(2026, 11, 1, 8, 30, 15, tzinfo=dt.UTC)
HOSTILE = 'ends """ here" > <https://evil.example/> . \\ \n\r\t\x07 "@zh ; dct:title "x'


def served(
    n: int,
    open_type: OpenType = OpenType.UNIVERSAL,
    update_cycle: UpdateCycle = UpdateCycle.MONTHLY,
    **fields: Any,
) -> Served:
    entry = make_entry(
        n,
        name=fields.pop("name", "道路名录"),
        summary=fields.pop("summary", "全市道路的名称、起止点与长度"),
        industry_category="交通运输",
        open_type=open_type,
        update_cycle=update_cycle,
        items=(
            item("dlmc", title="道路名称"),
            item("cd", title="长度", data_type=DataType.DECIMAL),
        ),
        **fields,
    )
    return Served(
        entry=entry,
        version=3,
        made_at=ACQUIRED,
        rows=120,
        dataset_iri=f"{BASE}/dataset/{entry.resource_code}",
        source=f"来源：{entry.provider_name}，数据资源：{entry.name}（{entry.resource_code}）",
    )


PAGE = [
    served(1),
    served(2, OpenType.AUTHORIZED, UpdateCycle.REALTIME, name='企业"年报"', summary=HOSTILE),
]


def page_args(**overrides: Any) -> dict[str, Any]:
    return {
        "base_url": BASE,
        "publisher_name": "福州市大数据管理局",
        "region": "350100",
        "page": 1,
        "page_size": 2,
        "total": 5,
    } | overrides


def jsonld_graph(datasets: list[Served] = PAGE, **overrides: Any) -> Graph:
    document = catalog_jsonld(datasets, **page_args(**overrides))
    with warnings.catch_warnings():
        # rdflib's own JSON-LD parser builds the ConjunctiveGraph rdflib deprecates.
        warnings.filterwarnings("ignore", "ConjunctiveGraph is deprecated", DeprecationWarning)
        return Graph().parse(data=json.dumps(document, ensure_ascii=False), format="json-ld")


def turtle_graph(datasets: list[Served] = PAGE, **overrides: Any) -> Graph:
    return Graph().parse(data=catalog_turtle(datasets, **page_args(**overrides)), format="turtle")


def problems(graph: Graph) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The (focus node's class, path) of each violation and of each warning."""
    _, report, _ = validate(graph, shacl_graph=SHAPES, inference="none", allow_warnings=True)
    assert isinstance(report, Graph)
    found: dict[URIRef, set[tuple[str, str]]] = {SH.Violation: set(), SH.Warning: set()}
    for result in report.subjects(RDF.type, SH.ValidationResult):
        focus = report.value(result, SH.focusNode)
        kind = graph.value(focus, RDF.type)
        path = report.value(result, SH.resultPath)
        severity = report.value(result, SH.resultSeverity)
        assert isinstance(severity, URIRef)
        assert isinstance(kind, URIRef) and isinstance(path, URIRef)
        found[severity].add((graph.qname(kind), graph.qname(path)))
    return found[SH.Violation], found[SH.Warning]


def dataset_iri(n: int) -> URIRef:
    return URIRef(PAGE[n].dataset_iri)


# --- one graph, two serialisations -----------------------------------------------------------


def test_the_json_ld_and_the_turtle_hold_the_same_graph() -> None:
    jsonld, turtle = jsonld_graph(), turtle_graph()
    # Each pages in its own format; otherwise the graphs are the same.
    pages = Graph()
    for triple in turtle:
        pages.add(
            tuple(  # type: ignore[arg-type]
                URIRef(str(t).replace("/catalog.ttl?", "/catalog.jsonld?"))
                if isinstance(t, URIRef)
                else t
                for t in triple
            )
        )
    assert len(jsonld) == len(turtle) > 100
    assert isomorphic(jsonld, pages)
    assert not any(".ttl" in str(t) for triple in jsonld for t in triple)


def test_the_page_satisfies_the_dcat_ap_shapes_and_says_what_it_leaves_out() -> None:
    violations, warnings = problems(jsonld_graph())
    assert violations == set()
    # The recommendations not met, each for a reason the README gives: no licence document
    # (the terms are the ODRL policies and the Measures), no contact details in a catalog
    # entry, no EU data theme or time coverage, no catalog-wide dates on one page, no
    # availability commitment, no JSON Lines concept in the EU file-type table, and no
    # publisher type known for a providing agency.
    assert warnings == {
        ("dcat:Catalog", "dct:license"),
        ("dcat:Catalog", "dct:issued"),
        ("dcat:Catalog", "dct:modified"),
        ("dcat:Catalog", "dcat:themeTaxonomy"),
        ("dcat:Dataset", "dcat:contactPoint"),
        ("dcat:Dataset", "dct:temporal"),
        ("dcat:Dataset", "dcat:theme"),
        ("dcat:Distribution", "dcatap:availability"),
        ("dcat:Distribution", "dct:license"),
        ("dcat:Distribution", "dct:format"),
        ("foaf:Agent", "dct:type"),
    }


def test_the_shapes_reject_a_dataset_without_a_title() -> None:
    graph = jsonld_graph()
    graph.remove((dataset_iri(0), DCTERMS.title, None))
    violations, _ = problems(graph)
    assert violations == {("dcat:Dataset", "dct:title")}


def test_the_shapes_reject_a_distribution_without_an_access_url() -> None:
    graph = jsonld_graph()
    distribution = URIRef(f"{PAGE[0].dataset_iri}/distribution/csv")
    graph.remove((distribution, DCAT.accessURL, None))
    violations, _ = problems(graph)
    assert violations == {("dcat:Distribution", "dcat:accessURL")}


def test_the_shapes_reject_a_title_without_a_language_and_an_agent_without_a_name() -> None:
    graph = jsonld_graph()
    graph.set((dataset_iri(0), DCTERMS.title, Literal("道路名录")))
    graph.remove((URIRef(f"{BASE}/publisher"), FOAF.name, None))
    violations, _ = problems(graph)
    assert violations == {("dcat:Dataset", "dct:title"), ("foaf:Agent", "foaf:name")}


# --- what the Measures say, in the EU vocabularies --------------------------------------------


def test_access_rights_policies_frequency_and_legislation() -> None:
    graph = jsonld_graph()
    universal, authorized = dataset_iri(0), dataset_iri(1)
    assert graph.value(universal, DCTERMS.accessRights) == URIRef(EU + "access-right/PUBLIC")
    assert graph.value(authorized, DCTERMS.accessRights) == URIRef(EU + "access-right/RESTRICTED")
    assert graph.value(universal, DCTERMS.accrualPeriodicity) == URIRef(EU + "frequency/MONTHLY")
    assert graph.value(authorized, DCTERMS.accrualPeriodicity) == URIRef(
        EU + "frequency/UPDATE_CONT"
    )

    law = URIRef(f"{BASE}/legislation/fujian-government-data-measures")
    assert graph.value(universal, DCATAP.applicableLegislation) == law
    assert (law, RDF.type, ELI.LegalResource) in graph
    assert graph.value(law, DCTERMS.title) == Literal("福建省政务数据管理办法", lang="zh")

    # 授权开放: use needs the authority's consent (an approved application); both cite the
    # source and date (第三十五条).
    def duties(n: int) -> set[object]:
        distribution = URIRef(f"{PAGE[n].dataset_iri}/distribution/jsonl")
        policy = graph.value(distribution, ODRL.hasPolicy)
        permission = graph.value(policy, ODRL.permission)
        assert graph.value(permission, ODRL.action) == ODRL.use
        return {graph.value(d, ODRL.action) for d in graph.objects(permission, ODRL.duty)}

    assert duties(0) == {ODRL.attribute}
    assert duties(1) == {ODRL.attribute, ODRL.obtainConsent}
    publisher = URIRef(f"{BASE}/publisher")
    consent = next(
        d
        for d in graph.objects(None, ODRL.duty)
        if graph.value(d, ODRL.action) == ODRL.obtainConsent
    )
    assert graph.value(consent, ODRL.consentingParty) == publisher


@pytest.mark.parametrize("cycle", list(UpdateCycle))
def test_every_update_cycle_has_an_eu_frequency(cycle: UpdateCycle) -> None:
    graph = turtle_graph([served(7, update_cycle=cycle)])
    frequency = graph.value(URIRef(served(7).dataset_iri), DCTERMS.accrualPeriodicity)
    assert frequency == URIRef(FREQUENCY[cycle])
    assert str(frequency).startswith(EU + "frequency/")


def test_only_open_types_that_are_served_have_access_rights() -> None:
    assert set(ACCESS_RIGHTS) == {OpenType.UNIVERSAL, OpenType.AUTHORIZED}
    with pytest.raises(ValueError, match="not_open: not served"):
        catalog_jsonld([served(8, OpenType.NOT_OPEN)], **page_args())


def test_a_dataset_and_its_distributions() -> None:
    graph = turtle_graph()
    dataset = dataset_iri(0)
    code = PAGE[0].entry.resource_code
    assert graph.value(dataset, DCTERMS.identifier) == Literal(code)
    assert graph.value(dataset, DCTERMS.title) == Literal("道路名录", lang="zh")
    assert graph.value(dataset, DCTERMS.modified) == Literal(
        "2026-11-01T08:30:15Z", datatype=XSD.dateTime
    )
    assert graph.value(dataset, DCTERMS.issued) == Literal("2025-01-15", datatype=XSD.date)
    assert graph.value(dataset, DCAT.version) == Literal("3")
    assert set(graph.objects(dataset, DCAT.keyword)) == {
        Literal("交通运输", lang="zh"),
        Literal("部门信息资源", lang="zh"),
    }
    assert graph.value(dataset, DCTERMS.spatial) == URIRef(f"{BASE}/region/350100")
    assert graph.value(dataset, DCTERMS.creator) == URIRef(f"{BASE}/agency/{agency_code(1)}")
    provenance = graph.value(dataset, DCTERMS.provenance)
    assert isinstance(provenance, BNode)
    label = str(graph.value(provenance, RDFS.label))
    assert label.startswith("来源：福州市市场监督管理局")
    assert label.endswith("获取日期：2026-11-01T08:30:15Z（第三十五条）")

    csv, jsonl = (URIRef(f"{PAGE[0].dataset_iri}/distribution/{f}") for f in ("csv", "jsonl"))
    assert set(graph.objects(dataset, DCAT.distribution)) == {csv, jsonl}
    for distribution, fmt in ((csv, "csv"), (jsonl, "jsonl")):
        url = URIRef(f"{PAGE[0].dataset_iri}/download.{fmt}")
        assert graph.value(distribution, DCAT.accessURL) == url
        assert graph.value(distribution, DCAT.downloadURL) == url
    assert graph.value(csv, DCTERMS["format"]) == URIRef(EU + "file-type/CSV")
    assert graph.value(csv, DCAT.mediaType) == URIRef(
        "http://www.iana.org/assignments/media-types/text/csv"
    )
    # Neither the EU file-type table nor IANA has JSON Lines: it says what it follows instead.
    assert graph.value(jsonl, DCTERMS["format"]) is None
    assert graph.value(jsonl, DCAT.mediaType) is None
    assert graph.value(jsonl, DCTERMS.conformsTo) == URIRef("https://jsonlines.org/")
    description = str(graph.value(csv, DCTERMS.description))
    assert description.endswith("列：dlmc（道路名称）、cd（长度）")


# --- Hydra paging ------------------------------------------------------------------------------


def paging(graph: Graph) -> dict[str, str]:
    (view,) = graph.subjects(RDF.type, HYDRA.PagedCollection)
    assert (view, RDF.type, HYDRA.PartialCollectionView) in graph
    links = {str(p).removeprefix(str(HYDRA)): str(o) for p, o in graph.predicate_objects(view)}
    links.pop(str(RDF.type))
    for current, deprecated in (("next", "nextPage"), ("first", "firstPage")):
        assert links.get(deprecated) == links.get(current)
    return links


def test_hydra_paging_as_ckanext_dcat_and_udata_read_it() -> None:
    def page(n: int) -> str:
        return f"{BASE}/catalog.jsonld?page={n}"

    first = paging(jsonld_graph(page=1))
    assert first["totalItems"] == "5" and first["itemsPerPage"] == "2"
    assert (first["first"], first["last"], first["next"]) == (page(1), page(3), page(2))
    assert "previous" not in first
    middle = paging(jsonld_graph(page=2))
    assert (middle["previous"], middle["next"]) == (page(1), page(3))
    last = paging(jsonld_graph([PAGE[0]], page=3))
    assert "next" not in last and last["previous"] == page(2)
    # The catalog points at the page it is seen through.
    graph = jsonld_graph(page=2)
    assert graph.value(URIRef(f"{BASE}/catalog"), HYDRA.view) == URIRef(page(2))
    assert paging(turtle_graph(page=2))["next"] == f"{BASE}/catalog.ttl?page=3"


def test_an_empty_catalog_is_one_empty_page() -> None:
    graph = jsonld_graph([], total=0)
    links = paging(graph)
    assert links["totalItems"] == "0" and links["last"] == links["first"]
    assert "next" not in links
    assert list(graph.subjects(RDF.type, DCAT.Dataset)) == []
    violations, _ = problems(graph)
    assert violations == set()


@pytest.mark.parametrize(
    ("datasets", "overrides"),
    [
        (PAGE, {"page": 0}),
        (PAGE, {"page_size": 0}),
        (PAGE, {"total": -1}),
        (PAGE, {"page_size": 1}),  # two datasets on a page of one
        ([PAGE[0], PAGE[0]], {}),  # a dataset listed twice
        (PAGE, {"base_url": "ftp://o.example"}),
        (PAGE, {"base_url": "https://o.example/?page=1"}),
    ],
)
def test_arguments_no_page_can_have_are_refused(
    datasets: list[Served], overrides: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        catalog_turtle(datasets, **page_args(**overrides))


# --- escaping ----------------------------------------------------------------------------------


@pytest.mark.parametrize("parse", [jsonld_graph, turtle_graph])
def test_text_needing_escapes_round_trips_and_breaks_nothing(parse: Any) -> None:
    graph = parse()
    hostile = dataset_iri(1)
    assert graph.value(hostile, DCTERMS.description) == Literal(HOSTILE, lang="zh")
    assert graph.value(hostile, DCTERMS.title) == Literal('企业"年报"', lang="zh")
    assert len(list(graph.objects(hostile, DCTERMS.title))) == 1
    assert len(list(graph.objects(hostile, DCTERMS.description))) == 1
    # The same page with harmless text has exactly as many triples: nothing was injected.
    tame = [PAGE[0], served(2, OpenType.AUTHORIZED, UpdateCycle.REALTIME, name="企业年报")]
    assert len(graph) == len(parse(tame))
    assert not any("evil" in str(t) for t in graph.all_nodes() if isinstance(t, URIRef))


def test_values_inside_iris_are_percent_encoded_and_bad_iris_refused() -> None:
    odd = served(9, provider_code='91 3501>0"0{M}')
    graph = turtle_graph([odd])
    creator = graph.value(URIRef(odd.dataset_iri), DCTERMS.creator)
    assert creator == URIRef(f"{BASE}/agency/91%203501%3E0%220%7BM%7D")
    assert graph.value(creator, DCTERMS.identifier) == Literal('91 3501>0"0{M}')

    for iri in (f"{BASE}/dataset/x> <{BASE}/y", f"{BASE}/dataset/a b", "dataset/relative"):
        broken = Served(**{**served(10).__dict__, "dataset_iri": iri})
        with pytest.raises(ValueError, match="not an absolute IRI"):
            catalog_turtle([broken], **page_args())
        with pytest.raises(ValueError, match="not an absolute IRI"):
            catalog_jsonld([broken], **page_args())


def test_lone_surrogates_become_replacement_characters_in_both() -> None:
    odd = served(11, summary="坏\ud800字")
    for graph in (jsonld_graph([odd]), turtle_graph([odd])):
        assert str(graph.value(URIRef(odd.dataset_iri), DCTERMS.description)) == "坏\ufffd字"


def test_a_city_dataset_in_the_provinces_catalog_names_the_citys_authority() -> None:
    """The province's catalog lists an approved city's dataset (node.opendata._cities) under the
    city's IRI, published by the city's authority, and still satisfies the shapes."""
    city = dataclasses.replace(
        served(3),
        dataset_iri="https://opendata.fuzhou.example/dataset/350100-3-000003",
        publisher=Publisher(
            region="350100", name="福州市数据管理机构", base_url="https://opendata.fuzhou.example"
        ),
    )
    graph = jsonld_graph(
        [*PAGE, city], page_size=3, publisher_name="福建省数据管理机构", region="350000"
    )
    assert problems(graph)[0] == set()
    publisher = graph.value(URIRef(city.dataset_iri), DCTERMS.publisher)
    assert publisher == URIRef("https://opendata.fuzhou.example/publisher/350100")
    assert str(graph.value(publisher, FOAF.name)) == "福州市数据管理机构"
    assert graph.value(dataset_iri(0), DCTERMS.publisher) == URIRef(f"{BASE}/publisher")
