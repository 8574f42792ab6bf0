"""Open data cases, access (OPEN-05..07): 授权开放 needs a key, the portal opens no way to its
node's database, and its limits answer 429 (第三十二、三十三、三十七条). See
:mod:`conformance.cases.opendata` for how the cases run and what they publish."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterable

import aiohttp
from yarl import URL

from conformance.cases import Case, Failed, case
from conformance.open_portal import (
    Fetched,
    api,
    fetch,
    open_probes,
    portal_url,
)
from conformance.open_portal import short as _short
from conformance.session import Session
from conformance.web import (
    client,
)

CASES: list[Case] = []

#: Requests of OPEN-07 in flight at once: a crowd from one address, not one polite client.
BURST_CONCURRENCY = 16


# --- OPEN-05: 授权开放 needs a key ----------------------------------------------------------


def unknown_key() -> str:
    """A key in the platform's form (gok_<id>_<secret>) that no authority issued."""
    return f"gok_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


@case(
    CASES,
    "OPEN-05",
    "授权开放 is refused without a valid key",
    mandatory=False,
    article="第三十二条, 第三十三条",
    checks=(
        "With the 普遍开放 probe downloadable as a control, the 授权开放 probe's data.csv and "
        "rows answer 403 without a key, 401/403 with a well-formed key no authority issued "
        "(in X-API-Key and as a Bearer token), and no 2xx with a key in the URL; no refusal "
        "carries probe data."
    ),
)
async def authorized_needs_key(s: Session, ev: list[str]) -> str:
    """A tester cannot hold a revoked key: keys are issued only when the authority approves an
    eligible entity's application (第三十二、三十三条), which a tester cannot make. A key in the
    right form that no authority issued stands in for it: the node refuses both with
    PERMISSION_DENIED, naming the reason, and the portal must not serve either."""
    url = portal_url(s)
    probes = await open_probes(s)
    code = probes.authorized
    key = unknown_key()
    attempts: list[tuple[str, str | URL, dict[str, str], tuple[int, ...]]] = [
        ("data.csv without a key", api(url, code, "/data.csv"), {}, (403,)),
        ("rows without a key", api(url, code, "/rows"), {}, (403,)),
        (
            "data.csv with an unknown key",
            api(url, code, "/data.csv"),
            {"X-API-Key": key},
            (401, 403),
        ),
        (
            "rows with an unknown Bearer key",
            api(url, code, "/rows"),
            {"Authorization": f"Bearer {key}"},
            (401, 403),
        ),
        (
            "data.csv with the key in the URL",
            URL(api(url, code, "/data.csv")).with_query(key=key),
            {},
            (400, 401, 403),
        ),
    ]
    marker = f"open-{s.run_id}-".encode()
    async with client(s.options.call_timeout_s) as http:
        control = await fetch(http, api(url, probes.universal, "/data.csv"))
        ev.append(f"control, the 普遍开放 probe's data.csv: {control.status}")
        if control.status != 200 or marker not in control.body:
            raise Failed(
                f"the 普遍开放 probe is not served either ({control.status}), so a refusal "
                "would prove nothing"
            )
        for label, target, headers, allowed in attempts:
            got = await fetch(http, target, headers=headers)
            ev.append(f"{label}: {got.status} {_short(got.body)[:120]}")
            if marker in got.body:
                raise Failed(f"{label}: the answer ({got.status}) carries the probe's data")
            if got.status not in allowed:
                want = " or ".join(str(a) for a in allowed)
                raise Failed(f"{label} answered {got.status}, expected {want}")
    return "refused without a key, with an unknown key, and with a key in the URL"


# --- OPEN-06: no way to the database -------------------------------------------------------

#: Paths a portal that opened a way to its node's database or its files might answer.
UNDOCUMENTED = (
    "/admin",
    "/admin/",
    "/db",
    "/database",
    "/.env",
    "/.git/config",
    "/portal.toml",
    "/govnode.toml",
    "/phpmyadmin/",
    "/server-status",
    "/api/v1/sql",
    "/api/v1/query",
    "/api/v1/db",
    "/api/v1/admin",
    "/api/v1/datasets.sql",
    "/api/v2/datasets",
)
#: Path traversal: the raw path as sent (never normalised by the client); 400 or 404.
TRAVERSAL = (
    "/static/../portal.toml",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2fportal.toml",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/api/v1/datasets/..%2f..%2f..%2fetc%2fpasswd/data.csv",
    "/legislation/..%5c..%5cportal.toml",
)
#: What no answer of the portal's may contain: a passwd file, a TOML section of a node's or a
#: portal's configuration, a private key, a database's words.
LEAKS = (
    b"root:x:0:0",
    b"[portal]",
    b"[storage]",
    b"PRIVATE KEY",
    b"sqlite_master",
    b"CREATE TABLE",
)
SQL_VALUES = (
    ("probe_key__exact", "' OR '1'='1"),
    ("probe_key__exact", "x'; DROP TABLE open_rows; --"),
    ("bz__contains", "%' OR 1=1 --"),
    ("probe_key__in", "a') UNION SELECT name, sql FROM sqlite_master --"),
)


def documented(paths: Iterable[str]) -> list[re.Pattern[str]]:
    """Each OpenAPI path template as a regular expression over a request path."""
    out = []
    for template in paths:
        parts = re.split(r"\{[^}/]+\}", template)
        out.append(re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$"))
    return out


@case(
    CASES,
    "OPEN-06",
    "The portal holds no way to the node's database",
    mandatory=False,
    article="第三十一条, 第三十七条",
    checks=(
        "Paths outside /openapi.json's paths and the pages (/admin, /db, /.env, /api/v1/sql, "
        "configuration files, ...) answer 404, path traversal attempts 400 or 404, none of "
        "them with a file's or a database's content; row filters that look like SQL are "
        "values: no 5xx, no rows matched, and the dataset is whole afterwards."
    ),
)
async def no_database_route(s: Session, ev: list[str]) -> str:
    url = portal_url(s)
    async with client(s.options.call_timeout_s) as http:
        spec = await fetch(http, f"{url}/openapi.json")
        try:
            paths = list(json.loads(spec.body)["paths"])
        except (ValueError, KeyError, TypeError):
            raise Failed(
                f"/openapi.json answered {spec.status} without an OpenAPI paths object"
            ) from None
        patterns = documented(paths)
        ev.append(f"/openapi.json documents {len(paths)} paths")
        problems = []
        for path in UNDOCUMENTED + TRAVERSAL:
            plain = path.split("?")[0]
            if any(p.match(plain) for p in patterns) and path in UNDOCUMENTED:
                ev.append(f"{path}: documented, not probed")
                continue
            got = await fetch(http, URL(url + path, encoded=True))
            allowed = (404,) if path in UNDOCUMENTED else (400, 404)
            leak = next((w for w in LEAKS if w in got.body), None)
            if got.status not in allowed:
                problems.append(
                    f"{path} answered {got.status}, expected {' or '.join(map(str, allowed))}"
                )
            if leak is not None:
                problems.append(f"{path} answered with content holding {leak.decode()!r}")
        ev.append(f"{len(UNDOCUMENTED) + len(TRAVERSAL)} paths probed")
        if problems:
            ev.extend(problems)
            raise Failed(problems[0])
        probes = await open_probes(s)
        rows_url = api(url, probes.universal, "/rows")
        record = probes.records[0]
        control = await _rows(http, URL(rows_url).with_query(probe_key__exact=record.key))
        ev.append(f"control filter probe_key__exact=<a key>: {control}")
        if control != 1:
            raise Failed(
                f"the row filter does not work ({control} rows for one key), so SQL-like "
                "values would prove nothing"
            )
        for name, value in SQL_VALUES:
            matched = await _rows(http, URL(rows_url).with_query({name: value}))
            ev.append(f"{name}={value!r}: {matched}")
            if isinstance(matched, str):
                raise Failed(f"the filter {name}={value!r} got {matched}")
            if matched:
                raise Failed(
                    f"the filter {name}={value!r} matched {matched} rows: it was not taken "
                    "as a value"
                )
        whole = await _rows(http, URL(rows_url))
        if whole != len(probes.records):
            raise Failed(
                f"after the SQL-like filters the probe has {whole} rows, not {len(probes.records)}"
            )
    return "undocumented paths 404, traversal refused, SQL-like filters are values"


async def _rows(http: aiohttp.ClientSession, url: URL) -> int | str:
    """Rows matched (a 400 refusal counts as none), or what went wrong."""
    got = await fetch(http, url)
    if got.status == 400:
        return 0
    if got.status != 200:
        return f"{got.status}: {_short(got.body)}"
    try:
        return len(json.loads(got.body)["rows"])
    except (ValueError, KeyError, TypeError):
        return f"an unreadable answer: {_short(got.body)}"


# --- OPEN-07: limits -----------------------------------------------------------------------


def retry_after_ok(value: str) -> bool:
    """Retry-After is delta-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    if value.strip().isdigit():
        return True
    from email.utils import parsedate_to_datetime

    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return True


@case(
    CASES,
    "OPEN-07",
    "The portal's limits answer 429 with Retry-After",
    mandatory=False,
    article="第三十七条",
    checks=(
        "Requests for the 普遍开放 probe's metadata from one address, 16 at a time, get 429 "
        "with a valid Retry-After within --portal-requests (400) requests and 60 s; the case "
        "stops at the first 429, and any answer but 200 or 429 fails it."
    ),
)
async def limits(s: Session, ev: list[str]) -> str:
    url = portal_url(s)
    probes = await open_probes(s)
    target = api(url, probes.universal)
    bound, seconds = s.options.portal_request_bound, s.options.portal_request_seconds
    sent = ok = 0
    limited: list[Fetched] = []
    other: list[str] = []
    began = time.monotonic()
    stop_at = began + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal sent, ok
        while sent < bound and not limited and not other and time.monotonic() < stop_at:
            sent += 1
            got = await fetch(http, target, patient=False)
            if got.status == 429:
                limited.append(got)
            elif got.status == 200:
                ok += 1
            else:
                other.append(f"{got.status}: {_short(got.body)}")

    async with client(s.options.call_timeout_s) as http:
        await asyncio.gather(*(worker(http) for _ in range(BURST_CONCURRENCY)))
    elapsed = time.monotonic() - began
    ev.append(
        f"{sent} requests in {elapsed:.1f} s: {ok} OK, {len(limited)} 429, {len(other)} other"
    )
    if other:
        raise Failed(f"a request answered {other[0]}, neither 200 nor 429")
    if not limited:
        raise Failed(
            f"no 429 within {sent} requests and {elapsed:.0f} s (bound: {bound} requests, "
            f"{seconds:.0f} s; --portal-requests): the portal does not limit one address"
        )
    retry = limited[0].header("retry-after")
    ev.append(f"first 429 after {ok} OK: Retry-After {retry!r}")
    if not retry:
        raise Failed("429 came without Retry-After")
    if not retry_after_ok(retry):
        raise Failed(f"Retry-After {retry!r} is neither seconds nor an HTTP date")
    return f"429 with Retry-After {retry} after {ok} requests served"
