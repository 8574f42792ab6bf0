"""The catalog (登记, 第十七、十八条): resource entries and their rules, and the registry that
keeps them.

- ``_types``: entries, data items, share types and methods, validation and masking rules, and
  the checks of an entry (一数一源 is the registry's);
- ``_grading``: sensitivity levels and what they allow (第三十七条);
- ``_open_treatment``: what an entry may declare about its open data (脱密脱敏, 第二十九条);
- ``_patterns``: PATTERN rules on a linear-time engine (RE2);
- ``_probe``: conformance probe resources and who may use them (第三十一条);
- ``_registry``: register, update, withdraw, read, list and the ordered change feed, and
  ``store_entry_row`` (how an entry's row is written); its writes
  are idempotent by request id through node.idempotency;
- ``_replicas``: other regions' entries stored in bulk (catalog sync, node.federation).
"""

from __future__ import annotations

from node.catalog._grading import (
    HIGHLY_SENSITIVE,
    default_clear_items,
    effective_masking,
    highest_level,
)
from node.catalog._patterns import (
    CACHED_PATTERNS,
    ENGINE,
    MAX_PATTERN_VALUE_LENGTH,
    UnsupportedPattern,
    compile_pattern,
    quote_pattern,
)
from node.catalog._probe import (
    TESTERS_USE_PROBES_ONLY,
    check_catalog_write,
    check_submitter,
    check_tester_use,
    is_tester,
)
from node.catalog._registry import (
    MAX_NAME_SEARCH,
    MAX_STORED_INT,
    PAGE_BYTES,
    Catalog,
    store_entry_row,
)
from node.catalog._replicas import Replica, store_replicas
from node.catalog._types import (
    ITEM_NAME_RE,
    MAX_ITEMS,
    MAX_PROBLEMS_SHOWN,
    CatalogChange,
    ChangeKind,
    Classification,
    DataItem,
    DataType,
    Generalization,
    MaskingKind,
    MaskingRule,
    OpenTreatment,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
    ResourceStatus,
    ShareMethod,
    ShareType,
    UpdateCycle,
    ValidationKind,
    ValidationRule,
    entry_from_json,
    entry_to_json,
    validate_entry,
)

__all__ = [
    "CACHED_PATTERNS",
    "ENGINE",
    "HIGHLY_SENSITIVE",
    "ITEM_NAME_RE",
    "MAX_ITEMS",
    "MAX_NAME_SEARCH",
    "MAX_PATTERN_VALUE_LENGTH",
    "MAX_PROBLEMS_SHOWN",
    "MAX_STORED_INT",
    "PAGE_BYTES",
    "TESTERS_USE_PROBES_ONLY",
    "Catalog",
    "CatalogChange",
    "ChangeKind",
    "Classification",
    "DataItem",
    "DataType",
    "Generalization",
    "MaskingKind",
    "MaskingRule",
    "OpenTreatment",
    "OpenTreatmentKind",
    "OpenType",
    "Replica",
    "ResourceEntry",
    "ResourceStatus",
    "ShareMethod",
    "ShareType",
    "UnsupportedPattern",
    "UpdateCycle",
    "ValidationKind",
    "ValidationRule",
    "check_catalog_write",
    "check_submitter",
    "check_tester_use",
    "compile_pattern",
    "default_clear_items",
    "effective_masking",
    "entry_from_json",
    "entry_to_json",
    "highest_level",
    "is_tester",
    "quote_pattern",
    "store_entry_row",
    "store_replicas",
    "validate_entry",
]
