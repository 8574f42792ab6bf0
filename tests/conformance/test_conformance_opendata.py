"""The open data cases (OPEN-nn) against a city's public portal: all pass against
`govnode portal serve` in front of a city in trial mode, and each fails against a portal that
breaks its one rule. Without a portal URL they are skipped, saying why, and the verdict is
unchanged."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from conformance.model import Outcome, RunReport
from conformance.probes import valid_citizen_id
from conformance.runner import run
from conformance.suite import all_cases
from node.cli.conformance import receipt_checker
from tests.support.broken_portals import Answer, Mutate, broken_portal
from tests.support.conformance_targets import Platform, platform
from tests.support.databases import NewDatabaseUrl
from tests.support.portal import portal_config, run_portal

OPEN_IDS = [c.info.id for c in all_cases() if c.info.group == "opendata"]


@dataclass
class WithPortal:
    plat: Platform
    portal: str

    def options(self, portal: str | None = None, **overrides: Any) -> Any:
        return self.plat.options(
            portal=portal or self.portal,
            check_receipt=receipt_checker(self.plat.root, self.plat.tester),
            **overrides,
        )


@contextlib.asynccontextmanager
async def city_with_portal(
    base: Path, db_urls: NewDatabaseUrl, opendata: dict[str, Any] | None = None
) -> AsyncIterator[WithPortal]:
    """Province + 福州 (not approved: open data in trial mode) and `govnode portal serve` in
    front of the city."""
    sections = {"opendata": opendata} if opendata else None
    async with platform(base, await db_urls(), await db_urls(), city_sections=sections) as plat:
        config = portal_config(plat.city, plat.nodes["city"], base / "portal")
        async with run_portal(config) as running:
            yield WithPortal(plat, running.url)


def summary(report: RunReport) -> str:
    return "\n".join(
        f"{r.case.id} {r.outcome.value}: {r.reason} | {r.evidence}" for r in report.results
    )


def by_id(report: RunReport) -> dict[str, Any]:
    return {r.case.id: r for r in report.results}


async def test_the_open_data_cases_pass_against_a_city_portal(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    async with city_with_portal(tmp_path, db_urls) as city:
        report = await run(city.options(), only=OPEN_IDS)
    results = by_id(report)
    for case_id in OPEN_IDS:
        assert results[case_id].outcome is Outcome.PASSED, summary(report)
    assert len(OPEN_IDS) == 7 and len(all_cases()) >= 35


async def test_without_a_portal_the_open_data_cases_are_skipped_saying_why(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    """The suite as it was: no portal URL, the open data cases skipped with the reason, and the
    verdict decided by the other cases (the open data ones are optional)."""
    async with platform(tmp_path, await db_urls(), await db_urls()) as plat:
        report = await run(plat.options(), only=[*OPEN_IDS, "CONN-03"])
    results = by_id(report)
    assert results["CONN-03"].outcome is Outcome.PASSED, summary(report)
    for case_id in OPEN_IDS:
        assert results[case_id].outcome is Outcome.SKIPPED
        assert "no portal URL given (--portal https://...)" in results[case_id].reason
        assert not results[case_id].case.mandatory
    assert not set(OPEN_IDS) & set(report.mandatory_ids)


# --- each case fails against a portal that breaks its rule -------------------------------------


def _json_without(key: str) -> Mutate:
    """The catalog without ``key`` on any node."""

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k != key}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    def mutate(request: web.Request, answer: Answer) -> Answer:
        if request.path == "/catalog.jsonld" and answer.status == 200:
            answer.body = json.dumps(drop(json.loads(answer.body))).encode()
        return answer

    return mutate


def _download_body(change: Callable[[bytes], bytes]) -> Mutate:
    def mutate(request: web.Request, answer: Answer) -> Answer:
        if request.path.endswith("/data.csv") and answer.status == 200:
            answer.body = change(answer.body)
        return answer

    return mutate


def _receipt_tampered(request: web.Request, answer: Answer) -> Answer:
    receipt = answer.headers.get("Govnode-Receipt", "")
    if receipt:
        raw = bytearray(base64.urlsafe_b64decode(receipt + "=" * (-len(receipt) % 4)))
        at = raw.find(b"csv")  # the format the receipt states, under the node's signature
        raw[at : at + 3] = b"tsv"
        answer.headers["Govnode-Receipt"] = base64.urlsafe_b64encode(bytes(raw)).decode()
    return answer


def _refusals_served(request: web.Request, answer: Answer) -> Answer:
    """授权开放 served without a (valid) key: every 401/403 becomes a 200."""
    if answer.status in (401, 403):
        return Answer(200, {"Content-Type": "text/csv"}, b"probe_key,bz\r\n")
    return answer


def _answer(path_test: Callable[[web.Request], bool], response: Callable[[], web.Response]) -> Any:
    async def intercept(request: web.Request) -> web.Response | None:
        return response() if path_test(request) else None

    return intercept


def _metadata(request: web.Request) -> bool:
    parts = request.path.split("/")
    return len(parts) == 5 and request.path.startswith("/api/v1/datasets/")


CLEAR_ID = valid_citizen_id("11010519491231002")
#: label -> (the case, what its reason says, how the portal is broken)
BROKEN: dict[str, tuple[str, str, dict[str, Any]]] = {
    "OPEN-01 TLS 1.0 accepted": ("OPEN-01", "handshake", {"old_tls": True}),
    "OPEN-01 client certificate requested": (
        "OPEN-01",
        "asks the public for a client certificate",
        {"ask_cert": True},
    ),
    "OPEN-02 no applicable legislation": (
        "OPEN-02",
        "names no dcatap:applicableLegislation",
        {"mutate": _json_without("dcatap:applicableLegislation")},
    ),
    "OPEN-03 body changed after the digest": (
        "OPEN-03",
        "Repr-Digest says",
        {"mutate": _download_body(lambda b: b.replace(b"conformance", b"Conformance", 1))},
    ),
    "OPEN-03 receipt altered": (
        "OPEN-03",
        "does not verify against the province root",
        {"mutate": _receipt_tampered},
    ),
    "OPEN-04 a citizen ID in clear": (
        "OPEN-04",
        "citizen ID with a valid check character in clear",
        {"mutate": _download_body(lambda b: b.replace(b"probe ", f"{CLEAR_ID} ".encode(), 1))},
    ),
    "OPEN-05 授权开放 served without a key": (
        "OPEN-05",
        "without a key answered 200, expected 403",
        {"mutate": _refusals_served},
    ),
    "OPEN-06 an admin console": (
        "OPEN-06",
        "/admin answered 200, expected 404",
        {"intercept": _answer(lambda r: r.path == "/admin", lambda: web.Response(text="admin"))},
    ),
    "OPEN-06 SQL in a filter breaks the portal": (
        "OPEN-06",
        "got 500",
        {
            "intercept": _answer(
                lambda r: r.path.endswith("/rows") and "'" in r.query_string,
                lambda: web.Response(status=500, text='syntax error near "\'"'),
            )
        },
    ),
    "OPEN-07 no limit": (
        "OPEN-07",
        "no 429 within 400 requests",
        {"intercept": _answer(_metadata, lambda: web.json_response({}))},
    ),
    "OPEN-07 429 without Retry-After": (
        "OPEN-07",
        "429 came without Retry-After",
        {"intercept": _answer(_metadata, lambda: web.json_response({}, status=429))},
    ),
}


async def test_each_open_data_case_fails_against_a_portal_that_breaks_its_rule(
    tmp_path: Path, db_urls: NewDatabaseUrl
) -> None:
    # The node's per-address budget off: a dozen runs from one address would spend it, and
    # the limit cases are judged against portals of their own.
    async with city_with_portal(tmp_path, db_urls, {"public_requests_per_minute": 0}) as city:
        # The relay itself breaks nothing: every case passes through it unchanged (OPEN-07
        # meets the real portal's limit through it).
        async with broken_portal(city.portal, tmp_path / "relay") as faithful:
            report = await run(city.options(faithful), only=OPEN_IDS)
        assert all(by_id(report)[i].outcome is Outcome.PASSED for i in OPEN_IDS), summary(report)
        for index, (label, (case_id, says, breakage)) in enumerate(BROKEN.items()):
            async with broken_portal(city.portal, tmp_path / f"broken-{index}", **breakage) as url:
                report = await run(city.options(url), only=[case_id])
            result = by_id(report)[case_id]
            assert result.outcome is Outcome.FAILED, (label, summary(report))
            assert says in result.reason, (label, result.reason)
