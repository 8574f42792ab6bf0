"""What a catalog entry may declare about its open data (脱密脱敏, 第二十九条): the rules of each
data item's :class:`~node.catalog.OpenTreatment`, checked on every registration and update.

- Nothing opens by default: an item's treatment is DROP unless declared.
- Items of sensitivity level 3 or 4 are never opened (分级管理, 第三十七条), and nothing of a
  不予开放 resource is: their treatment stays DROP.
- A treatment states exactly what it needs and nothing more: MASK its kept characters (at most
  :data:`MAX_KEEP` each), GENERALIZE one generalization that fits the item's type (MONTH and
  YEAR dates, RANGE numbers, PREFIX codes) with its one parameter in bounds. A field the kind
  does not use must stay 0: a provider who set it meant something the node would not do.

A quasi-identifier (准标识符) may be dropped. Marking quasi-identifiers is the first step of
de-identification (GB/T 37964) and a property of the data, not of its publication; suppressing
one is a treatment of it. The flag on a dropped item records that it was identified and
withheld, which is what an authority reviewing the entry wants to see; refusing it would also
make every level-3 quasi-identifier (never opened) impossible to mark. The open data is
k-anonymous over the published quasi-identifiers.

Pure domain: no database, no grpc.
"""

from __future__ import annotations

from node.catalog._types import (
    DataItem,
    DataType,
    Generalization,
    OpenTreatmentKind,
    OpenType,
    ResourceEntry,
)

__all__ = ["MAX_KEEP", "MAX_PREFIX", "MAX_RANGE_WIDTH", "open_treatment_problems"]

#: Characters a MASK treatment keeps at each end, at most.
MAX_KEEP = 64
#: Characters a PREFIX generalization keeps, at most.
MAX_PREFIX = 64
#: The widest RANGE generalization (a trillion: any amount in 元 a resource would hold).
MAX_RANGE_WIDTH = 10**12
#: The level from which items never open (分级管理, 第三十七条).
NEVER_OPENED_LEVEL = 3

_ARTICLE = "(脱密脱敏, 第二十九条)"
_DROP = OpenTreatmentKind.DROP
_MASK = OpenTreatmentKind.MASK
_GENERALIZE = OpenTreatmentKind.GENERALIZE

#: The item types each generalization applies to.
_GENERALIZES: dict[Generalization, frozenset[DataType]] = {
    Generalization.MONTH: frozenset({DataType.DATE, DataType.DATETIME}),
    Generalization.YEAR: frozenset({DataType.DATE, DataType.DATETIME}),
    Generalization.PREFIX: frozenset({DataType.STRING, DataType.ENUM, DataType.INTEGER}),
    Generalization.RANGE: frozenset({DataType.INTEGER, DataType.DECIMAL}),
}


def open_treatment_problems(entry: ResourceEntry) -> list[str]:
    """Every rule of the module docstring ``entry``'s items break, as
    ``entry.items[i].open.<field>: ...`` messages (empty when valid)."""
    problems = []
    for i, item in enumerate(entry.items):
        path = f"entry.items[{i}].open"
        problems += _opening_problems(path, item, entry.open_type)
        problems += _field_problems(path, item)
    return problems


def _opening_problems(path: str, item: DataItem, open_type: OpenType) -> list[str]:
    """Whether the item may open at all."""
    kind = item.open.kind
    if kind is _DROP:
        return []
    if open_type is OpenType.NOT_OPEN:
        return [
            f"{path}.kind: {kind.value} is not allowed: entry.open_type is 不予开放 (not_open), "
            "so no item opens; leave it unset (drop) (第二十九条)"
        ]
    level = item.sensitivity_level
    if NEVER_OPENED_LEVEL <= level <= 4:  # other levels are refused by the item rules
        return [
            f"{path}.kind: {kind.value} is not allowed: the item has sensitivity level {level}, "
            "and level 3 and 4 items are never opened; leave it unset (drop) (分级管理, 第三十七条)"
        ]
    return []


def _field_problems(path: str, item: DataItem) -> list[str]:
    """The fields of the treatment: each used by its kind, each in bounds."""
    treatment = item.open
    kind = treatment.kind
    problems = []
    for field in ("keep_first", "keep_last"):
        count: int = getattr(treatment, field)
        if kind is not _MASK:
            if count:
                problems.append(f"{path}.{field}: only for kind mask, not {kind.value} {_ARTICLE}")
        elif not 0 <= count <= MAX_KEEP:
            problems.append(f"{path}.{field}: must be 0 to {MAX_KEEP}, got {count} {_ARTICLE}")
    how = treatment.generalize
    if kind is not _GENERALIZE:
        if how is not Generalization.NONE:
            problems.append(
                f"{path}.generalize: only for kind generalize, not {kind.value} {_ARTICLE}"
            )
    elif how is Generalization.NONE:
        problems.append(
            f"{path}.generalize: kind generalize needs a generalization (month, year, prefix or "
            f"range) {_ARTICLE}"
        )
    elif item.data_type not in _GENERALIZES[how]:
        *others, last = sorted(t.value for t in _GENERALIZES[how])
        types = f"{', '.join(others)} or {last}"
        problems.append(
            f"{path}.generalize: {how.value} applies to {types} items, not "
            f"{item.data_type.value} {_ARTICLE}"
        )
    generalizing = kind is _GENERALIZE
    problems += _parameter_problems(
        f"{path}.prefix_length",
        treatment.prefix_length,
        used=generalizing and how is Generalization.PREFIX,
        name="prefix",
        most=MAX_PREFIX,
    )
    problems += _parameter_problems(
        f"{path}.range_width",
        treatment.range_width,
        used=generalizing and how is Generalization.RANGE,
        name="range",
        most=MAX_RANGE_WIDTH,
    )
    return problems


def _parameter_problems(field: str, value: int, *, used: bool, name: str, most: int) -> list[str]:
    """The one parameter of the ``name`` generalization: required there (1 to ``most``), 0
    elsewhere."""
    if not used:
        if value:
            return [f"{field}: only for generalization {name} {_ARTICLE}"]
        return []
    if not 1 <= value <= most:
        return [f"{field}: generalization {name} needs 1 to {most:,}, got {value} {_ARTICLE}"]
    return []
