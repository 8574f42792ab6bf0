"""Open data (开放开发, 第二十九条 to 第三十六条).

- ``_deid``: de-identification (脱密脱敏, 第二十九条): what each item of an entry becomes in the
  open data (:class:`Treater`).

Pure domain: no database, no grpc.
"""

from __future__ import annotations

from node.opendata._deid import (
    PUBLISHED_LEVELS,
    Treater,
    TreatmentError,
)

__all__ = [
    "PUBLISHED_LEVELS",
    "Treater",
    "TreatmentError",
]
