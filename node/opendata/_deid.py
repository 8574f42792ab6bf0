"""De-identification of open data (脱密脱敏, 第二十九条): what each published item holds.

GB/T 37964-2019 (个人信息去标识化指南) names the steps: identify the identifiers (识别标识),
treat them (处理标识), then verify (验证审批). The catalog declares the treatment of each item
(:class:`~node.catalog.OpenTreatment`); :class:`Treater` applies it.

Treatments (values are in the canonical form of node.records._validation):

=============  ===========================================  ===============================
treatment      gives                                        example
=============  ===========================================  ===============================
DROP           nothing: the item is not published           (default; level 3/4 items always)
MASK           all but keep_first/keep_last characters      ``张**`` (1, 0)
               as ``*``; a value no longer than the two
               together is masked whole
GENERALIZE     MONTH/YEAR of a date or datetime (a          ``2024-01``, ``2024``
               datetime in China Standard Time); PREFIX:    ``350102``
               the first prefix_length characters; RANGE:   ``[-10,0)``
               ``[lo,hi)`` with lo = floor(v / w) * w
PSEUDONYMIZE   HMAC-SHA256(key, name || 0x00 || value),     ``K5QXG3ZB7Q2DTMWA``
               first 10 bytes in base32 (16 characters)
AS_STORED      the value                                    ``13812345678``
=============  ===========================================  ===============================

Empty values stay empty under every treatment, so "unknown" is not turned into a pseudonym or
a range. Everything is decided once per dataset version in the constructors; the per-value
work is a call of a prepared function.

Pure domain: no database, no grpc.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence

from gateway.quote import quote
from node.catalog import DataItem, DataType, Generalization, OpenTreatmentKind
from node.times import CST

__all__ = [
    "PUBLISHED_LEVELS",
    "Treater",
    "TreatmentError",
]

#: Sensitivity levels whose items may be opened at all (第三十七条): levels 3 and 4 never are,
#: whatever their declared treatment says.
PUBLISHED_LEVELS = frozenset({1, 2})
#: Characters of a refused value a TreatmentError quotes.
QUOTED_CHARS = 16
#: Bytes of the HMAC a pseudonym keeps: 80 bits, 16 base32 characters. Two of a million
#: distinct values share a pseudonym with a probability of about 4e-13.
PSEUDONYM_BYTES = 10
MIN_KEY_BYTES = 16
#: Digits a RANGE value may have: more is not a measurement, and int() is quadratic in them.
MAX_RANGE_DIGITS = 1000

MASK_CHAR = "*"


class TreatmentError(ValueError):
    """An item's treatment cannot be applied: to one value (a malformed date, a non-number
    for RANGE), or at all (a GENERALIZE without a usable generalisation). The message names
    the item and quotes at most the first 16 characters of the value."""

    def __init__(self, item: str, problem: str) -> None:
        super().__init__(f"item {item}: {problem}")
        self.item = item


# --- treatments ---------------------------------------------------------------------------

Treatment = Callable[[str], str]

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)
_NUMBER_RE = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")


def _refused(item: str, value: str, problem: str) -> TreatmentError:
    return TreatmentError(item, f"{quote(value, QUOTED_CHARS)} {problem}")


def _masker(first: int, last: int) -> Treatment:
    kept = first + last

    def treat(value: str) -> str:
        length = len(value)
        if length <= kept:
            return MASK_CHAR * length
        return value[:first] + MASK_CHAR * (length - kept) + value[length - last :]

    return treat


def _date_generaliser(item: str, data_type: DataType, width: int) -> Treatment:
    """The first ``width`` characters (7: month, 4: year) of a date; a datetime is read in
    China Standard Time first, so an event at 2024-01-31T16:00:00Z falls in February."""

    def date(value: str) -> str:
        if not value:
            return value
        try:
            if not _DATE_RE.fullmatch(value):
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            raise _refused(item, value, "is not a date YYYY-MM-DD") from None
        return value[:width]

    def datetime(value: str) -> str:
        if not value:
            return value
        try:
            if not _DATETIME_RE.fullmatch(value):
                raise ValueError
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise _refused(item, value, "is not a datetime such as 2024-01-31T00:00:00Z") from None
        if moment.tzinfo is None:  # written without an offset: China Standard Time
            moment = moment.replace(tzinfo=CST)
        local = moment.astimezone(CST)
        return f"{local.year:04d}-{local.month:02d}" if width == 7 else f"{local.year:04d}"

    return datetime if data_type is DataType.DATETIME else date


def _prefixer(item: str, length: int) -> Treatment:
    def treat(value: str) -> str:
        if not value:
            return value
        if len(value) <= length:
            # Cut to its own length, the value would be published whole.
            raise _refused(
                item, value, f"is not longer than the {length}-character prefix it is cut to"
            )
        return value[:length]

    return treat


def _ranger(item: str, width: int) -> Treatment:
    """``[lo,hi)`` with lo = floor(value / width) * width. Exact, on integers: width is an
    integer, so floor(value / width) = floor(floor(value) / width), and floor(value) comes
    from the text (no float, no Decimal context rounding at 28 digits)."""

    def treat(value: str) -> str:
        if not value:
            return value
        match = _NUMBER_RE.fullmatch(value)
        if match is None:
            raise _refused(item, value, "is not a number (optional sign, digits, optional .)")
        sign, whole, fraction = match.groups()
        if len(whole) > MAX_RANGE_DIGITS:
            raise _refused(item, value, f"has more than {MAX_RANGE_DIGITS} digits")
        floor = int(whole)
        if sign == "-":
            floor = -floor - (1 if fraction and fraction.strip("0") else 0)
        low = floor // width * width  # Python's // floors, so negatives land right
        return f"[{low},{low + width})"

    return treat


def _pseudonymiser(name: str, key: bytes) -> Treatment:
    prepared = hmac.new(key, name.encode() + b"\x00", hashlib.sha256)

    def treat(value: str) -> str:
        if not value:
            return value
        mac = prepared.copy()
        mac.update(value.encode("utf-8", "surrogatepass"))
        return base64.b32encode(mac.digest()[:PSEUDONYM_BYTES]).decode("ascii")

    return treat


def _as_stored(value: str) -> str:
    return value


def _treatment(item: DataItem, key: bytes) -> tuple[Treatment, str]:
    """The prepared treatment of a published item and its description."""
    rule, name = item.open, item.name
    match rule.kind:
        case OpenTreatmentKind.MASK:
            if rule.keep_first < 0 or rule.keep_last < 0:
                raise TreatmentError(name, "MASK keeps a negative number of characters")
            return _masker(rule.keep_first, rule.keep_last), (
                f"masked, keeping {rule.keep_first} first and {rule.keep_last} last characters"
            )
        case OpenTreatmentKind.GENERALIZE:
            return _generaliser(item)
        case OpenTreatmentKind.PSEUDONYMIZE:
            return _pseudonymiser(name, key), "pseudonymised (keyed per version)"
        case OpenTreatmentKind.AS_STORED:
            return _as_stored, "as stored"
    raise AssertionError(f"not a published treatment: {rule.kind}")


def _generaliser(item: DataItem) -> tuple[Treatment, str]:
    rule, name = item.open, item.name
    zone = " (China Standard Time)" if item.data_type is DataType.DATETIME else ""
    match rule.generalize:
        case Generalization.MONTH:
            return _date_generaliser(name, item.data_type, 7), f"generalised to month{zone}"
        case Generalization.YEAR:
            return _date_generaliser(name, item.data_type, 4), f"generalised to year{zone}"
        case Generalization.PREFIX if rule.prefix_length > 0:
            return _prefixer(name, rule.prefix_length), (
                f"generalised to the first {rule.prefix_length} characters"
            )
        case Generalization.RANGE if rule.range_width > 0:
            return _ranger(name, rule.range_width), (
                f"generalised to ranges of width {rule.range_width}"
            )
        case Generalization.PREFIX | Generalization.RANGE:
            what = "prefix_length" if rule.generalize is Generalization.PREFIX else "range_width"
            raise TreatmentError(name, f"GENERALIZE by {rule.generalize.value} needs {what} >= 1")
    raise TreatmentError(name, "GENERALIZE needs a generalisation (month, year, prefix, range)")


def _dropped(item: DataItem) -> str:
    if item.sensitivity_level in PUBLISHED_LEVELS:
        return "dropped"
    declared = item.open.kind
    why = f"dropped (level {item.sensitivity_level}, 第三十七条)"
    return why if declared is OpenTreatmentKind.DROP else f"{why}; declared {declared.value}"


class Treater:
    """The open data of one dataset version: which items are published and how each value is
    treated. Built once per version with that version's pseudonym key, so pseudonyms are
    stable within the version and unrelated across versions (one cannot follow a person from
    one release to the next by pseudonym)."""

    def __init__(self, items: Sequence[DataItem], key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the pseudonym key must have at least {MIN_KEY_BYTES} bytes")
        self._descriptions: dict[str, str] = {}
        treatments: list[tuple[str, Treatment]] = []
        published: list[DataItem] = []
        for item in items:
            if (
                item.open.kind is OpenTreatmentKind.DROP
                or item.sensitivity_level not in PUBLISHED_LEVELS
            ):
                self._descriptions[item.name] = _dropped(item)
                continue
            treat, description = _treatment(item, key)
            treatments.append((item.name, treat))
            published.append(item)
            self._descriptions[item.name] = description
        self._treatments = tuple(treatments)
        self._published = tuple(published)
        #: The published items' names, in catalog order.
        self.published_items: tuple[str, ...] = tuple(item.name for item in published)
        #: The published items marked quasi-identifier (准标识符), in catalog order.
        self.quasi_items: tuple[str, ...] = tuple(i.name for i in published if i.quasi_identifier)

    def apply(self, values: Mapping[str, str]) -> dict[str, str]:
        """The published items of one record, each treated; an item the record leaves out
        (stored records omit empty values) is published empty. Raises TreatmentError."""
        get = values.get
        return {name: treat(get(name, "")) for name, treat in self._treatments}

    def describe(self) -> dict[str, str]:
        """Item name -> what the open data holds of it, for every item, in catalog order."""
        return dict(self._descriptions)
