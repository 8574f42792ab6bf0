"""node.supervision without a node: the periods an operator names, and how one audit record
counts (an occasion, or also a finding) for each figure."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest

from node.errors import InvalidArgument
from node.supervision import Kind, classify, parse_period

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
