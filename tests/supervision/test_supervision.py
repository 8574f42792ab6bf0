"""node.supervision without a node: the periods an operator names, and how one audit record
counts (an occasion, or also a finding) for each figure."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest

from node.audit import AuditEntry, AuditLog, Operation
from node.catalog import Catalog
from node.errors import InvalidArgument
from node.storage import Database
from node.supervision import Kind, classify, parse_period
from node.supervision._count import SUBMIT, count, window
from tests.support.entries import NODE_REGION, agency, agency_code, make_entry

PROVIDER = agency_code(1)  # make_entry's provider

AGENCY = "11350000003591003"
UTC = dt.UTC


def test_a_month_and_a_range_of_days_are_china_standard_time() -> None:
    assert parse_period("2026-11") == (
        dt.datetime(2026, 10, 31, 16, tzinfo=UTC),
        dt.datetime(2026, 11, 30, 16, tzinfo=UTC),
    )
    assert parse_period("2026-12")[1] == dt.datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert parse_period("2026-11-01..2026-11-03") == (
        dt.datetime(2026, 10, 31, 16, tzinfo=UTC),
        dt.datetime(2026, 11, 2, 16, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13", "period: month 13 is not 01 to 12"),
        ("2026-11-05..2026-11-01", "period: the end must be after the start"),
        ("2026-01-01..2027-06-01", "period: at most 366 days in one report"),
        ("2026-02-30..2026-03-01", "period: start '2026-02-30' is not a date (YYYY-MM-DD)"),
        ("x" * 10_000, "period: YYYY-MM or YYYY-MM-DD..YYYY-MM-DD, got a longer text"),
    ],
)
def test_bad_periods_are_refused_naming_the_rule(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_period(text)
    assert err.value.message == message


def row(method: str, outcome: str = "OK", message: str = "", **detail: Any) -> Any:
    return SimpleNamespace(
        method=f"/govnode.v1.{method}", outcome=outcome, message=message, detail=json.dumps(detail)
    )


def counted(record: Any) -> dict[Kind, bool]:
    return {kind: found is not None for kind, found in classify(record, AGENCY)}


def test_each_record_counts_as_an_occasion_and_sometimes_a_finding() -> None:
    batch = row("SharingService/Submit", batch_id="b1", accepted=3, undeclared=1, held=0)
    assert counted(batch) == {Kind.OUT_OF_CATALOG: True, Kind.UNAPPROVED_CHANGE: False}
    held = row("SharingService/Submit", batch_id="b2", held=2)
    assert counted(held) == {Kind.OUT_OF_CATALOG: False, Kind.UNAPPROVED_CHANGE: True}
    # The stream's own record, once its batches are recorded, counts for nothing.
    assert counted(row("SharingService/Submit", batches=2)) == {}
    expired = row(
        "SharingService/Submit",
        "INVALID_ARGUMENT",
        "temporary.expires_at: 2026-01-01T00:00:00+00:00 has passed; a temporary collection ...",
    )
    assert counted(expired) == {Kind.OUT_OF_CATALOG: True}
    assert counted(row("CatalogService/RegisterResource", "FAILED_PRECONDITION", "一数一源")) == {
        Kind.DUPLICATE: True
    }
    assert counted(row("SharingService/Verify", "PERMISSION_DENIED", "暂不共享")) == {
        Kind.SHARED_DATA_MISUSE: True,
        Kind.PROTECTED_DATA_MISUSE: False,
    }
    assert counted(row("SharingService/Query", "PERMISSION_DENIED", "", protected_items=1)) == {
        Kind.SHARED_DATA_MISUSE: False,
        Kind.PROTECTED_DATA_MISUSE: True,
    }
    quota = row(
        "SharingService/Verify", "RESOURCE_EXHAUSTED", "... (oracle protection, 第三十七条)"
    )
    assert counted(quota)[Kind.PROTECTED_DATA_MISUSE]
    flagged = row("SharingService/Verify", enumeration_suspected=1)
    assert counted(flagged) == {Kind.SHARED_DATA_MISUSE: True, Kind.PROTECTED_DATA_MISUSE: False}
    rejected = row("AccessService/ReviewChangeRequest", provider=AGENCY, decision="reject")
    assert counted(rejected) == {Kind.UNAPPROVED_CHANGE: True}
    # The same decision at the console or the command line counts the same.
    for method in ("console:/desks/changes/review", "cli:changes/reject"):
        at_the_desk = SimpleNamespace(
            method=method,
            outcome="OK",
            message="",
            detail=json.dumps({"provider": AGENCY, "decision": "reject"}),
        )
        assert counted(at_the_desk) == {Kind.UNAPPROVED_CHANGE: True}
    others = row("AccessService/ReviewChangeRequest", provider="x", decision="reject")
    assert counted(others) == {}
    assert counted(row("AccessService/ListGrants")) == {}


# --- late aggregation, replayed from the audit log (第二十一条) -----------------------------


async def test_late_aggregation_is_replayed_the_same_whichever_resources_share_a_page(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five daily resources (allowance 2 days) over the period of days 10 to 20: one that came
    late in the period, one whose last Submit before the period aggregated nothing (the one
    before it counts, which makes its first of the period late), one that never came, two on
    time. Counted with
    the resources a page each and two to a page, the figures and findings are the same."""
    catalog = Catalog(database, NODE_REGION)
    provider = agency(PROVIDER)
    for n in range(1, 6):
        await catalog.register(provider, make_entry(n))
    audit = AuditLog(database)
    await audit.start()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    code = {n: make_entry(n).resource_code for n in range(1, 6)}

    async def submit(n: int, day: float, accepted: int = 1) -> int:
        return await audit.append(
            AuditEntry(
                caller=provider.uri,
                method=SUBMIT,
                operation=Operation.AGGREGATE,
                outcome="OK",
                request_digest="0" * 64,
                resource_code=code[n],
                detail={"batch_id": f"b{n}-{day}", "accepted": accepted, "held": 0},
                at=t0 + dt.timedelta(days=day),
            )
        )

    # In the order of time, as a node appends them.
    first_read = await submit(2, 8.5)
    await submit(1, 9)
    await submit(2, 9.8, accepted=0)  # aggregated nothing: day 8.5 is its last aggregation
    for n in (4, 5):
        await submit(n, 9.9)
    for day in range(10, 20):
        for n in (4, 5):
            last_read = await submit(n, day + 0.5)
        if day == 10:
            late_too = await submit(2, 11)  # 2.5 days after day 8.5
        if day == 11:
            came_late = await submit(1, 12)  # 3 days after day 9
        if day == 12:
            await submit(2, 12.5)  # then nothing until the report (late once is enough)
    await audit.close()
    start, end = t0 + dt.timedelta(days=10), t0 + dt.timedelta(days=20)

    async def late() -> tuple[Any, list[tuple[int, str, str]]]:
        async with database.engine.connect() as conn:
            first, last = await window(conn, start, end, 10_000)
            counted = await count(
                conn,
                agency_code=PROVIDER,
                agency_uri=provider.uri,
                region=NODE_REGION,
                start=start,
                end=end,
                first=first,
                last=last,
                moment=end,
                overdue_corrections=None,
            )
        [figure] = [f for f in counted.figures if f.kind is Kind.LATE_AGGREGATION]
        return figure, [
            (f.sequence, f.resource_code, f.at.isoformat())
            for f in counted.findings
            if f.kind is Kind.LATE_AGGREGATION
        ]

    whole = await late()
    monkeypatch.setattr("node.supervision._count._CODES", 2)
    assert await late() == whole
    figure, findings = whole
    assert (figure.numerator, figure.denominator) == (3, 5)
    assert (figure.first, figure.last) == (first_read, last_read)
    published = dt.datetime(2025, 1, 14, 16, tzinfo=dt.UTC)  # 2025-01-15 00:00 CST
    assert findings == [
        (came_late, code[1], (t0 + dt.timedelta(days=11)).isoformat()),
        (late_too, code[2], (t0 + dt.timedelta(days=10.5)).isoformat()),
        (0, code[3], (published + dt.timedelta(days=2)).isoformat()),
    ]
