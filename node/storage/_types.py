"""Column types and statement shapes whose behaviour must not depend on the backend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.types import DateTime, TypeDecorator

_T = TypeVar("_T")

#: Values named in one ``IN (...)``: far below every backend's limit on bound parameters
#: (asyncpg refuses more than 32,767 in one statement).
IN_CHUNK = 500


def in_chunks(values: Sequence[_T], size: int = IN_CHUNK) -> Iterator[Sequence[_T]]:
    """``values`` in consecutive slices of at most ``size``, for one ``IN (...)`` each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zone type, so the value is stored as
    UTC text and the zone is put back on read. Naive datetimes are refused on write: a time
    without a zone is a bug waiting to show up in another city's logs (DESIGN.md, Storage).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"refusing to store naive datetime {value.isoformat()}; use UTC")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
