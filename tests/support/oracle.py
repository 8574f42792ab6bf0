"""The Verify oracle's limits on a real database: a fixed start time, a caller, a guard with
given limits, a limited entry, one admission; and the retry information a refusal carries.
Also imported by the second OS process of tests/sharing/test_oracle.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import cast

import grpc
import grpc.aio

from gateway.identity import Identity, Role
from node.catalog import MaskingKind, MaskingRule, ResourceEntry, ShareMethod, ShareType
from node.config import OracleSection
from node.errors import ResourceExhausted
from node.servicers.status import RETRY_AFTER_KEY
from node.sharing import OracleGuard
from node.storage import Database
from node.times import CST
from tests.support.entries import item
from tests.support.nodes import (
    PROVINCE,
    entry_of,
)

TRUST_DOMAIN = "fujian.gov.cn"

#: Where the tests' wall clock starts: a Monday morning in China Standard Time.
START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=CST)


def sensitive(n: int, **fields: object) -> ResourceEntry:
    """An unconditionally shared province resource holding level-3 personal data."""
    items = (
        item("zjhm", key=True, required=True, sensitivity_level=3),
        item("xm", sensitivity_level=3, masking=MaskingRule(kind=MaskingKind.NAME)),
    )
    values: dict[str, object] = {
        "items": items,
        "share_type": ShareType.UNCONDITIONAL,
        "share_methods": (ShareMethod.VERIFY,),
    } | fields
    return entry_of(PROVINCE, n, **values)


def caller(code: str) -> Identity:
    return Identity(PROVINCE, TRUST_DOMAIN, Role.AGENCY, code)


def limits(**values: object) -> OracleSection:
    defaults: dict[str, object] = {
        "verify_per_minute": 0,
        "verify_per_day": 0,
        "enumeration_distinct_keys": 0,
    }
    return OracleSection.model_validate(defaults | values)


def guard_on(db: Database, **values: object) -> OracleGuard:
    return OracleGuard(db, limits(**values), None, TRUST_DOMAIN)


def limited_entry(n: int = 1) -> ResourceEntry:
    return sensitive(n).model_copy(update={"region": PROVINCE})


async def admitted(guard: OracleGuard, who: Identity, key: str, entry: ResourceEntry) -> bool:
    """One Verify through ``guard``: True when admitted, False when refused."""
    try:
        await guard.admit_verify(who, entry, {"zjhm": key})
    except ResourceExhausted:
        return False
    return True


def retry_after_ms(err: grpc.aio.AioRpcError) -> str | None:
    """The machine-readable retry delay a refusal carries in its trailing metadata."""
    # grpc.aio's Metadata yields (key, value) pairs; the stubs type it otherwise.
    pairs = cast(Iterable[tuple[str, str | bytes]], err.trailing_metadata() or ())
    for key, value in pairs:
        if key == RETRY_AFTER_KEY:
            return str(value)
    return None
