"""The open catalog as DCAT-AP 3 (政务数据开放目录, 第二十九条), for harvesters: JSON-LD with
Hydra paging and Turtle, one page of served datasets at a time.

One graph is built from the served datasets (node.opendata._catalog.Served) and written out
twice, so that the JSON-LD and the Turtle of a page hold the same triples (the tests parse both
with rdflib and compare them). Neither serialisation goes through an RDF library: the JSON-LD
is a dict of plain values for :func:`json.dumps`, the Turtle is text written here, every
literal escaped per the Turtle grammar (ECHAR, UCHAR) and every IRI checked for the characters
an IRIREF may not hold, so that no catalog text (a summary with three double quotes, ``>`` or
a line break) can end a literal or an IRI early.

What the Measures say maps onto DCAT-AP 3 (SEMIC release 3.0.0) as:

- 普遍开放 -> ``dct:accessRights`` access-right/PUBLIC; 授权开放 -> access-right/RESTRICTED,
  and each distribution's ``odrl:hasPolicy`` says use needs an approved application
  (第三十二条) and both ask for the source and date to be cited (第三十五条);
- 更新周期 -> ``dct:accrualPeriodicity`` from the EU frequency table;
- the Measures themselves -> ``dcatap:applicableLegislation``, an ``eli:LegalResource``;
- 数据来源 and 获取日期 (第三十五条) -> ``dct:provenance`` and ``dct:modified``.

Pure: no grpc, no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from node.catalog import Classification, OpenType, ResourceEntry, UpdateCycle
from node.opendata._catalog import FORMATS, Served

#: The prefixes of both serialisations (the JSON-LD ``@context``, the Turtle ``@prefix``es).
PREFIXES: dict[str, str] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "dcatap": "http://data.europa.eu/r5r/",
    "eli": "http://data.europa.eu/eli/ontology#",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "hydra": "http://www.w3.org/ns/hydra/core#",
    "odrl": "http://www.w3.org/ns/odrl/2/",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}

_EU = "http://publications.europa.eu/resource/authority/"
_IANA = "http://www.iana.org/assignments/media-types/"
_ODRL = PREFIXES["odrl"]

#: 更新周期 -> the EU frequency authority table. 实时 is "continuously updated": the node
#: publishes a real-time resource again within the hour when its data changed.
FREQUENCY: dict[UpdateCycle, str] = {
    UpdateCycle.REALTIME: _EU + "frequency/UPDATE_CONT",
    UpdateCycle.DAILY: _EU + "frequency/DAILY",
    UpdateCycle.WEEKLY: _EU + "frequency/WEEKLY",
    UpdateCycle.MONTHLY: _EU + "frequency/MONTHLY",
    UpdateCycle.QUARTERLY: _EU + "frequency/QUARTERLY",
    UpdateCycle.YEARLY: _EU + "frequency/ANNUAL",
    UpdateCycle.IRREGULAR: _EU + "frequency/IRREG",
}

#: 开放类型 (第三十条) -> the EU access-right table. 不予开放 is never served, so never listed.
ACCESS_RIGHTS: dict[OpenType, str] = {
    OpenType.UNIVERSAL: _EU + "access-right/PUBLIC",  # 普遍开放
    OpenType.AUTHORIZED: _EU + "access-right/RESTRICTED",  # 授权开放
}

LANGUAGE_ZH = _EU + "language/ZHO"
#: The Measures as a legal resource, under the portal's address: ``<base_url>`` + this.
LEGISLATION_PATH = "/legislation/fujian-government-data-measures"
LEGISLATION_TITLE = "福建省政务数据管理办法"

_PUBLISHER_TYPE = "http://purl.org/adms/publishertype/"

_CLASSIFICATION_KEYWORD = {
    Classification.BASIC: "基础信息资源",
    Classification.THEMATIC: "主题信息资源",
    Classification.DEPARTMENTAL: "部门信息资源",
}


@dataclass(frozen=True)
class _Format:
    label: str
    description: str
    #: The EU file-type concept, "" when the table has none (it has no JSON Lines: version
    #: 20230315 lists CSV, JSON, JSON_LD, GEOJSON but nothing line-delimited).
    file_type: str
    #: The IANA media type, "" when none is registered (JSON Lines has none).
    media_type: str
    #: The specification the file follows.
    standard: str


_FORMATS: dict[str, _Format] = {
    "csv": _Format(
        label="CSV",
        description="CSV 文件（UTF-8，RFC 4180），首行为列名",
        file_type=_EU + "file-type/CSV",
        media_type=_IANA + "text/csv",
        standard="https://www.rfc-editor.org/rfc/rfc4180",
    ),
    "jsonl": _Format(
        label="JSON Lines",
        description="JSON Lines 文件（UTF-8），每行一条记录，为数据项名称到值的 JSON 对象",
        file_type="",
        media_type="",
        standard="https://jsonlines.org/",
    ),
}
assert set(_FORMATS) == set(FORMATS), "every download format needs its DCAT description"

_POLICY = {
    OpenType.UNIVERSAL: (
        "universal",
        "普遍开放：任何人可直接获取和使用；使用时须注明数据来源和获取日期（第三十五条）。",
    ),
    OpenType.AUTHORIZED: (
        "authorized",
        "授权开放：使用须经数据管理机构批准的授权开放申请（第三十二条），凭获批申请下载；"
        "使用时须注明数据来源和获取日期（第三十五条）。",
    ),
}


# --- the graph ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Iri:
    value: str


@dataclass(frozen=True)
class _Literal:
    text: str
    lang: str = ""
    #: A prefixed name (``xsd:date``); "" for a plain string.
    datatype: str = ""


@dataclass(frozen=True)
class _Integer:
    value: int


@dataclass
class _Node:
    """A subject and its properties; with no IRI, a blank node written inside its one user."""

    iri: str = ""
    types: tuple[str, ...] = ()
    properties: list[tuple[str, _Object]] = field(default_factory=list)

    def add(self, predicate: str, *objects: _Object) -> _Node:
        self.properties.extend((predicate, o) for o in objects)
        return self


_Object = _Iri | _Literal | _Integer | _Node


def _zh(text: str) -> _Literal:
    return _Literal(text, lang="zh")


def _clean(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 document can carry) as U+FFFD: done by
    both writers, on every literal."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


# Characters an IRIREF may not hold as they are (Turtle grammar, [18]); JSON-LD IRIs are the
# same strings, so a check here keeps both serialisations honest.
_NOT_IN_IRI = frozenset('<>"{}|^`\\')


def _checked_iri(iri: str) -> str:
    bad = [c for c in iri if c in _NOT_IN_IRI or ord(c) <= 0x20 or 0xD800 <= ord(c) <= 0xDFFF]
    if bad or not urlsplit(iri).scheme:
        raise ValueError(f"not an absolute IRI a catalog may carry: {iri!r}")
    return iri


def _segment(value: str) -> str:
    """``value`` as one path segment of an IRI: anything but ``A-Za-z0-9-._~`` percent-encoded."""
    return quote(_clean(value), safe="")


def _base(base_url: str) -> str:
    base = base_url.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"base_url must be an http(s) URL without query or fragment: {base_url!r}")
    return _checked_iri(base)


def _datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("acquisition times must be timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(value: str) -> str:
    """``value`` when it is a date ``YYYY-MM-DD``, else "" (the entry's rules already insist)."""
    try:
        return dt.date.fromisoformat(value).isoformat() if len(value) == 10 else ""
    except ValueError:
        return ""


class _Builder:
    """The graph of one catalog page: its nodes in order, each IRI once."""

    def __init__(self, base: str, publisher_name: str, region: str) -> None:
        self.base = base
        self.publisher_name = publisher_name
        self.region = region
        self.nodes: dict[str, _Node] = {}
        # Vocabulary concepts are typed here so that the graph satisfies the DCAT-AP ranges on
        # its own, without the EU tables loaded next to it.
        self.concepts: dict[str, str] = {}

    def node(self, iri: str, *types: str) -> tuple[_Node, bool]:
        """The node ``iri``, and whether it was just made."""
        if iri in self.nodes:
            return self.nodes[iri], False
        made = self.nodes[iri] = _Node(_checked_iri(iri), types)
        return made, True

    def concept(self, iri: str, rdf_class: str) -> _Iri:
        self.concepts.setdefault(_checked_iri(iri), rdf_class)
        return _Iri(iri)

    @property
    def publisher(self) -> _Iri:
        return self.authority(f"{self.base}/publisher", self.publisher_name, self.region)

    def authority(self, iri: str, name: str, region: str) -> _Iri:
        """A data management authority that publishes datasets: this catalog's, or an approved
        city's whose datasets the province's catalog lists."""
        node, new = self.node(iri, "foaf:Agent", "foaf:Organization")
        if new:
            kind = "RegionalAuthority" if region.endswith("0000") else "LocalAuthority"
            node.add("foaf:name", _zh(name))
            node.add("dct:identifier", _Literal(region))
            node.add("dct:type", self.concept(_PUBLISHER_TYPE + kind, "skos:Concept"))
        return _Iri(iri)

    def provider(self, entry: ResourceEntry) -> _Iri:
        """The providing agency (数据提供单位), the dataset's creator."""
        iri = f"{self.base}/agency/{_segment(entry.provider_code)}"
        node, new = self.node(iri, "foaf:Agent", "foaf:Organization")
        if new:
            node.add("foaf:name", _zh(entry.provider_name))
            node.add("dct:identifier", _Literal(entry.provider_code))
        return _Iri(iri)

    def location(self, code: str) -> _Iri:
        iri = f"{self.base}/region/{_segment(code)}"
        node, new = self.node(iri, "dct:Location")
        if new:
            node.add("dct:identifier", _Literal(code))
            node.add("rdfs:label", _zh(f"行政区划代码 {code}（GB/T 2260）"))
        return _Iri(iri)

    @property
    def legislation(self) -> _Iri:
        iri = self.base + LEGISLATION_PATH
        node, new = self.node(iri, "eli:LegalResource")
        if new:
            node.add("dct:title", _zh(LEGISLATION_TITLE))
        return _Iri(iri)

    def policy(self, open_type: OpenType) -> _Iri:
        """The terms of every distribution of ``open_type``, as an ODRL offer by the authority."""
        name, summary = _POLICY[open_type]
        iri = f"{self.base}/policy/{name}"
        node, new = self.node(iri, "odrl:Policy", "odrl:Offer")
        if new:
            duties = [_Node().add("odrl:action", _Iri(_ODRL + "attribute"))]
            if open_type is OpenType.AUTHORIZED:
                duties.insert(
                    0,
                    _Node()
                    .add("odrl:action", _Iri(_ODRL + "obtainConsent"))
                    .add("odrl:consentingParty", self.publisher),
                )
            permission = _Node().add("odrl:action", _Iri(_ODRL + "use"))
            node.add("odrl:uid", _Iri(iri))
            node.add("odrl:assigner", self.publisher)
            node.add("odrl:permission", permission.add("odrl:duty", *duties))
            node.add("dct:description", _zh(summary))
        return _Iri(iri)

    def dataset(self, served: Served) -> _Iri:
        entry = served.entry
        if entry.open_type not in ACCESS_RIGHTS:
            raise ValueError(f"{entry.resource_code} is {entry.open_type.value}: not served")
        iri = _checked_iri(served.dataset_iri)
        node, new = self.node(iri, "dcat:Dataset")
        if not new:
            raise ValueError(f"{entry.resource_code} is listed twice")
        name, code = entry.name, entry.resource_code
        modified = _datetime(served.made_at)
        node.add("dct:identifier", _Literal(code))
        node.add("dct:title", _zh(name))
        node.add("dct:description", _zh(entry.summary or f"{name}（{code}）"))
        other = served.publisher
        node.add(
            "dct:publisher",
            self.publisher
            if other is None
            # Under the city's base and named by its region: cities left at the default
            # base_url share the province's, and their authorities are still apart.
            else self.authority(
                f"{_base(other.base_url)}/publisher/{_segment(other.region)}",
                other.name,
                other.region,
            ),
        )
        node.add("dct:creator", self.provider(entry))
        keywords = [_CLASSIFICATION_KEYWORD[entry.classification]]
        if entry.industry_category:
            keywords.insert(0, entry.industry_category)
        node.add("dcat:keyword", *map(_zh, keywords))
        node.add("dct:spatial", self.location(entry.region or entry.resource_code[:6]))
        node.add("dct:language", self.concept(LANGUAGE_ZH, "dct:LinguisticSystem"))
        if issued := _date(entry.publish_date):
            node.add("dct:issued", _Literal(issued, datatype="xsd:date"))
        node.add("dct:modified", _Literal(modified, datatype="xsd:dateTime"))
        node.add(
            "dct:accrualPeriodicity", self.concept(FREQUENCY[entry.update_cycle], "dct:Frequency")
        )
        node.add(
            "dct:accessRights",
            self.concept(ACCESS_RIGHTS[entry.open_type], "dct:RightsStatement"),
        )
        node.add("dcatap:applicableLegislation", self.legislation)
        provenance = f"{served.source}；获取日期：{modified}（第三十五条）"
        node.add(
            "dct:provenance",
            _Node(types=("dct:ProvenanceStatement",)).add("rdfs:label", _zh(provenance)),
        )
        node.add("dcat:version", _Literal(str(served.version)))
        node.add("dcat:distribution", *(self.distribution(served, fmt) for fmt in FORMATS))
        return _Iri(iri)

    def distribution(self, served: Served, fmt: str) -> _Iri:
        spec = _FORMATS[fmt]
        entry = served.entry
        iri = f"{served.dataset_iri}/distribution/{fmt}"
        url = _Iri(_checked_iri(f"{served.dataset_iri}/download.{fmt}"))
        columns = "、".join(f"{i.name}（{i.title}）" for i in entry.items)
        node, _ = self.node(iri, "dcat:Distribution")
        node.add("dct:title", _zh(f"{entry.name}（{spec.label}）"))
        node.add("dct:description", _zh(f"{spec.description}；列：{columns or '无'}"))
        node.add("dcat:accessURL", url)
        node.add("dcat:downloadURL", url)
        if spec.file_type:
            node.add("dct:format", self.concept(spec.file_type, "dct:MediaTypeOrExtent"))
        if spec.media_type:
            node.add("dcat:mediaType", self.concept(spec.media_type, "dct:MediaType"))
        node.add("dct:conformsTo", self.concept(spec.standard, "dct:Standard"))
        node.add("odrl:hasPolicy", self.policy(entry.open_type))
        return _Iri(iri)

    def graph(self) -> list[_Node]:
        concepts = [_Node(iri, (cls,)) for iri, cls in sorted(self.concepts.items())]
        return [*self.nodes.values(), *concepts]


def _catalog_graph(
    datasets: Sequence[Served],
    *,
    base_url: str,
    publisher_name: str,
    region: str,
    page: int,
    page_size: int,
    total: int,
    page_url: Callable[[str, int], str],
) -> list[_Node]:
    if page < 1 or page_size < 1 or total < 0:
        raise ValueError(f"page {page}, page_size {page_size}, total {total}: out of range")
    if len(datasets) > page_size:
        raise ValueError(f"{len(datasets)} datasets on a page of {page_size}")
    base = _base(base_url)
    build = _Builder(base, publisher_name, region)
    catalog, _ = build.node(f"{base}/catalog", "dcat:Catalog")
    name = build.publisher_name
    catalog.add("dct:title", _zh(f"{name}政务数据开放目录"))
    catalog.add(
        "dct:description",
        _zh(
            f"{name}（行政区划代码 {region}）依《{LEGISLATION_TITLE}》开放的政务数据："
            "普遍开放的可直接下载，授权开放的须经批准的申请（第三十二条）；"
            "使用时须注明数据来源和获取日期（第三十五条）。"
        ),
    )
    catalog.add("dct:publisher", build.publisher)
    catalog.add("foaf:homepage", build.concept(f"{base}/", "foaf:Document"))
    catalog.add("dct:language", build.concept(LANGUAGE_ZH, "dct:LinguisticSystem"))
    catalog.add("dct:spatial", build.location(region))
    catalog.add("dcatap:applicableLegislation", build.legislation)
    catalog.add("dcat:dataset", *(build.dataset(served) for served in datasets))

    # Paging as ckanext-dcat writes and reads it (hydra:PagedCollection with both the current
    # and the deprecated predicates) and as uData reads it (hydra:PartialCollectionView,
    # hydra:next): one node of both classes satisfies both harvesters.
    last = max(1, math.ceil(total / page_size))
    view, _ = build.node(
        page_url(base, page), "hydra:PagedCollection", "hydra:PartialCollectionView"
    )
    view.add("hydra:totalItems", _Integer(total))
    view.add("hydra:itemsPerPage", _Integer(page_size))
    links = [("first", "firstPage", 1), ("last", "lastPage", last)]
    if page < last:
        links.append(("next", "nextPage", page + 1))
    if page > 1:
        links.append(("previous", "previousPage", min(page - 1, last)))
    for current, deprecated, number in links:
        target = _Iri(_checked_iri(page_url(base, number)))
        view.add(f"hydra:{current}", target).add(f"hydra:{deprecated}", target)
    catalog.add("hydra:view", _Iri(view.iri))
    return build.graph()


def _jsonld_page(base: str, page: int) -> str:
    return f"{base}/catalog.jsonld?page={page}"


def _turtle_page(base: str, page: int) -> str:
    return f"{base}/catalog.ttl?page={page}"


def catalog_jsonld(
    datasets: Sequence[Served],
    *,
    base_url: str,
    publisher_name: str,
    region: str,
    page: int,
    page_size: int,
    total: int,
) -> dict[str, Any]:
    """Page ``page`` (from 1) of the open catalog as DCAT-AP 3 JSON-LD, for :func:`json.dumps`:
    the catalog, ``datasets`` (this page's, at most ``page_size``) with their distributions,
    and Hydra paging over ``total`` datasets, linking ``<base_url>/catalog.jsonld?page=N``.
    ValueError for arguments no catalog page can have."""
    graph = _catalog_graph(
        datasets,
        base_url=base_url,
        publisher_name=publisher_name,
        region=region,
        page=page,
        page_size=page_size,
        total=total,
        page_url=_jsonld_page,
    )
    return {"@context": dict(PREFIXES), "@graph": [_jsonld_node(n) for n in graph]}


def catalog_turtle(
    datasets: Sequence[Served],
    *,
    base_url: str,
    publisher_name: str,
    region: str,
    page: int,
    page_size: int,
    total: int,
) -> str:
    """The same page as :func:`catalog_jsonld`, as Turtle; its Hydra links are
    ``<base_url>/catalog.ttl?page=N``, so that a Turtle harvester pages in Turtle."""
    graph = _catalog_graph(
        datasets,
        base_url=base_url,
        publisher_name=publisher_name,
        region=region,
        page=page,
        page_size=page_size,
        total=total,
        page_url=_turtle_page,
    )
    head = "".join(f"@prefix {prefix}: <{iri}> .\n" for prefix, iri in PREFIXES.items())
    return head + "".join(f"\n{_turtle_iri(n.iri)}\n{_turtle_body(n, 1)} .\n" for n in graph)


# --- JSON-LD ------------------------------------------------------------------------------


def _grouped(properties: Iterable[tuple[str, _Object]]) -> dict[str, list[_Object]]:
    grouped: dict[str, list[_Object]] = {}
    for predicate, value in properties:
        grouped.setdefault(predicate, []).append(value)
    return grouped


def _jsonld_node(node: _Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.iri:
        out["@id"] = node.iri
    if node.types:
        out["@type"] = list(node.types) if len(node.types) > 1 else node.types[0]
    for predicate, values in _grouped(node.properties).items():
        written = [_jsonld_value(v) for v in values]
        out[predicate] = written if len(written) > 1 else written[0]
    return out


def _jsonld_value(value: _Object) -> Any:
    if isinstance(value, _Iri):
        return {"@id": value.value}
    if isinstance(value, _Integer):
        return value.value  # a JSON number: xsd:integer
    if isinstance(value, _Node):
        return _jsonld_node(value)
    text = _clean(value.text)
    if value.lang:
        return {"@value": text, "@language": value.lang}
    if value.datatype:
        return {"@value": text, "@type": value.datatype}
    return {"@value": text}


# --- Turtle -------------------------------------------------------------------------------

# ECHAR (Turtle grammar [159]); other control characters are written as UCHAR.
_ECHAR = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _turtle_string(text: str) -> str:
    out = []
    for c in _clean(text):
        if c in _ECHAR:
            out.append(_ECHAR[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _turtle_iri(iri: str) -> str:
    return f"<{_checked_iri(iri)}>"


def _turtle_body(node: _Node, depth: int) -> str:
    pad = "    " * depth
    lines = [f"{pad}a {', '.join(node.types)}"] if node.types else []
    for predicate, values in _grouped(node.properties).items():
        objects = ", ".join(_turtle_value(v, depth) for v in values)
        lines.append(f"{pad}{predicate} {objects}")
    return " ;\n".join(lines)


def _turtle_value(value: _Object, depth: int) -> str:
    if isinstance(value, _Iri):
        return _turtle_iri(value.value)
    if isinstance(value, _Integer):
        return str(value.value)
    if isinstance(value, _Node):
        return f"[\n{_turtle_body(value, depth + 1)}\n{'    ' * depth}]"
    text = _turtle_string(value.text)
    if value.lang:
        return f"{text}@{value.lang}"
    if value.datatype:
        return f"{text}^^{value.datatype}"
    return text
