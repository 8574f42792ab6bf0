"""The catalog entry's own quality: how many of the GB/T 21063.3 core metadata a 政务信息资源
目录 entry should carry it does carry (目录元数据, the 元数据 indicator of GB/T 36344 规范性).

Registration already refuses an entry without its name, provider, classification, share type
and the fields its share type needs; what it lets pass empty is what this counts: 信息资源摘要
(summary), 信息资源格式 (format), 发布日期 (publish_date), 信息资源分类's industry category, each
item's description, and the open conditions a 有条件开放 entry should state. A field that
cannot be empty on a registered entry still counts (numerator and denominator both), so the
score reads as "required fields present" over the whole list.

Pure: no database, no grpc.
"""

from __future__ import annotations

from node.catalog import OpenType, ResourceEntry, ShareType
from node.quality._types import Dimension, Indicator

__all__ = ["METADATA_CODE", "metadata_indicator", "metadata_missing"]

METADATA_CODE = "010300"


def _fields(entry: ResourceEntry) -> list[tuple[str, bool]]:
    """(field path, filled) for every core metadata field ``entry`` should carry."""
    fields = [
        ("name", bool(entry.name.strip())),
        ("resource_code", bool(entry.resource_code)),
        ("provider_name", bool(entry.provider_name.strip())),
        ("provider_code", bool(entry.provider_code)),
        ("classification", bool(entry.classification)),
        ("industry_category", bool(entry.industry_category.strip())),
        ("summary", bool(entry.summary.strip())),
        ("format", bool(entry.format.strip())),
        ("items", bool(entry.items)),
        ("share_type", bool(entry.share_type)),
        ("update_cycle", bool(entry.update_cycle)),
        ("publish_date", bool(entry.publish_date.strip())),
        ("open_type", bool(entry.open_type)),
    ]
    if entry.share_type is ShareType.CONDITIONAL:
        fields.append(("share_conditions", bool(entry.share_conditions.strip())))
    if entry.share_type is ShareType.NOT_SHARED:
        fields.append(("legal_basis", bool(entry.legal_basis.strip())))
    else:
        fields.append(("share_methods", bool(entry.share_methods)))
    if entry.open_type is OpenType.AUTHORIZED:
        fields.append(("open_conditions", bool(entry.open_conditions.strip())))
    for item in entry.items:
        fields.append((f"items.{item.name}.title", bool(item.title.strip())))
        fields.append((f"items.{item.name}.description", bool(item.description.strip())))
    return fields


def metadata_indicator(entry: ResourceEntry) -> Indicator:
    fields = _fields(entry)
    return Indicator(
        code=METADATA_CODE,
        dimension=Dimension.CONFORMITY,
        name="元数据",
        numerator=sum(filled for _, filled in fields),
        denominator=len(fields),
        counted="GB/T 21063.3 core metadata fields filled / fields the entry should carry",
    )


def metadata_missing(entry: ResourceEntry) -> list[str]:
    """The fields counted as missing, for the operator."""
    return [name for name, filled in _fields(entry) if not filled]
