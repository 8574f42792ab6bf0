"""De-identification of open data (脱密脱敏, 第二十九条): what each published item holds, and a
scan of the published rows for direct identifiers that are still in clear.

GB/T 37964-2019 (个人信息去标识化指南) names the steps: identify the identifiers (识别标识),
treat them (处理标识), then verify (验证审批). The catalog declares the treatment of each item
(:class:`~node.catalog.OpenTreatment`); :class:`Treater` applies it, and
:class:`IdentifierScan` checks what comes out, because a declaration can be wrong: a
"remarks" item published as stored may carry a phone number, and a mask that keeps too much
still shows the whole identifier.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from gateway.quote import quote
from node.catalog import DataItem, DataType, Generalization, OpenTreatmentKind
from node.codes import citizen_id_problem
from node.times import CST

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


def opened_items(items: Sequence[DataItem]) -> tuple[DataItem, ...]:
    """The items that are in the open data, in catalog order: those declaring a treatment other
    than drop, at a level that may open (第三十七条)."""
    return tuple(
        item
        for item in items
        if item.open.kind is not OpenTreatmentKind.DROP
        and item.sensitivity_level in PUBLISHED_LEVELS
    )


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
        opened = {id(item) for item in opened_items(items)}
        for item in items:
            if id(item) not in opened:
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


# --- direct identifiers (GB/T 37964 直接标识符) -------------------------------------------

CITIZEN_ID = "公民身份号码"
OLD_CITIZEN_ID = "公民身份号码（15位）"
MOBILE = "手机号码"
PERSON_NAME = "姓名"

#: Characters of a value the embedded scan reads: identifiers are looked for in notes, not in
#: documents, and the scan's cost must stay bounded per value.
MAX_SCAN_CHARS = 4096
#: Non-empty values per item that the column tests (names, 15-digit ids) look at.
NAME_SAMPLE_SIZE = 1000
#: Share of the sampled values that must look like names (or old ids) to call the column one.
COLUMN_SHARE = 0.8

# Full-width digits as digits, and x as X (a citizen id's check character in any case).
_DIGITS = str.maketrans("０１２３４５６７８９Ｘｘx", "0123456789XXX")
_NO_SEPARATORS = str.maketrans("", "", " -")
# Runs of digits, perhaps ending in X: the places an identifier can start and end. One
# character class and an optional character, so matching is linear in the text.
_RUN_RE = re.compile(r"[0-9０-９]+[XxＸｘ]?")
# Eleven digits, each pair at most one space or hyphen apart: what every identifier holds. The
# classes are disjoint, so each step has one way to match and a failed start costs at most 21
# steps: a search is linear, and text without one (most notes) costs one search in C.
_CANDIDATE_RE = re.compile(r"[0-9０-９](?:[ -]?[0-9０-９]){10}")
_MOBILE_SECOND = frozenset("3456789")


def _is_mobile(digits: str) -> bool:
    return len(digits) == 11 and digits[0] == "1" and digits[1] in _MOBILE_SECOND


def _identifier_kind(digits: str) -> str | None:
    """The kind of identifier ``digits`` (ASCII digits, perhaps a final X) is, exactly."""
    length = len(digits)
    if length == 18:
        return CITIZEN_ID if citizen_id_problem(digits) is None else None
    if length == 11:
        return MOBILE if _is_mobile(digits) else None
    if length == 13 and digits.startswith("86"):
        return MOBILE if _is_mobile(digits[2:]) else None
    return None


def direct_identifier(value: str) -> str | None:
    """The kind of personal direct identifier ``value`` is in clear, or None.

    - 公民身份号码: 18 characters with a valid GB 11643 check character (node.codes); a
      lower-case x is read as X. Old 15-digit numbers have no check character, so a single
      one cannot be told from any other 15-digit number; :class:`IdentifierScan` recognises
      a column of them instead.
    - 手机号码: a mainland mobile number, 1[3-9] and nine more digits, perhaps after +86 or
      86, with spaces or hyphens anywhere (``+86 138-1234-5678``).

    A unified social credit code (GB 32100) is not reported: it identifies an organisation
    (also a 个体工商户, whose registration is public), not a natural person, and open data
    about enterprises names them by it on purpose.
    """
    text = value.strip().translate(_DIGITS)
    if len(text) == 18 and citizen_id_problem(text) is None:
        return CITIZEN_ID
    digits = text.translate(_NO_SEPARATORS)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    return MOBILE if digits.isascii() and digits.isdigit() and _is_mobile(digits) else None


def embedded_identifiers(text: str) -> Iterator[tuple[str, int]]:
    """(kind, character offset) of each citizen id or mobile number inside ``text``'s first
    :data:`MAX_SCAN_CHARS` characters (a value that is one is found at offset 0).

    An identifier is a run of digits, or runs of digits joined by single spaces or hyphens
    (``138 1234 5678``), that is exactly one as :func:`direct_identifier` reads it; it never
    starts or ends inside a longer run of digits, so the date inside a citizen id is not a
    phone number. Each run starts at most a few candidates (together at most 18 digits), so
    the scan is linear in the text.
    """
    head = text[:MAX_SCAN_CHARS]
    if _CANDIDATE_RE.search(head) is None:
        return
    runs = [(m.start(), m.end()) for m in _RUN_RE.finditer(head)]
    count = len(runs)
    i = 0
    while i < count:
        start, end = runs[i]
        digits = head[start:end].translate(_DIGITS)
        j = i
        while True:
            kind = _identifier_kind(digits)
            if kind is not None:
                yield kind, start
                break
            if j + 1 == count or len(digits) >= 18 or digits.endswith("X"):
                break
            next_start, next_end = runs[j + 1]
            if next_start - runs[j][1] != 1 or head[runs[j][1]] not in " -":
                break
            j += 1
            digits += head[next_start:next_end].translate(_DIGITS)
        i = j + 1 if kind is not None else i + 1


# --- names ----------------------------------------------------------------------------------

# Surnames from 百家姓 (the Song-dynasty primer, in simplified characters and in its order; a
# character it lists twice, such as 郁 for 鬱, once), plus modern forms it lacks: 肖 (for 萧),
# 付 (for 傅), and the southern 覃, 邝, 冼, 练, 揭.
_SINGLE_SURNAMES = frozenset(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏水窦章"
    "云苏潘葛奚范彭郎鲁韦昌马苗凤花方俞任袁柳酆鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬安常"
    "乐于时傅皮卞齐康伍余元卜顾孟平黄和穆萧尹姚邵湛汪祁毛禹狄米贝明臧计伏成戴谈宋茅庞"
    "熊纪舒屈项祝董梁杜阮蓝闵席季麻强贾路娄危江童颜郭梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍"
    "虞万支柯昝管卢莫经房裘缪干解应宗丁宣贲邓郁单杭洪包诸左石崔吉钮龚程嵇邢滑裴陆荣翁"
    "荀羊於惠甄曲家封芮羿储靳汲邴糜松井段富巫乌焦巴弓牧隗山谷车侯宓蓬全郗班仰秋仲伊宫"
    "宁仇栾暴甘钭厉戎祖武符刘景詹束龙叶幸司韶郜黎蓟薄印宿白怀蒲邰从鄂索咸籍赖卓蔺屠蒙"
    "池乔阴胥能苍双闻莘党翟谭贡劳逄姬申扶堵冉宰郦雍郤璩桑桂濮牛寿通边扈燕冀郏浦尚农"
    "温别庄晏柴瞿阎充慕连茹习宦艾鱼容向古易慎戈廖庾终暨居衡步都耿满弘匡国文寇广禄阙东"
    "欧殳沃利蔚越夔隆师巩厍聂晁勾敖融冷訾辛阚那简饶空曾毋沙乜养鞠须丰巢关蒯相查后荆红"
    "游竺权逯盖益桓公晋楚闫法汝鄢涂钦岳帅缑亢况郈佘佴墨哈谯笪年爱阳佟言福仉督"
    "肖付覃邝冼练揭"
)
_COMPOUND_TEXT = (
    "万俟司马上官欧阳夏侯诸葛闻人东方赫连皇甫尉迟公羊澹台公冶宗政濮阳淳于单于太叔申屠公孙"
    "仲孙轩辕令狐钟离宇文长孙慕容鲜于闾丘司徒司空亓官司寇子车颛孙端木巫马公西漆雕乐正"
    "壤驷公良拓跋夹谷宰父谷梁段干百里东郭南门呼延归海羊舌微生梁丘左丘东门西门商牟伯赏"
    "南宫第五有琴"
)
_COMPOUND_SURNAMES = frozenset(_COMPOUND_TEXT[i : i + 2] for i in range(0, len(_COMPOUND_TEXT), 2))
# The 20 most common surnames (公安部户政管理研究中心《二〇二〇年全国姓名报告》), borne by
# about half of the population. Used as a set: their order does not matter here.
_COMMON_SURNAMES = frozenset("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
# Last characters that end place, organisation and product names and (almost) never a given
# name: a column of 连江县, 石狮市 or 白砂糖 is not one of names.
_NOT_NAME_ENDINGS = frozenset(
    "省市县区镇乡村路街巷道号楼栋室局厅处科所站馆院厂店场港湾岛桥湖寺庙园苑坊堂阁"
    "品机器剂油酒茶米面粉片液膏灯车箱柜桶鱼肉菜果奶糖盐醋酱包袋瓶盒罐"
)
_CJK_2_TO_4_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]{2,4}")


def _looks_like_name(value: str) -> bool:
    if not _CJK_2_TO_4_RE.fullmatch(value) or value[-1] in _NOT_NAME_ENDINGS:
        return False
    if len(value) >= 3 and value[:2] in _COMPOUND_SURNAMES:
        return True
    return len(value) <= 3 and value[0] in _SINGLE_SURNAMES


def looks_like_person_names(values: Sequence[str]) -> bool:
    """Whether a column with these values is one of personal names (姓名).

    One two-character string is no evidence (石狮 is a city, 白糖 is sugar, and both start
    with a surname), so this judges a column: at least 80% of the non-empty values are 2 to 4
    CJK characters starting with a surname (a compound one such as 欧阳 for 3 or 4
    characters) and not ending like a place, organisation or product (市, 县, 路, 糖, ...).
    From ten such values on, at least a fifth must also start with one of the 20 most common
    surnames (about half of all people bear one): place and product names that happen to
    start with a surname character spread over rare ones.
    """
    present = [v.strip() for v in values]
    present = [v for v in present if v]
    if not present:
        return False
    names = [v for v in present if _looks_like_name(v)]
    if len(names) < COLUMN_SHARE * len(present):
        return False
    if len(names) < 10:
        return True
    common = sum(1 for v in names if v[0] in _COMMON_SURNAMES)
    return common * 5 >= len(names)


# GB/T 2260 province-level codes: the first two digits of a citizen id.
_PROVINCE_TEXT = "11121314152122233132333435363741424344454650515253546162636465718182"
_PROVINCES = frozenset(_PROVINCE_TEXT[i : i + 2] for i in range(0, len(_PROVINCE_TEXT), 2))


def _looks_like_old_id(value: str) -> bool:
    """Shaped like a 15-digit citizen id (GB 11643-1989): a province, a birth date 19YYMMDD
    and three digits. Without a check character this is evidence only for a whole column."""
    if len(value) != 15 or not (value.isascii() and value.isdigit()):
        return False
    if value[:2] not in _PROVINCES:
        return False
    try:
        dt.date(1900 + int(value[6:8]), int(value[8:10]), int(value[10:12]))
    except ValueError:
        return False
    return True


# --- the scan -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """Direct identifiers of one kind in clear in one published item: in how many rows,
    and where the first is (the row, counted from 1 in the order rows were added, and the
    character offset in its value). Never the value itself: the report is not a leak."""

    item: str
    kind: str
    count: int
    first_row: int
    position: int


_KINDS = (CITIZEN_ID, OLD_CITIZEN_ID, MOBILE, PERSON_NAME)  # the order findings are listed in


class _ItemScan:
    __slots__ = ("hits", "name", "sample")

    def __init__(self, name: str) -> None:
        self.name = name
        self.sample: list[str] = []
        # kind -> [rows with one, first such row, offset in its value]; names and 15-digit ids
        # are candidates here, reported only if the column test on the sample agrees.
        self.hits: dict[str, list[int]] = {}

    def hit(self, kind: str, row: int, position: int) -> None:
        found = self.hits.get(kind)
        if found is None:
            self.hits[kind] = [1, row, position]
        else:
            found[0] += 1

    def add(self, value: str, row: int, sample_size: int) -> None:
        if len(self.sample) < sample_size:
            self.sample.append(value)
        length = len(value)
        if length <= 4:
            if _looks_like_name(value):
                self.hit(PERSON_NAME, row, 0)
            return
        if length < 11:  # too short to hold a mobile number (the shortest identifier)
            return
        if length == 15 and _looks_like_old_id(value):
            self.hit(OLD_CITIZEN_ID, row, 0)
        seen: set[str] = set()
        for kind, position in embedded_identifiers(value):
            if kind not in seen:
                seen.add(kind)
                self.hit(kind, row, position)

    def confirmed(self, kind: str) -> bool:
        if kind == PERSON_NAME:
            return looks_like_person_names(self.sample)
        if kind == OLD_CITIZEN_ID:
            old = sum(1 for value in self.sample if _looks_like_old_id(value))
            return old >= COLUMN_SHARE * len(self.sample)
        return True

    def findings(self) -> Iterator[Finding]:
        for kind in _KINDS:
            found = self.hits.get(kind)
            if found is not None and self.confirmed(kind):
                yield Finding(self.name, kind, *found)


class IdentifierScan:
    """Looks for direct identifiers in the published rows of one version (the output of
    ``treater.apply``), per published item: citizen ids and mobile numbers in every value
    (also inside text), names and 15-digit citizen ids by column over the first
    ``sample_size`` non-empty values. Pseudonymised items are not scanned (their values are
    pseudonyms by construction), dropped ones are not published; masked and generalised
    values are, since a mask that keeps too much still shows the identifier."""

    def __init__(self, treater: Treater, *, sample_size: int = NAME_SAMPLE_SIZE) -> None:
        self._sample_size = sample_size
        self._rows = 0
        self._scans = tuple(
            _ItemScan(item.name)
            for item in treater._published
            if item.open.kind is not OpenTreatmentKind.PSEUDONYMIZE
        )

    @property
    def scanned_items(self) -> tuple[str, ...]:
        return tuple(scan.name for scan in self._scans)

    def add(self, row: Mapping[str, str]) -> None:
        self._rows += 1
        number, size = self._rows, self._sample_size
        for scan in self._scans:
            value = row.get(scan.name)
            if value:
                scan.add(value, number, size)

    def findings(self) -> list[Finding]:
        """What was found, by item in catalog order; empty when nothing was."""
        return [finding for scan in self._scans for finding in scan.findings()]
