"""Data quality rules for submitted values (数据质量管控, 第十五、十六条).

A record's values arrive as strings. Each is checked against its catalog item: first the data
type, then the validation rule, then the maximum length, and the first problem found is the
one reported. Checks run on the value as :func:`normalise` would store it (surrounding blanks
stripped, a citizen id's ``x`` upper-cased), and records are stored in that canonical form,
so comparisons (Verify, Compare, "unchanged" on Submit) compare like with like.

Accepted forms and the canonical form each is stored in:

============  ===============================================  ===========================
data type     accepted                                         canonical
============  ===============================================  ===========================
STRING        any text                                         stripped
INTEGER       optional sign and digits: ``-42``, ``+007``      ``-42``, ``7``
DECIMAL       optional sign, digits, optional ``.`` and        ``3.1`` (no exponent,
              digits: ``3.10``, ``-0.5``, ``+12``              no trailing zeros)
DATE          ``YYYY-MM-DD``, a real calendar date             unchanged
DATETIME      RFC 3339 / ISO 8601 with an offset:              UTC with ``Z``:
              ``2024-01-31T08:00:00+08:00``, ``...Z``;         ``2024-01-31T00:00:00Z``
              or ``YYYY-MM-DD HH:MM:SS`` without an offset,
              read as China Standard Time (UTC+8)
BOOLEAN       ``true``/``false`` (any case), ``1``/``0``,      ``true`` / ``false``
              ``是``/``否``
ENUM          one of the item's ``enum_values``, exactly       unchanged
============  ===============================================  ===========================

Rules (``ValidationRule.kind``): CITIZEN_ID is GB 11643 (format, birth date, check
character), CREDIT_CODE is GB 32100, DATE and ENUM as the data types above, PATTERN is a full
match of the item's regular expression (Python ``re`` syntax, run on the linear-time engine of
:mod:`node.catalog._patterns`), PHONE is a mainland mobile number ``1[3-9]`` + 9 digits
or a fixed line with its area code: ``0`` + 2-3 digits, an optional ``-``, 7-8 digits and an
optional ``-`` extension of 1-6 digits (``0591-87654321``, ``059187654321-123``). Phone
numbers are compared as written (only stripped). ``max_length`` counts characters.

Everything is compiled once per catalog entry (:func:`schema_for`), so checking a batch of
ten thousand records is a loop over precompiled checks (patterns come from node.catalog._patterns'
bounded cache at each check).

A value a caller looks records up by or compares (Verify, Compare, Query) is brought to its
canonical form without the pattern and the maximum length (:meth:`ItemCheck.lookup_form`):
neither changes a value's form, and a consumer's value then never runs a provider's pattern.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from gateway.quote import quote_each
from node.catalog import (
    CACHED_PATTERNS,
    ENGINE,
    MAX_PATTERN_VALUE_LENGTH,
    DataItem,
    DataType,
    ResourceEntry,
    UnsupportedPattern,
    ValidationKind,
    compile_pattern,
    quote_pattern,
)
from node.codes import citizen_id_problem, credit_code_problem
from node.times import CST

__all__ = [
    "MAX_CHECK_SECONDS",
    "ItemCheck",
    "RecordSchema",
    "item_value_problem",
    "normalise",
    "record_problems",
    "schema_for",
]

log = structlog.get_logger(__name__)

#: CPU seconds checking one Submit batch or one record change may take (the checking
#: thread's own time, time.thread_time, so load elsewhere does not count): 10,000 ordinary
#: records need about 0.2 s; long values against a pattern RE2 must simulate position by
#: position (such as ``.*a.{999}``) up to about 10 microseconds a byte.
MAX_CHECK_SECONDS = 5.0

UNDECLARED = "not declared in the catalog entry (第十二条)"
REQUIRED_MISSING = "required item is missing or empty (第十五条)"
KEY_MISSING = "key item is missing or empty; records are identified by their key items"

_INTEGER_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_RE = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})(?P<sep>[T ])"
    r"(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?)"
    r"(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})?"
)
_MOBILE_RE = re.compile(r"1[3-9][0-9]{9}")
_FIXED_LINE_RE = re.compile(r"0[0-9]{2,3}-?[0-9]{7,8}(?:-[0-9]{1,6})?")
_TRUE = frozenset({"true", "1", "是"})
_FALSE = frozenset({"false", "0", "否"})

# A value check gives the canonical form of a (stripped) value, or the reason it is refused.
Result = tuple[str, None] | tuple[None, str]
Canonical = Callable[[str], Result]


# --- data types ---------------------------------------------------------------------------


def _as_string(value: str) -> tuple[str, None]:
    return value, None


def _as_integer(value: str) -> Result:
    if not _INTEGER_RE.fullmatch(value):
        return None, "not an integer: optional sign and decimal digits, e.g. -42"
    # On the text, not through int(): int() takes time quadratic in the number of digits and
    # refuses more than 4,300 of them (ValueError); this is what str(int(value)) would give.
    digits = value.lstrip("+-").lstrip("0") or "0"
    return ("-" + digits if value[0] == "-" and digits != "0" else digits), None


def _as_decimal(value: str) -> Result:
    if not _DECIMAL_RE.fullmatch(value):
        return None, 'not a decimal number: digits with "." as separator, e.g. 3.14'
    # On the text, not through decimal.Decimal: its context rounds to 28 significant digits
    # (two different amounts would compare equal) and overflows past a million digits.
    whole, _, fraction = value.lstrip("+-").partition(".")
    whole = whole.lstrip("0") or "0"
    fraction = fraction.rstrip("0")
    text = f"{whole}.{fraction}" if fraction else whole
    return ("-" + text if value[0] == "-" and text != "0" else text), None


def _as_date(value: str) -> Result:
    if not _DATE_RE.fullmatch(value):
        return None, "not a date YYYY-MM-DD"
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return None, f"{value} is not a real calendar date"
    return value, None


def _as_datetime(value: str) -> Result:
    match = _DATETIME_RE.fullmatch(value)
    if match is None:
        return None, (
            "not a datetime: RFC 3339 with an offset (2024-01-31T08:00:00+08:00) or "
            "YYYY-MM-DD HH:MM:SS in China Standard Time"
        )
    zone = match["zone"]
    if zone is None and match["sep"] == "T":
        return None, "datetime needs an offset (Z or +08:00) or the form YYYY-MM-DD HH:MM:SS"
    try:
        moment = dt.datetime.fromisoformat(f"{match['date']}T{match['time']}{zone or ''}")
    except ValueError:
        return None, f"{value} is not a real date and time"
    if zone is None:
        moment = moment.replace(tzinfo=CST)
    utc = moment.astimezone(dt.UTC)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z", None


def _as_boolean(value: str) -> Result:
    lowered = value.lower()
    if lowered in _TRUE:
        return "true", None
    if lowered in _FALSE:
        return "false", None
    return None, "not a boolean: true/false, 1/0 or 是/否"


def _enum_check(allowed: tuple[str, ...]) -> Canonical:
    values = frozenset(allowed)
    shown = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")

    def check(value: str) -> Result:
        if value in values:
            return value, None
        return None, f"not one of the allowed values ({shown})"

    return check


# --- rules --------------------------------------------------------------------------------
# The national-code checks take a fast path for valid values (a batch of ten thousand citizen
# ids must not cost a strptime each) and ask node.codes, the reference, whenever the fast path
# has any doubt, so the verdict and the message are always node.codes'. The tests check the two
# agree on random values.

_ID_FAST_RE = re.compile(r"[1-9][0-9]{16}[0-9X]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_CREDIT_FAST_RE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}")
_CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUE = {c: i for i, c in enumerate(_CREDIT_CHARSET)}
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def citizen_id_fast_ok(value: str) -> bool:
    """True only for a valid GB 11643 number (False may still be valid: ask node.codes)."""
    if not _ID_FAST_RE.fullmatch(value):
        return False
    try:
        birth = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if birth.year < 1900 or birth > dt.datetime.now(dt.UTC).date():
        return False
    total = sum(map(operator.mul, map(int, value[:17]), _ID_WEIGHTS))
    return value[17] == _ID_CHECK[total % 11]


def credit_code_fast_ok(value: str) -> bool:
    """True only for a valid GB 32100 code (False may still be valid: ask node.codes)."""
    if not _CREDIT_FAST_RE.fullmatch(value):
        return False
    total = sum(map(operator.mul, map(_CREDIT_VALUE.__getitem__, value[:17]), _CREDIT_WEIGHTS))
    return value[17] == _CREDIT_CHARSET[(31 - total % 31) % 31]


def _citizen_id(value: str) -> Result:
    value = value.upper()
    if citizen_id_fast_ok(value):
        return value, None
    problem = citizen_id_problem(value)
    if problem is not None:
        return None, f"公民身份号码 {problem}"
    return value, None


def _credit_code(value: str) -> Result:
    value = value.upper()
    if credit_code_fast_ok(value):
        return value, None
    problem = credit_code_problem(value)
    if problem is not None:
        return None, f"统一社会信用代码 {problem}"
    return value, None


def _phone(value: str) -> Result:
    if _MOBILE_RE.fullmatch(value) or _FIXED_LINE_RE.fullmatch(value):
        return value, None
    return None, (
        "not a phone number: a mobile number 1[3-9] + 9 digits, or a fixed line with its "
        "area code such as 0591-87654321"
    )


def _pattern_check(pattern: str) -> Canonical:
    # Compiled on first use, through node.catalog._patterns' bounded cache: schemas never hold RE2
    # programs themselves, and a Verify (which needs no pattern) never compiles one.
    shown = quote_pattern(pattern)

    def check(value: str) -> Result:
        try:
            compiled = compile_pattern(pattern)
        except UnsupportedPattern as refusal:
            # An entry stored before patterns ran on RE2 (node.catalog._patterns): the rule
            # cannot be checked, so no value passes it, and the reason tells the provider what
            # to fix.
            _log_unsupported(pattern, str(refusal))
            return None, (
                f"cannot be checked: the item's pattern {shown} is refused ({refusal}; "
                f"{ENGINE}); the provider must change the rule (UpdateResource)"
            )
        if len(value) > MAX_PATTERN_VALUE_LENGTH:
            return None, (
                f"too long to check against the pattern: at most {MAX_PATTERN_VALUE_LENGTH} "
                f"characters, got {len(value)}"
            )
        if compiled.fullmatch(value):
            return value, None
        return None, f"does not match the pattern {shown}"

    return check


@functools.lru_cache(maxsize=CACHED_PATTERNS)
def _log_unsupported(pattern: str, reason: str) -> None:
    # Cached: logged once per pattern, not once per value.
    log.warning("validation.pattern_unsupported", pattern=pattern[:64], reason=reason)


_TYPE_CHECKS: dict[DataType, Canonical] = {
    DataType.STRING: _as_string,
    DataType.INTEGER: _as_integer,
    DataType.DECIMAL: _as_decimal,
    DataType.DATE: _as_date,
    DataType.DATETIME: _as_datetime,
    DataType.BOOLEAN: _as_boolean,
}


def _checks(item: DataItem, *, lookup: bool = False) -> tuple[Canonical, ...]:
    """The item's checks in order; ``lookup``: only those that give the canonical form, without
    the pattern and the length (see :meth:`ItemCheck.lookup_form`)."""
    rule = item.validation
    checks: list[Canonical] = []
    if item.data_type is DataType.ENUM:
        checks.append(_enum_check(rule.enum_values))
    else:
        checks.append(_TYPE_CHECKS[item.data_type])
    match rule.kind:
        case ValidationKind.CITIZEN_ID:
            checks.append(_citizen_id)
        case ValidationKind.CREDIT_CODE:
            checks.append(_credit_code)
        case ValidationKind.DATE:
            checks.append(_as_date)
        case ValidationKind.ENUM if item.data_type is not DataType.ENUM:
            checks.append(_enum_check(rule.enum_values))
        case ValidationKind.PATTERN if rule.pattern and not lookup:
            checks.append(_pattern_check(rule.pattern))
        case ValidationKind.PHONE:
            checks.append(_phone)
        case _:
            pass
    if rule.max_length > 0 and not lookup:
        limit = rule.max_length

        def max_length(value: str) -> Result:
            if len(value) > limit:
                return None, f"at most {limit} characters, got {len(value)}"
            return value, None

        checks.append(max_length)
    return tuple(checks)


def _run(checks: tuple[Canonical, ...], value: str) -> Result:
    current = value.strip()
    for check in checks:
        result, problem = check(current)
        if result is None:
            assert problem is not None
            return None, problem
        current = result
    return current, None


@dataclass(frozen=True, slots=True)
class ItemCheck:
    """The compiled checks of one data item."""

    item: DataItem
    checks: tuple[Canonical, ...]
    lookup: tuple[Canonical, ...]

    @classmethod
    def of(cls, item: DataItem) -> ItemCheck:
        return cls(item, _checks(item), _checks(item, lookup=True))

    def canonical(self, value: str) -> Result:
        """``(canonical form, None)`` for a valid value, ``(None, reason)`` otherwise."""
        return _run(self.checks, value)

    def lookup_form(self, value: str) -> Result:
        """What :meth:`canonical` gives, except that the item's pattern and maximum length are
        not checked: for a value a caller looks records up by or compares with (Verify,
        Compare, Query), never stores. Those two rules do not change a value's canonical form,
        so a value they refuse equals no stored value anyway, unless the rule changed after
        the record was stored, and then it should still find it. It also means a consumer's
        value never runs a provider's pattern."""
        return _run(self.lookup, value)

    def normalise(self, value: str) -> str:
        """The form to compare a claimed or looked-up value in: its :meth:`lookup_form`; an
        invalid one only stripped (so it can never equal a stored value, which is valid)."""
        canonical, _ = self.lookup_form(value)
        return value.strip() if canonical is None else canonical


class RecordSchema:
    """One catalog entry's items, compiled once: what a record of the resource must look like."""

    def __init__(self, entry: ResourceEntry) -> None:
        self.items: dict[str, ItemCheck] = {item.name: ItemCheck.of(item) for item in entry.items}
        self.key_items: tuple[str, ...] = tuple(i.name for i in entry.items if i.key)
        self.required: tuple[str, ...] = tuple(i.name for i in entry.items if i.required or i.key)
        #: Items with a PATTERN rule: the checks whose cost grows with the value's length.
        self.patterned: frozenset[str] = frozenset(
            i.name
            for i in entry.items
            if i.validation.kind is ValidationKind.PATTERN and i.validation.pattern
        )

    def clean(
        self,
        values: Mapping[str, str],
        allowed_extra: frozenset[str] = frozenset(),
        *,
        budget: Callable[[], None] | None = None,
    ) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The record in canonical form and every problem with it as ``(item, reason)``.

        Empty values count as absent and are left out of the canonical record. Extra items
        (temporary collection) are stored stripped, without rules: the catalog has none for
        them. ``budget`` is called before each pattern check and raises to stop the work.
        """
        cleaned: dict[str, str] = {}
        problems: list[tuple[str, str]] = []
        items = self.items
        if len(values) > len(items) + len(allowed_extra):
            # One rejection for the record, not one per surplus value: the acknowledgement
            # stays small whatever a record carries. It names a few of the undeclared items.
            undeclared = sorted(n for n in values if n not in items and n not in allowed_extra)
            extra = f" and the batch's temporary collection {len(allowed_extra)} more"
            return cleaned, [
                (
                    "",
                    f"{quote_each(undeclared)} {UNDECLARED}: the record carries {len(values)} "
                    f"values, the catalog entry declares {len(items)} items"
                    f"{extra if allowed_extra else ''}",
                )
            ]
        for name, raw in values.items():
            check = items.get(name)
            if check is None:
                if name not in allowed_extra:
                    problems.append((name, UNDECLARED))
                elif stripped := raw.strip():
                    cleaned[name] = stripped
                continue
            if not raw or raw.isspace():
                continue
            if budget is not None and name in self.patterned:
                budget()
            canonical, problem = check.canonical(raw)
            if canonical is None:
                assert problem is not None
                problems.append((name, problem))
            else:
                cleaned[name] = canonical
        # A set, not a scan of problems per required item: that was quadratic (200 required
        # items missing from 10,000 records took over 5 s of CPU).
        named = {item for item, _ in problems}
        for name in self.required:
            if name not in cleaned and name not in named:
                item = items[name].item
                problems.append((name, KEY_MISSING if item.key else REQUIRED_MISSING))
        return cleaned, problems


#: Compiled schemas by the identity of the entry object (the catalog hands out one parsed
#: entry per stored body, so the hot path sees the same object call after call): hashing a
#: whole entry for the value-keyed cache below cost a Verify about 1% of its CPU. The entry is
#: kept with its schema, so its id cannot be reused while the pair is cached.
_BY_IDENTITY: dict[int, tuple[ResourceEntry, RecordSchema]] = {}
_BY_IDENTITY_MAX = 256


def schema_for(entry: ResourceEntry) -> RecordSchema:
    """The compiled schema of ``entry`` (cached: entries are immutable)."""
    hit = _BY_IDENTITY.get(id(entry))
    if hit is not None and hit[0] is entry:
        return hit[1]
    schema = _schema_by_value(entry)
    if len(_BY_IDENTITY) >= _BY_IDENTITY_MAX:
        _BY_IDENTITY.pop(next(iter(_BY_IDENTITY)))
    _BY_IDENTITY[id(entry)] = (entry, schema)
    return schema


@functools.lru_cache(maxsize=256)
def _schema_by_value(entry: ResourceEntry) -> RecordSchema:
    return RecordSchema(entry)


@functools.lru_cache(maxsize=1024)
def _item_check(item: DataItem) -> ItemCheck:
    return ItemCheck.of(item)


# --- public functions ---------------------------------------------------------------------


def item_value_problem(item: DataItem, value: str) -> str | None:
    """Why ``value`` breaks ``item``'s data type, rule or length, or None when it is valid."""
    return _item_check(item).canonical(value)[1]


def normalise(item: DataItem, value: str) -> str:
    """``value`` in the canonical form used for comparison (see module docs)."""
    return _item_check(item).normalise(value)


def record_problems(
    entry: ResourceEntry, values: Mapping[str, str], *, allowed_extra: frozenset[str]
) -> list[tuple[str, str]]:
    """Every problem of one submitted record as ``(item, reason)``; empty when it is valid.

    Items not declared in ``entry`` are refused unless named in ``allowed_extra`` (a temporary
    collection, 第十二条); required and key items must be present and non-empty.
    """
    return schema_for(entry).clean(values, allowed_extra)[1]
