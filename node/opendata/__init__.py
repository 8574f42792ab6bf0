"""Open data (开放开发, 第二十九条 to 第三十六条).

- ``_deid``: de-identification (脱密脱敏, 第二十九条): what each item of an entry becomes in the
  open data (:class:`Treater`), and the scan of the published rows for direct identifiers
  still in clear (:class:`IdentifierScan`, GB/T 37964).

Pure domain: no database, no grpc.
"""

from __future__ import annotations

from node.opendata._deid import (
    CITIZEN_ID,
    MAX_SCAN_CHARS,
    MOBILE,
    NAME_SAMPLE_SIZE,
    OLD_CITIZEN_ID,
    PERSON_NAME,
    PUBLISHED_LEVELS,
    Finding,
    IdentifierScan,
    Treater,
    TreatmentError,
    direct_identifier,
    embedded_identifiers,
    looks_like_person_names,
)

__all__ = [
    "CITIZEN_ID",
    "MAX_SCAN_CHARS",
    "MOBILE",
    "NAME_SAMPLE_SIZE",
    "OLD_CITIZEN_ID",
    "PERSON_NAME",
    "PUBLISHED_LEVELS",
    "Finding",
    "IdentifierScan",
    "Treater",
    "TreatmentError",
    "direct_identifier",
    "embedded_identifiers",
    "looks_like_person_names",
]
