"""The row API's filter grammar (the public portal's "row API", issue 14): query pairs
``<item>__<op>=<value>`` over a served dataset's published items, after data.gouv.fr's
api-tabular (``col__exact=...``), turned into a :class:`RowFilter` evaluated in Python on each
row as it is read. Never SQL: nothing a caller sends reaches a statement, and every test is a
comparison of two short strings, two Decimals or a plain substring test (never a pattern).

==================  =========================================  ==============================
op                  a row matches when its value ...           value
==================  =========================================  ==============================
exact / differs     equals / differs from the value            one value
in / notin          is / is not one of the values              at most 20, comma-separated
contains /          holds / does not hold the text, in any     text (a substring, not a
notcontains         case (Unicode case folding)                pattern)
less / greater      <= / >= the value                          ordered items only (below)
strictly_less /     < / > the value                            ordered items only (below)
strictly_greater
isnull / isnotnull  is empty / is not empty                    none (empty)
==================  =========================================  ==============================

Filters combine with AND. An empty value is "null": it matches isnull and nothing else
(differs, notin and notcontains included), as NULL does in SQL and in api-tabular.

How values compare follows what the published item holds (node.opendata._deid):

- an item published as stored with data type integer or decimal compares as a number
  (``Decimal``, exact: 7, 7.0 and +007 are equal); a date as ``YYYY-MM-DD``; a datetime as an
  instant (any form the records accept: ``2024-01-31T08:00:00+08:00``, ``...Z`` or
  ``2024-01-31 08:00:00`` in China Standard Time). Values of these, of booleans (``是``,
  ``1`` and ``true`` alike) and of enums are brought to their canonical form as records are
  (node.records), so a value the item cannot hold is refused, not silently unmatched;
- a date generalised to a month or a year compares as ``YYYY-MM`` or ``YYYY`` (the value
  must be given in that form: ``2024-03``, ``2024``), which order as strings;
- a number generalised to a range ``[lo,hi)`` compares by its lower bound: ``nl__greater=30``
  is the rows whose range starts at 30 or above. ``exact`` and ``in`` take the published
  text, e.g. ``[30,40)`` or ``[30,40),[40,50)``;
- everything else is text (strings, enums, booleans, masked, pseudonymised, prefixes): exact,
  in, contains and null tests only. Ordering text by code point means nothing to a reader.

Sorting (api-tabular's ``<col>__sort``) is refused: rows come in their published order (row
number), which paging follows. Any other order needs the whole dataset read and held for each
page, which a call may not do; a caller who needs it downloads the file.

Bounds: at most :data:`MAX_FILTERS` filters, a key of at most :data:`MAX_KEY_CHARS` characters,
a value of at most :data:`MAX_VALUE_CHARS`, at most :data:`MAX_IN_VALUES` values in ``in``.

Pure domain: no database, no grpc.
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.quote import quote, quote_each
from node.catalog import DataItem, DataType, Generalization, OpenTreatmentKind, ResourceEntry
from node.errors import InvalidArgument
from node.records import schema_for

__all__ = [
    "MAX_FILTERS",
    "MAX_IN_VALUES",
    "MAX_KEY_CHARS",
    "MAX_VALUE_CHARS",
    "OPS",
    "FilterError",
    "RowFilter",
    "parse_filters",
    "projection_problem",
]

#: Filters one query may combine.
MAX_FILTERS = 10
#: Characters of a key: the longest item name (63) and the longest op.
MAX_KEY_CHARS = 90
#: Characters of a value (of the whole list, for in and notin).
MAX_VALUE_CHARS = 200
#: Values of an in or notin list.
MAX_IN_VALUES = 20
#: Characters of a caller's key or value a FilterError quotes.
QUOTED_CHARS = 24

OPS = (
    "exact",
    "differs",
    "in",
    "notin",
    "contains",
    "notcontains",
    "less",
    "greater",
    "strictly_less",
    "strictly_greater",
    "isnull",
    "isnotnull",
)
_ORDERED_OPS = frozenset({"less", "greater", "strictly_less", "strictly_greater"})
_SEPARATOR = "__"

_NUMBER_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_RANGE_RE = re.compile(r"\[(-?[0-9]+),(-?[0-9]+)\)")
_MONTH_RE = re.compile(r"[0-9]{4}-(?:0[1-9]|1[0-2])")
_YEAR_RE = re.compile(r"[0-9]{4}")
_RANGE_SPLIT_RE = re.compile(r",(?=\[)")


class FilterError(InvalidArgument):
    """A filter the grammar refuses: the message names the key ("filters" for the whole list)
    and quotes at most a short prefix of what the caller sent."""

    def __init__(self, key: str, problem: str) -> None:
        named = f"filter {quote(key, QUOTED_CHARS)}" if key else "filters"
        super().__init__(f"{named}: {problem}")
        self.key = key


class Kind(enum.Enum):
    """What a published item's values are, for comparing them."""

    TEXT = "text"
    NUMBER = "number"
    DATE = "date"
    DATETIME = "datetime"
    MONTH = "month"
    YEAR = "year"
    RANGE = "range"


def kind_of(item: DataItem) -> Kind:
    """How ``item``'s published values compare (see the module docs)."""
    rule = item.open
    if rule.kind is OpenTreatmentKind.AS_STORED:
        return {
            DataType.INTEGER: Kind.NUMBER,
            DataType.DECIMAL: Kind.NUMBER,
            DataType.DATE: Kind.DATE,
            DataType.DATETIME: Kind.DATETIME,
        }.get(item.data_type, Kind.TEXT)
    if rule.kind is OpenTreatmentKind.GENERALIZE:
        return {
            Generalization.MONTH: Kind.MONTH,
            Generalization.YEAR: Kind.YEAR,
            Generalization.RANGE: Kind.RANGE,
        }.get(rule.generalize, Kind.TEXT)
    return Kind.TEXT


# A value's comparison key: equal values have equal keys, and for ordered kinds keys order as
# the values do. None when the value has not the item's shape (never for a published value of
# the item's own kind; kept total so that a surprising row is unmatched, not an error).
Key = Callable[[str], object]


def _same(value: str) -> str:
    return value


def _number(value: str) -> Decimal | None:
    return Decimal(value) if _NUMBER_RE.fullmatch(value) else None


def _datetime(value: str) -> str:
    """A canonical datetime (node.records: UTC, ``Z``, microseconds only when not zero) with
    its microseconds always written, so that the strings order as the instants do: as
    written, ``...:00.5Z`` sorts before ``...:00Z`` ('.' < 'Z')."""
    return value if len(value) != 20 else value[:19] + ".000000Z"


def _range_low(value: str) -> Decimal | None:
    match = _RANGE_RE.fullmatch(value)
    return Decimal(match[1]) if match else None


_EQUAL_KEYS: dict[Kind, Key] = {Kind.NUMBER: _number, Kind.DATETIME: _datetime}
_ORDER_KEYS: dict[Kind, Key] = {**_EQUAL_KEYS, Kind.RANGE: _range_low}


@dataclass(frozen=True)
class Condition:
    """One filter: ``test`` is applied to a row's non-empty value of ``item``."""

    key: str
    item: str
    op: str
    test: Callable[[str], bool]


@dataclass(frozen=True)
class RowFilter:
    """Filters combined with AND; no filters match every row."""

    conditions: tuple[Condition, ...] = ()

    def matches(self, row: Mapping[str, str]) -> bool:
        for condition in self.conditions:
            value = row.get(condition.item, "")
            if condition.op == "isnull":
                if value:
                    return False
            elif condition.op == "isnotnull":
                if not value:
                    return False
            elif not value or not condition.test(value):
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.conditions)


class _Item:
    """A published item as filters see it: its kind and how a caller's value is read."""

    def __init__(self, entry: ResourceEntry, item: DataItem) -> None:
        self.item = item
        self.kind = kind_of(item)
        self.equal_key: Key = _EQUAL_KEYS.get(self.kind, _same)
        self.order_key: Key = _ORDER_KEYS.get(self.kind, _same)
        as_stored = item.open.kind is OpenTreatmentKind.AS_STORED
        self._check = schema_for(entry).items[item.name] if as_stored else None

    def _canonical(self, key: str, text: str) -> str:
        if self._check is not None:
            canonical, problem = self._check.lookup_form(text)
            if canonical is None:
                raise FilterError(key, f"{quote(text, QUOTED_CHARS)}: {problem}")
            return canonical
        shapes = {
            Kind.MONTH: (_MONTH_RE, "a month YYYY-MM"),
            Kind.YEAR: (_YEAR_RE, "a year YYYY"),
            Kind.RANGE: (_RANGE_RE, "a range [lo,hi) as published, e.g. [30,40)"),
        }
        shape = shapes.get(self.kind)
        if shape is not None and not shape[0].fullmatch(text):
            raise FilterError(key, f"{quote(text, QUOTED_CHARS)} is not {shape[1]}")
        return text

    def value(self, key: str, text: str) -> object:
        """The equality key of a caller's value, for exact, differs, in and notin."""
        return self.equal_key(self._canonical(key, text))

    def bound(self, key: str, text: str) -> object:
        """The order key of a caller's value, for less, greater and the strict ones."""
        if self.kind is Kind.RANGE:
            if not _NUMBER_RE.fullmatch(text):
                raise FilterError(
                    key,
                    f"{quote(text, QUOTED_CHARS)} is not a number; a range item compares by "
                    "the lower bound of its range",
                )
            return Decimal(text)
        return self.order_key(self._canonical(key, text))


def _describe(item: DataItem, kind: Kind) -> str:
    if kind is Kind.TEXT:
        return f"item {item.name} is text as published ({item.open.kind.value})"
    return f"item {item.name} compares as a {kind.value}"


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "less": operator.le,
    "greater": operator.ge,
    "strictly_less": operator.lt,
    "strictly_greater": operator.gt,
}


def _comparison(op: str, bound: object, key: Key) -> Callable[[str], bool]:
    # The bound and a row's key are of one type: Decimals, or strings that order as their
    # values do. A row value of another shape (key None) matches nothing.
    compare = _COMPARE[op]

    def test(value: str) -> bool:
        mine = key(value)
        return mine is not None and bool(compare(mine, bound))

    return test


def _condition(key: str, text: str, spec: _Item, op: str) -> Callable[[str], bool]:
    if op in ("isnull", "isnotnull"):
        if text:
            raise FilterError(key, f"{op} takes no value, got {quote(text, QUOTED_CHARS)}")
        return lambda value: True
    if not text:
        raise FilterError(
            key, f"{op} needs a value; to find empty values use {spec.item.name}__isnull"
        )
    if op in ("contains", "notcontains"):
        needle = text.casefold()
        if op == "contains":
            return lambda value: needle in value.casefold()
        return lambda value: needle not in value.casefold()
    if op in _ORDERED_OPS:
        if spec.kind is Kind.TEXT:
            raise FilterError(
                key,
                f"{op} compares numbers, dates, datetimes, months, years and ranges; "
                f"{_describe(spec.item, spec.kind)}: use exact, in or contains",
            )
        return _comparison(op, spec.bound(key, text), spec.order_key)
    if op in ("exact", "differs"):
        wanted = spec.value(key, text)
        if op == "exact":
            return lambda value: spec.equal_key(value) == wanted
        return lambda value: spec.equal_key(value) != wanted
    # in, notin
    # A range holds a comma itself: a list of ranges is split only before a "[".
    parts = _RANGE_SPLIT_RE.split(text) if spec.kind is Kind.RANGE else text.split(",")
    if len(parts) > MAX_IN_VALUES:
        raise FilterError(key, f"{op} takes at most {MAX_IN_VALUES} values, got {len(parts)}")
    if any(not part for part in parts):
        raise FilterError(key, f"{op} takes values separated by single commas, none empty")
    wanted_set = {spec.value(key, part) for part in parts}
    if op == "in":
        return lambda value: spec.equal_key(value) in wanted_set
    return lambda value: spec.equal_key(value) not in wanted_set


def parse_filters(pairs: Sequence[tuple[str, str]], entry: ResourceEntry) -> RowFilter:
    """The filter ``pairs`` (``<item>__<op>``, value) make over ``entry``'s items, which are
    the published ones (node.opendata.Served.entry). Raises FilterError and nothing else."""
    if len(pairs) > MAX_FILTERS:
        raise FilterError("", f"at most {MAX_FILTERS} filters may be combined, got {len(pairs)}")
    items = {item.name: item for item in entry.items}
    specs: dict[str, _Item] = {}
    conditions = []
    for key, text in pairs:
        if len(key) > MAX_KEY_CHARS:
            raise FilterError(key, f"is {len(key)} characters, at most {MAX_KEY_CHARS}")
        if len(text) > MAX_VALUE_CHARS:
            raise FilterError(
                key, f"the value is {len(text)} characters, at most {MAX_VALUE_CHARS}"
            )
        name, separator, op = key.rpartition(_SEPARATOR)
        if not separator or not name:
            raise FilterError(key, f"is not <item>__<op>, e.g. {_example(entry)}")
        if op == "sort":
            raise FilterError(
                key,
                "sorting is not offered: rows come in their published order (row number), "
                "which paging follows; another order needs the whole dataset read for each "
                "page. Download the file to sort it",
            )
        if op not in OPS:
            raise FilterError(
                key, f"{quote(op, QUOTED_CHARS)} is not an op; one of {', '.join(OPS)}"
            )
        item = items.get(name)
        if item is None:
            raise FilterError(
                key,
                f"{quote(name, QUOTED_CHARS)} is not a published item of "
                f"{entry.resource_code}; its items: {_names(entry)}",
            )
        spec = specs.get(name) or specs.setdefault(name, _Item(entry, item))
        conditions.append(Condition(key, name, op, _condition(key, text, spec, op)))
    return RowFilter(tuple(conditions))


def _names(entry: ResourceEntry) -> str:
    names = [item.name for item in entry.items]
    shown = ", ".join(names[:20])
    return shown + (f", … ({len(names)} in all)" if len(names) > 20 else "")


def _example(entry: ResourceEntry) -> str:
    first = entry.items[0].name if entry.items else "item"
    return f"{first}__exact"


def projection_problem(names: Sequence[str], entry: ResourceEntry) -> str | None:
    """Why ``names`` cannot be the items a query returns, or None when they can."""
    published = {item.name for item in entry.items}
    unknown = [name for name in names if name not in published]
    if unknown:
        return (
            f"{quote_each(unknown)} not published items of {entry.resource_code}; its items: "
            f"{_names(entry)}"
        )
    if len(set(names)) != len(names):
        return "an item is named twice"
    return None
