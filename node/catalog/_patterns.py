"""PATTERN validation rules on a linear-time engine (第三十七条: no input may stall the node).

A provider writes a PATTERN rule's regular expression in the syntax of Python's ``re`` (the
syntax the rule always had), and the node matches it against whole values with RE2
(google-re2), whose running time is linear in the value: a backtracking engine takes time
exponential in the value for patterns such as ``^(a+)+$``, and one call could freeze the node.

:func:`translate` rewrites the pattern into RE2 syntax with Python's meanings, so a pattern
that both engines take matches the same values:

- ``\\d``, ``\\w`` and ``\\s`` keep Python's Unicode meanings (``\\w`` matches 张; RE2's own
  are ASCII-only); ``(?a)`` makes them ASCII, as in Python;
- ``\\uXXXX``, ``\\UXXXXXXXX``, ``\\N{...}``, octal escapes and ``\\Z`` are rewritten; ``{,n}`` is
  ``{0,n}`` (RE2 would read it as text); groups do not capture (a full match needs none);
- ``\\p{Han}``-style Unicode classes and ``\\z`` are RE2 additions the node also accepts.

What RE2 cannot do in linear time is refused, naming the construct: backreferences,
lookahead and lookbehind, atomic groups, possessive quantifiers, conditionals; also ``\\b``
and ``\\B`` (RE2's word boundaries are ASCII-only, so they would change meaning for Chinese
text), ``\\W`` or ``\\S`` beside other members of a ``[...]`` set, and ``(?a)`` with ``(?i)``.

Bounds: a pattern has at most :data:`MAX_PATTERN_LENGTH` characters and compiles within
:data:`PATTERN_MAX_MEM` bytes of RE2 memory (its program and its DFA caches); an entry's
patterns together compile to at most :data:`MAX_ENTRY_PATTERN_SIZE` RE2 instructions, which
bounds the work of checking an entry; at most :data:`CACHED_PATTERNS` compiled patterns are
kept; a value longer than :data:`MAX_PATTERN_VALUE_LENGTH` is not matched (node.records._validation
refuses it). Matching releases the GIL, so a worker thread can match while the event loop
serves other calls (Submit checks its batches in one, within node.records._validation's
``MAX_CHECK_SECONDS``).
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Any

import re2

from gateway.quote import quote

__all__ = [
    "CACHED_PATTERNS",
    "ENGINE",
    "MAX_ENTRY_PATTERN_SIZE",
    "MAX_PATTERN_LENGTH",
    "MAX_PATTERN_VALUE_LENGTH",
    "PATTERN_MAX_MEM",
    "Pattern",
    "UnsupportedPattern",
    "compile_pattern",
    "quote_pattern",
    "translate",
]

#: The longest pattern a rule may have, in characters.
MAX_PATTERN_LENGTH = 1000
#: The longest value a pattern is run on, in characters: matching is linear in the value, but
#: against a pattern RE2 must simulate position by position (such as ``.*a.{999}``) each byte
#: can cost up to about 10 microseconds, so one match stays within about 0.3 s.
MAX_PATTERN_VALUE_LENGTH = 10_000
#: RE2 memory budget of one compiled pattern (RE2 ``max_mem``): about 2/3 for the program,
#: the rest for the DFA caches; a pattern whose program does not fit is refused. ``\w{1,50}``
#: fits (Python's Unicode ``\w`` is about 1,350 instructions per repetition); ``[0-9]{1,1000}``
#: and ``[\u4e00-\u9fa5]{1,1000}`` fit easily.
PATTERN_MAX_MEM = 1 << 20
#: RE2 instructions all the distinct patterns of one catalog entry may compile to together:
#: compiling costs about a microsecond per instruction, on the event loop, at registration.
MAX_ENTRY_PATTERN_SIZE = 100_000
#: Compiled patterns kept in memory (each at most PATTERN_MAX_MEM, usually a few KiB).
CACHED_PATTERNS = 256

#: The engine named in every refusal, so the provider knows which syntax to look up.
ENGINE = (
    "patterns run on a linear-time engine (RE2 syntax), which has no backreferences, "
    "lookaround, atomic groups or possessive quantifiers"
)


class UnsupportedPattern(ValueError):
    """A pattern the node will not run; the message says why, naming the construct.
    ``cost``: RE2 instructions' worth of work spent finding out (counted against an entry's
    budget): none for what translation refuses, a full pattern's for a failed compile."""

    def __init__(self, reason: str, cost: int = 0) -> None:
        super().__init__(reason)
        self.cost = cost


def quote_pattern(pattern: str) -> str:
    """The pattern as messages show it (gateway.quote: a short prefix and its length)."""
    return quote(pattern)


# --- translation --------------------------------------------------------------------------

_DIGITS = "0123456789"
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
_WHITESPACE = " \t\n\r\v\f"
_FLAG_LETTERS = "aiLmsux"
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MAX_REPEAT = 1000  # RE2's limit on a repetition count

# Python's \s for str patterns: the characters for which str.isspace() is true.
_SPACE_MEMBERS = (
    r"\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}"
    r"\x{205f}\x{3000}"
)
# Python's \w: str.isalnum() or "_"; equal to letters, numbers and "_" (the tests check it).
_WORD_MEMBERS = r"\p{L}\p{N}_"

# Class members for each category, (Unicode, ASCII) as in Python without and with (?a).
_MEMBERS = {
    "d": (r"\p{Nd}", "0-9"),
    "w": (_WORD_MEMBERS, "0-9A-Za-z_"),
    "s": (_SPACE_MEMBERS, r"\t-\r\x{20}"),
}
# Negated categories inside a set: only \D has a one-member negation in RE2.
_NEGATED_MEMBER = {"D": (r"\P{Nd}", r"\x{0}-/:-\x{10ffff}")}


def _literal(code: int) -> str:
    char = chr(code)
    if char in _ASCII_ALNUM or (code >= 0x80 and not 0xD800 <= code <= 0xDFFF):
        return char
    return f"\\x{{{code:x}}}"


@dataclass
class _Flags:
    verbose: bool = False
    ascii: bool = False
    ignorecase: bool = False


class _Translator:
    """One pass over a Python-syntax pattern, writing RE2 syntax (see the module docs)."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.flags = _Flags()
        self.stack: list[_Flags] = []
        # Whether the last thing written can take a quantifier; "repeat" after a quantifier.
        self.last: str = "none"

    # - errors --------------------------------------------------------------------------

    def refuse(self, construct: str, at: int | None = None) -> UnsupportedPattern:
        where = self.i if at is None else at
        return UnsupportedPattern(f"{construct} at position {where} is not supported")

    def invalid(self, problem: str, at: int | None = None) -> UnsupportedPattern:
        where = self.i if at is None else at
        return UnsupportedPattern(f"not a valid pattern: {problem} at position {where}")

    # - reading ---------------------------------------------------------------------------

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.p[j] if j < len(self.p) else ""

    def take_while(self, allowed: str, limit: int) -> str:
        start = self.i
        while self.i < len(self.p) and self.i - start < limit and self.p[self.i] in allowed:
            self.i += 1
        return self.p[start : self.i]

    # - the pattern -----------------------------------------------------------------------

    def run(self) -> str:
        self.global_flags()
        p = self.p
        while self.i < len(p):
            c = p[self.i]
            if self.flags.verbose and c in _WHITESPACE:
                self.i += 1
            elif self.flags.verbose and c == "#":
                end = p.find("\n", self.i)
                self.i = len(p) if end < 0 else end + 1
            elif c == "\\":
                self.escape()
            elif c == "[":
                self.atom(self.char_set())
            elif c == "(":
                self.group()
            elif c == ")":
                if not self.stack:
                    raise self.invalid("unbalanced parenthesis")
                self.i += 1
                self.flags = self.stack.pop()
                self.atom(")")
            elif c in "*+?":
                self.i += 1
                self.repeat(c, self.i - 1)
            elif c == "{":
                self.brace()
            elif c == ".":
                self.i += 1
                self.atom(".")
            elif c in "^$":
                self.i += 1
                self.write(c, "anchor")
            elif c == "|":
                self.i += 1
                self.write("|", "none")
            else:
                self.i += 1
                self.atom(_literal(ord(c)))
        if self.stack:
            raise self.invalid("missing ), unterminated subpattern", len(p))
        return "".join(self.out)

    def write(self, text: str, last: str) -> None:
        self.out.append(text)
        self.last = last

    def atom(self, text: str) -> None:
        self.write(text, "atom")

    def global_flags(self) -> None:
        # Python takes global flags only at the very start: (?i), (?x), (?a), ...
        while self.p.startswith("(?", self.i):
            j = self.i + 2
            letters = ""
            while j < len(self.p) and self.p[j] in _FLAG_LETTERS:
                letters += self.p[j]
                j += 1
            if not letters or j >= len(self.p) or self.p[j] != ")":
                return
            on = self.flag_letters(letters, self.i)
            self.i = j + 1
            if on:
                self.out.append(f"(?{on})")

    def flag_letters(self, letters: str, at: int, off: str = "") -> str:
        """Apply Python flag letters to the current flags; the RE2 flags to write."""
        for letter in letters + off:
            if letter == "L":
                raise self.invalid("bad inline flags: cannot use 'L' flag with a str pattern", at)
        if "x" in letters:
            self.flags.verbose = True
        if "x" in off:
            self.flags.verbose = False
        if "a" in letters:
            self.flags.ascii = True
        if "i" in letters:
            self.flags.ignorecase = True
        if "i" in off:
            self.flags.ignorecase = False
        if self.flags.ascii and self.flags.ignorecase:
            raise self.refuse("ASCII-only case folding ((?a) with (?i))", at)
        on = "".join(f for f in "ims" if f in letters)
        neg = "".join(f for f in "ims" if f in off)
        return on + (f"-{neg}" if neg else "")

    def repeat(self, text: str, at: int) -> None:
        """Write a quantifier read from ``at``, with its lazy ``?``; refuse a possessive ``+``."""
        if self.last == "repeat":
            raise self.invalid("multiple repeat", at)
        if self.last != "atom":
            raise self.invalid("nothing to repeat", at)
        if self.peek() == "?":
            self.i += 1
            text += "?"
        elif self.peek() == "+":
            raise self.refuse(f"a possessive quantifier ({self.p[at : self.i]}+)", at)
        self.write(text, "repeat")

    def brace(self) -> None:
        # {m}, {m,}, {,n}, {m,n} and Python's {,} (= *) repeat; any other { is a literal.
        start = self.i
        self.i += 1
        lo = self.take_while(_DIGITS, len(self.p))
        comma = self.peek() == ","
        hi = lo
        if comma:
            self.i += 1
            hi = self.take_while(_DIGITS, len(self.p))
        if self.peek() != "}" or self.p[start : start + 2] == "{}":
            self.i = start + 1
            self.atom(r"\{")
            return
        self.i += 1
        low = int(lo) if lo else 0
        high = int(hi) if hi else None
        if high is not None and high < low:
            raise self.invalid("min repeat greater than max repeat", start)
        if low > _MAX_REPEAT or (high is not None and high > _MAX_REPEAT):
            count = self.p[start : self.i]
            raise self.refuse(f"a repetition count above {_MAX_REPEAT} ({count})", start)
        if not comma:
            text = f"{{{low}}}"
        elif high is None:
            text = f"{{{low},}}"
        else:
            text = f"{{{low},{high}}}"
        self.repeat(text, start)

    # - groups ----------------------------------------------------------------------------

    def group(self) -> None:
        start = self.i
        self.i += 1
        if self.peek() != "?":
            self.open_group("(?:")
            return
        self.i += 1
        c = self.peek()
        rest = self.p[self.i :]
        if not c:
            raise self.invalid("unexpected end of pattern", start)
        if c == ":":
            self.i += 1
            self.open_group("(?:")
        elif rest.startswith("P<"):
            end = self.p.find(">", self.i)
            name = self.p[self.i + 2 : end] if end >= 0 else ""
            if end < 0 or not name.isidentifier():
                raise self.invalid("bad group name", start)
            self.i = end + 1
            self.open_group("(?:")  # a full match needs no captures
        elif rest.startswith("P="):
            raise self.refuse("a backreference ((?P=...))", start)
        elif rest.startswith("#"):
            end = self.comment_end()
            self.i = end
        elif c in "=!":
            raise self.refuse(f"a lookahead ((?{c}...))", start)
        elif rest.startswith(("<=", "<!")):
            raise self.refuse(f"a lookbehind ((?{rest[:2]}...))", start)
        elif c == ">":
            raise self.refuse("an atomic group ((?>...))", start)
        elif c == "(":
            raise self.refuse("a conditional group ((?(...)...))", start)
        elif c in _FLAG_LETTERS or c == "-":
            self.scoped_flags(start)
        else:
            raise self.invalid(f"unknown extension ?{c}", start)

    def comment_end(self) -> int:
        j = self.i + 1
        while j < len(self.p):
            if self.p[j] == "\\":
                j += 2
                continue
            if self.p[j] == ")":
                return j + 1
            j += 1
        raise self.invalid("missing ), unterminated comment", self.i - 2)

    def scoped_flags(self, start: int) -> None:
        on = self.take_while(_FLAG_LETTERS, len(self.p))
        off = ""
        if self.peek() == "-":
            self.i += 1
            off = self.take_while(_FLAG_LETTERS, len(self.p))
            if not off or any(f not in "imsx" for f in off):
                raise self.invalid("bad inline flags: only i, m, s and x can be turned off", start)
        if self.peek() == ")":
            raise self.invalid("global flags not at the start of the expression", start)
        if self.peek() != ":":
            raise self.invalid("missing -, : or )", start)
        self.i += 1
        outer = self.flags
        self.flags = _Flags(outer.verbose, outer.ascii, outer.ignorecase)
        letters = self.flag_letters(on, start, off)
        self.stack.append(outer)
        self.write(f"(?{letters}:" if letters else "(?:", "none")

    def open_group(self, text: str) -> None:
        self.stack.append(self.flags)
        self.flags = _Flags(self.flags.verbose, self.flags.ascii, self.flags.ignorecase)
        self.write(text, "none")

    # - escapes ---------------------------------------------------------------------------

    def escape(self) -> None:
        start = self.i
        self.i += 1
        c = self.peek()
        if not c:
            raise self.invalid("bad escape (end of pattern)", start)
        self.i += 1
        if c == "A":
            self.write(r"\A", "anchor")
        elif c in "Zz":
            self.write(r"\z", "anchor")
        elif c in "bB":
            raise self.refuse(
                f"a word boundary (\\{c}: RE2's is ASCII-only and would not treat Chinese "
                "characters as word characters)",
                start,
            )
        elif c in "dws":
            self.atom(f"[{self.members(c)}]")
        elif c in "DWS":
            self.atom(f"[^{self.members(c.lower())}]")
        elif c in "pP":
            self.atom(self.property(c, start))
        else:
            code = self.escaped_code(c, start, in_set=False)
            self.atom(_literal(code))

    def members(self, category: str) -> str:
        unicode_members, ascii_members = _MEMBERS[category]
        return ascii_members if self.flags.ascii else unicode_members

    def property(self, c: str, start: int) -> str:
        # RE2's Unicode classes: \pN, \p{Han}, \P{Greek}, \p{^Han}.
        if self.peek() == "{":
            end = self.p.find("}", self.i)
            if end < 0:
                raise self.invalid("missing } after \\p{", start)
            name = self.p[self.i + 1 : end]
            self.i = end + 1
        else:
            name = self.peek()
            self.i += 1
        if not name or not all(ch.isalnum() or ch in "_^" for ch in name):
            raise self.invalid(f"bad Unicode class \\{c}", start)
        return f"\\{c}{{{name}}}"

    def escaped_code(self, c: str, start: int, *, in_set: bool) -> int:
        """The code point of a literal escape whose letter ``c`` was just read."""
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if c in simple:
            return simple[c]
        if in_set and c == "b":
            return 8  # [\b] is a backspace in Python
        if c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.take_while(_HEX, width)
            if len(digits) != width:
                raise self.invalid(f"incomplete escape \\{c}{digits}", start)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise self.invalid(f"bad escape \\{c}{digits}", start)
            return code
        if c == "N":
            if self.peek() != "{":
                raise self.invalid("missing { after \\N", start)
            end = self.p.find("}", self.i)
            try:
                if end < 0:
                    raise KeyError
                code = ord(unicodedata.lookup(self.p[self.i + 1 : end]))
            except KeyError:
                raise self.invalid("undefined character name", start) from None
            self.i = end + 1
            return code
        if c in _DIGITS:
            return self.numeric_escape(c, start, in_set=in_set)
        if c.isascii() and c.isalpha():
            raise self.invalid(f"bad escape \\{c}", start)
        return ord(c)

    def numeric_escape(self, c: str, start: int, *, in_set: bool) -> int:
        # Python: \0 and up to two more octal digits, three octal digits, or (outside a set)
        # a group reference such as \1 or \12.
        if c == "0" or in_set:
            if c not in _OCTAL:
                raise self.invalid(f"bad escape \\{c}", start)
            digits = c + self.take_while(_OCTAL, 2)
        elif c in _OCTAL and all(d and d in _OCTAL for d in (self.peek(), self.peek(1))):
            digits = c + self.take_while(_OCTAL, 2)
        else:
            digits = c + self.take_while(_DIGITS, 1)
            raise self.refuse(f"a backreference (\\{digits})", start)
        code = int(digits, 8)
        if code > 0o377:
            raise self.invalid(f"octal escape value \\{digits} outside of range 0-0o377", start)
        return code

    # - sets ------------------------------------------------------------------------------

    def char_set(self) -> str:
        """A [...] set (the Python rules: a ] right after [ or [^ is a member)."""
        start = self.i
        self.i += 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        members: list[str] = []
        negated_category = ""
        while True:
            if self.i >= len(self.p):
                raise self.invalid("unterminated character set", start)
            if self.p[self.i] == "]" and (members or negated_category):
                self.i += 1
                break
            member, code = self.set_item(start)
            if code is not None and self.peek() == "-":
                if self.peek(1) == "]":
                    self.i += 1
                    members += [_literal(code), _literal(ord("-"))]
                    continue
                if not self.peek(1):
                    raise self.invalid("unterminated character set", start)
                self.i += 1
                at = self.i
                _, high = self.set_item(start)
                if high is None or high < code:
                    raise self.invalid("bad character range", at)
                members.append(f"{_literal(code)}-{_literal(high)}")
                continue
            if code is None and self.peek() == "-" and self.peek(1) not in ("]", ""):
                raise self.invalid("bad character range", self.i)
            if member.startswith("^"):
                if negated_category or members:
                    raise self.refuse(
                        f"\\{member[1]} beside other members of a [...] set (write the set "
                        "without it, or use [^...])",
                        start,
                    )
                negated_category = member[1]
                continue
            if negated_category:
                raise self.refuse(
                    f"\\{negated_category} beside other members of a [...] set (write the set "
                    "without it, or use [^...])",
                    start,
                )
            members.append(member)
        if negated_category:
            # [\W] is [^\w]; [^\W] is [\w] (RE2 has no single-member negation of these).
            inner = self.members(negated_category.lower())
            return f"[{inner}]" if negate else f"[^{inner}]"
        return f"[{'^' if negate else ''}{''.join(members)}]"

    def set_item(self, start: int) -> tuple[str, int | None]:
        """One member of a set: (RE2 text, its code point when it is a single character).
        A negated category comes back as ``^W`` / ``^S``."""
        c = self.p[self.i]
        self.i += 1
        if c != "\\":
            return _literal(ord(c)), ord(c)
        at = self.i - 1
        e = self.peek()
        if not e:
            raise self.invalid("bad escape (end of pattern)", at)
        self.i += 1
        if e in "dws":
            return self.members(e), None
        if e == "D":
            unicode_member, ascii_member = _NEGATED_MEMBER["D"]
            return (ascii_member if self.flags.ascii else unicode_member), None
        if e in "WS":
            return f"^{e}", None
        if e in "pP":
            return self.property(e, at), None
        code = self.escaped_code(e, at, in_set=True)
        return _literal(code), code


def translate(pattern: str) -> str:
    """``pattern`` (Python ``re`` syntax) in RE2 syntax with the same meaning; raises
    :class:`UnsupportedPattern` naming the construct RE2 cannot run or the syntax error."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsupportedPattern(f"too long: a pattern has at most {MAX_PATTERN_LENGTH} characters")
    return _Translator(pattern).run()


# --- compiling and matching ---------------------------------------------------------------


def _options() -> Any:
    options = re2.Options()
    options.max_mem = PATTERN_MAX_MEM
    options.never_capture = True
    options.log_errors = False
    return options


# About the most instructions a pattern within PATTERN_MAX_MEM compiles to: what a compile
# that fails for size has cost by the time it fails.
_FAILED_COMPILE_COST = 80_000

_RE2_ERRORS = {
    "pattern too large": (
        f"compiles to more than the {PATTERN_MAX_MEM >> 20} MiB of RE2 memory one pattern may use; "
        "Unicode classes such as \\w or \\d cost about 1,350 and 500 instructions per "
        "repetition: narrow the class (e.g. [A-Za-z0-9_] or [\\u4e00-\\u9fa5]) or the count"
    ),
    "invalid repetition size": (
        f"repeats more than {_MAX_REPEAT} times (counts multiply when repetitions are nested)"
    ),
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern: :meth:`fullmatch` runs in time linear in the value."""

    source: str
    size: int  # RE2 program instructions
    _regexp: Any

    def fullmatch(self, value: str) -> bool:
        """Whether the whole of ``value`` matches (RE2 releases the GIL while it runs)."""
        text = value.encode("utf-8", "surrogatepass")
        return self._regexp.fullmatch(text) is not None


@functools.lru_cache(maxsize=CACHED_PATTERNS)
def _compiled(pattern: str) -> Pattern | UnsupportedPattern:
    # Refusals are cached too: a stored entry's unsupported pattern costs its compile once.
    try:
        translated = translate(pattern)
    except UnsupportedPattern as refusal:
        return refusal
    try:
        # re2._Regexp, not re2.compile: compile would also keep the object in re2's own cache.
        regexp = re2._Regexp(translated, _options())
    except re2.error as error:
        detail = error.args[0] if error.args else ""
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        for key, reason in _RE2_ERRORS.items():
            if key in text:
                return UnsupportedPattern(reason, _FAILED_COMPILE_COST)
        return UnsupportedPattern(f"not a valid pattern: {text[:100]}", _FAILED_COMPILE_COST)
    return Pattern(pattern, regexp._regexp.ProgramSize(), regexp)


def compile_pattern(pattern: str) -> Pattern:
    """The compiled pattern (cached); :class:`UnsupportedPattern` when the node will not run
    it, with a message naming the construct (see the module docs)."""
    result = _compiled(pattern)
    if isinstance(result, UnsupportedPattern):
        raise result
    return result
