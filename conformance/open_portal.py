"""The public portal as the open data cases reach it: its base URL, the open data probes the
cases publish at the target, one bounded request that waits out the portal's limits, and
just enough JSON-LD to read a DCAT-AP catalog without a JSON-LD processor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from govnode.v1 import opendata_pb2
from yarl import URL

from conformance.cases import Failed, NotRunnable
from conformance.probes import OpenProbeRecord, new_open_probe_records, open_probe_entry
from conformance.session import Session, SetupFailed, rpc
from conformance.web import portal_address


def portal_url(s: Session) -> str:
    """The portal's base URL, or NotRunnable when the tester gave none."""
    url = s.options.portal.rstrip("/")
    if not url:
        raise NotRunnable(
            "no portal URL given (--portal https://...): the open data cases test a city's "
            "public portal"
        )
    try:
        portal_address(url)
    except ValueError as exc:
        raise Failed(str(exc)) from None
    return url


@dataclass
class OpenProbes:
    """The run's open data probes at the target, published."""

    universal: str  # 普遍开放
    authorized: str  # 授权开放
    records: list[OpenProbeRecord] = field(default_factory=list)


_OPEN_KEY = "open_probes"
_LOCK_KEY = "open_probes_lock"


async def open_probes(s: Session) -> OpenProbes:
    """Register, feed and publish the two open data probes at the target (once per run)."""
    lock = s.shared.setdefault(_LOCK_KEY, asyncio.Lock())
    async with lock:
        found = s.shared.get(_OPEN_KEY)
        if isinstance(found, str):
            raise SetupFailed(found)
        if isinstance(found, OpenProbes):
            return found
        try:
            made = await _set_up(s)
        except SetupFailed as exc:
            s.shared[_OPEN_KEY] = f"the open data probes could not be set up: {exc}"
            raise SetupFailed(s.shared[_OPEN_KEY]) from None
        s.shared[_OPEN_KEY] = made
        return made


async def _set_up(s: Session) -> OpenProbes:
    region = await s.target_region()
    records = new_open_probe_records(s.run_id)
    codes: dict[str, str] = {}
    for kind in ("open_universal", "open_authorized"):
        code = await s.register_probe("target", open_probe_entry(kind, region, s.run_id))
        level3 = kind == "open_authorized"
        await s.submit_records(code, [r.values(level3=level3) for r in records])
        codes[kind] = code
    published: list[str] = []

    async def unpublish() -> list[str]:
        done = []
        for code in published:
            out = await s.call(
                "target",
                rpc("OpenDataService", "UnpublishOpenResource"),
                opendata_pb2.UnpublishOpenResourceRequest(resource_code=code),
                opendata_pb2.UnpublishOpenResourceResponse,
            )
            done.append(f"unpublished {code} at the target: {out.describe()}")
        return done

    s.before_cleanup.append(unpublish)
    for code in codes.values():
        out = await s.call(
            "target",
            rpc("OpenDataService", "PublishOpenResource"),
            opendata_pb2.PublishOpenResourceRequest(resource_code=code),
            opendata_pb2.PublishOpenResourceResponse,
        )
        if not out.ok:
            raise SetupFailed(f"publishing the open data probe {code}: {out.describe()}")
        published.append(code)
    return OpenProbes(codes["open_universal"], codes["open_authorized"], records)


def api(url: str, code: str, tail: str = "") -> str:
    return f"{url}/api/v1/datasets/{quote(code, safe='')}{tail}"


@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


#: A case other than OPEN-07 that meets the portal's limit waits as told, at most this long each
#: time and this many times: a tester's run must not fail on the budget it spent itself.
PATIENCE_S = 15.0
PATIENCE_TIMES = 4


async def fetch(
    http: aiohttp.ClientSession,
    url: str | URL,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    data: bytes | None = None,
    limit: int = 16 * 1024 * 1024,
    patient: bool = True,
) -> Fetched:
    """One request; the body read up to ``limit`` bytes (a probe dataset is tiny). ``patient``:
    a 429 is waited out (Retry-After, bounded by :data:`PATIENCE_S` and
    :data:`PATIENCE_TIMES`) and the request sent again."""
    for attempt in range(PATIENCE_TIMES + 1):
        async with http.request(
            method, url, headers=headers, data=data, allow_redirects=False
        ) as response:
            body = await response.content.read(limit)
            got = Fetched(
                response.status, {k.lower(): v for k, v in response.headers.items()}, body
            )
        if got.status != 429 or not patient or attempt == PATIENCE_TIMES:
            return got
        wait = got.header("retry-after")
        await asyncio.sleep(min(PATIENCE_S, float(wait) if wait.isdigit() else 1.0))
    return got


def short(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").replace("\n", " ")


class JsonLd:
    """Just enough JSON-LD to read a catalog without a JSON-LD processor (rdflib is no run-time
    dependency): a context of prefixes and terms, nodes in ``@graph`` or nested, compact IRIs
    expanded. Remote contexts are not fetched; their terms stay as written."""

    def __init__(self, document: Any) -> None:
        if not isinstance(document, dict):
            raise ValueError("the document is not a JSON object")
        self.terms: dict[str, str] = {}
        contexts = document.get("@context", {})
        for ctx in contexts if isinstance(contexts, list) else [contexts]:
            if isinstance(ctx, dict):
                for term, value in ctx.items():
                    if isinstance(value, str):
                        self.terms[term] = value
                    elif isinstance(value, dict) and isinstance(value.get("@id"), str):
                        self.terms[term] = value["@id"]
        self.nodes: list[dict[str, Any]] = []
        top = document.get("@graph", [document])
        self._collect(top if isinstance(top, list) else [top])

    def _collect(self, values: Iterable[Any]) -> None:
        for value in values:
            if isinstance(value, list):
                self._collect(value)
            elif isinstance(value, dict) and "@value" not in value:
                if "@id" in value or "@type" in value:
                    self.nodes.append(value)
                self._collect(v for k, v in value.items() if not k.startswith("@"))

    def iri(self, term: str) -> str:
        if term in self.terms:
            return self.iri(self.terms[term]) if self.terms[term] != term else term
        prefix, sep, local = term.partition(":")
        if sep and prefix in self.terms and not local.startswith("//"):
            return self.terms[prefix] + local
        return term

    def types(self, node: dict[str, Any]) -> set[str]:
        found = node.get("@type", [])
        return {self.iri(t) for t in (found if isinstance(found, list) else [found])}

    def values(self, node: dict[str, Any], predicate: str) -> list[str]:
        """The values of ``predicate`` (a full IRI) on ``node``: IRIs expanded, literals as
        text."""
        out: list[str] = []
        for key, raw in node.items():
            if key.startswith("@") or self.iri(key) != predicate:
                continue
            for value in raw if isinstance(raw, list) else [raw]:
                if isinstance(value, dict) and "@id" in value:
                    out.append(self.iri(str(value["@id"])))
                elif isinstance(value, dict) and "@value" in value:
                    out.append(str(value["@value"]))
                elif not isinstance(value, dict | list):
                    out.append(str(value))
        return out

    def of_type(self, iri: str) -> list[dict[str, Any]]:
        return [n for n in self.nodes if iri in self.types(n)]
