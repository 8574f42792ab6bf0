"""Times: stored in UTC, shown to people in China Standard Time."""

from __future__ import annotations

import datetime as dt

__all__ = ["CST"]

#: China Standard Time, the zone of a datetime written without an offset.
CST = dt.timezone(dt.timedelta(hours=8), "CST")
