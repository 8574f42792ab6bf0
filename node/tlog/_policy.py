"""Trust policies (c2sp.org/tlog-policy): which logs a verifier accepts, which witnesses it
knows, and the quorum of witnesses whose cosignatures make a checkpoint trusted.

    log <vkey> [url]
    witness <name> <vkey> [url]
    group <name> all|any|<k> <member>...
    quorum <name>|none

Items are separated by spaces and tabs; blank lines and ``#`` comment lines are ignored; a group
or the quorum names only witnesses and groups defined above it (so there are no cycles), each
member at most once. A province's policy for its own log might end
``group cities 2 xiamen fuzhou quanzhou`` and ``quorum cities``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from node.tlog._checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from node.tlog._note import (
    TYPE_COSIGNATURE_V1,
    TYPE_ECDSA,
    TYPE_ED25519,
    AnyVerifier,
    NoteError,
    Verifier,
    parse_note,
    parse_vkey,
    quote,
    verified_signatures,
)

#: The spec asks for at least 32 of each; more than this many is refused as a mistake.
MAX_LOGS = MAX_WITNESSES = MAX_GROUPS = 256
_LOG_TYPES = (TYPE_ED25519, TYPE_ECDSA)
_WITNESS_TYPES = (TYPE_COSIGNATURE_V1,)
_WHITESPACE = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]*")
# tab, newline, printable ASCII and anything non-ASCII (opaque to the format)
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class PolicyError(ValueError):
    """A policy file that the spec does not allow; the message names the line."""


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


class Policy:
    """A parsed policy. ``logs`` are the accepted log keys, ``witnesses`` the witness keys by
    witness name, ``quorum`` the witness or group that must be satisfied (None: no
    cosignatures needed)."""

    def __init__(
        self,
        logs: tuple[Verifier, ...],
        witnesses: Mapping[str, Verifier],
        groups: Mapping[str, Group],
        quorum: str | None,
        *,
        log_urls: tuple[str | None, ...] = (),
        witness_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.logs = logs
        self.witnesses: Mapping[str, Verifier] = MappingProxyType(dict(witnesses))
        self.groups: Mapping[str, Group] = MappingProxyType(dict(groups))
        self.quorum = quorum
        self.log_urls = log_urls or (None,) * len(logs)
        self.witness_urls: Mapping[str, str] = MappingProxyType(dict(witness_urls or {}))

    def _met(self, name: str, cosigned: set[str]) -> bool:
        group = self.groups.get(name)
        if group is None:
            return name in cosigned
        return sum(self._met(m, cosigned) for m in group.members) >= group.threshold

    def satisfied(self, cosigned_by: Iterable[str]) -> bool:
        """Whether the witnesses named (those whose cosignatures verified) meet the quorum."""
        return self.quorum is None or self._met(self.quorum, set(cosigned_by))

    def _lacking(self, name: str, cosigned: set[str]) -> list[str]:
        group = self.groups.get(name)
        if group is None:
            return [f"witness {name} has not cosigned"]
        met = sum(self._met(m, cosigned) for m in group.members)
        said = [f"group {name} needs {group.threshold} of {', '.join(group.members)}; has {met}"]
        for member in group.members:
            if member in self.groups and not self._met(member, cosigned):
                said += self._lacking(member, cosigned)
        return said

    def missing(self, cosigned_by: Iterable[str]) -> str:
        """What the quorum still lacks, as a sentence ("" when it is met), e.g. "group cities
        needs 2 of xiamen, fuzhou, quanzhou; has 1"."""
        cosigned = set(cosigned_by)
        if self.quorum is None or self._met(self.quorum, cosigned):
            return ""
        return "; ".join(self._lacking(self.quorum, cosigned))

    def verify_cosignatures(self, note: bytes) -> tuple[str, ...]:
        """The names of the witnesses whose cosignatures on ``note`` verify, in policy order.
        Unknown signatures are ignored; a known witness's failing one raises NoteError."""
        sigs = verified_signatures(parse_note(note), list(self.witnesses.values()))
        keys = {(s.name, s.key_id) for s in sigs}
        return tuple(n for n, v in self.witnesses.items() if (v.name, v.key_id) in keys)

    def verify(self, note: bytes) -> Checkpoint:
        """A checkpoint this policy trusts: signed by one of its logs (under the log's own name
        as origin) and cosigned by a quorum. Raises NoteError otherwise."""
        parsed = parse_note(note)
        try:
            checkpoint = parse_checkpoint(parsed.text)
        except CheckpointError as exc:
            raise NoteError(f"the note is not a checkpoint: {exc}") from None
        logs = [v for v in self.logs if v.name == checkpoint.origin]
        if not logs:
            raise NoteError(f"the policy knows no log {quote(checkpoint.origin)}")
        if not verified_signatures(parsed, logs):
            raise NoteError(f"the log {quote(checkpoint.origin)} did not sign the checkpoint")
        cosigned = self.verify_cosignatures(note)
        if not self.satisfied(cosigned):
            raise NoteError(f"the checkpoint lacks its quorum: {self.missing(cosigned)}")
        return checkpoint


def _vkey(text: str, types: tuple[int, ...], what: str, number: int) -> AnyVerifier:
    try:
        verifier = parse_vkey(text)
    except NoteError as exc:
        raise PolicyError(f"line {number}: {exc}") from None
    if verifier.type not in types:
        allowed = " or ".join(f"0x{t:02x}" for t in types)
        raise PolicyError(
            f"line {number}: a {what} key is of type {allowed}, not 0x{verifier.type:02x}"
        )
    return verifier


def parse_policy(text: str) -> Policy:
    """Read a policy file; :class:`PolicyError` names the first line that is wrong."""
    logs: list[AnyVerifier] = []
    log_urls: list[str | None] = []
    witnesses: dict[str, AnyVerifier] = {}
    witness_urls: dict[str, str] = {}
    groups: dict[str, Group] = {}
    quorum: tuple[str | None] | None = None

    for number, raw in enumerate(text.split("\n"), start=1):
        bad = _FORBIDDEN.search(raw)
        if bad:
            raise PolicyError(f"line {number}: control character {bad.group()!r}")
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        keyword, *items = _WHITESPACE.split(line)

        def fail(message: str, number: int = number) -> PolicyError:
            return PolicyError(f"line {number}: {message}")

        def new_name(name: str) -> str:
            if name == "none":
                raise fail("the name 'none' is predefined")
            if name in witnesses or name in groups:
                raise fail(f"{quote(name)} is already defined")
            return name

        if keyword == "log":
            if not 1 <= len(items) <= 2:
                raise fail("a log line is 'log <vkey> [url]'")
            verifier = _vkey(items[0], _LOG_TYPES, "log", number)
            if any(v.public_bytes == verifier.public_bytes for v in logs):
                raise fail("this log's key is already listed")
            if len(logs) == MAX_LOGS:
                raise fail(f"more than {MAX_LOGS} logs")
            logs.append(verifier)
            log_urls.append(items[1] if len(items) == 2 else None)
        elif keyword == "witness":
            if not 2 <= len(items) <= 3:
                raise fail("a witness line is 'witness <name> <vkey> [url]'")
            name = new_name(items[0])
            verifier = _vkey(items[1], _WITNESS_TYPES, "witness", number)
            for other, v in witnesses.items():
                if v.public_bytes == verifier.public_bytes:
                    raise fail(f"witness {quote(other)} has the same key")
                if (v.name, v.key_id) == (verifier.name, verifier.key_id):
                    raise fail(f"witness {quote(other)} has the same key name and id")
            if len(witnesses) == MAX_WITNESSES:
                raise fail(f"more than {MAX_WITNESSES} witnesses")
            witnesses[name] = verifier
            if len(items) == 3:
                witness_urls[name] = items[2]
        elif keyword == "group":
            if len(items) < 3:
                raise fail("a group line is 'group <name> all|any|<k> <member>...'")
            name = new_name(items[0])
            members = tuple(items[2:])
            for member in members:
                if member not in witnesses and member not in groups:
                    raise fail(f"member {quote(member)} is not a witness or group defined above")
            if len(set(members)) != len(members):
                raise fail("a group lists each member once")
            k = items[1]
            if k == "all":
                threshold = len(members)
            elif k == "any":
                threshold = 1
            elif _THRESHOLD.fullmatch(k) and int(k) <= len(members):
                threshold = int(k)
            else:
                raise fail(f"the threshold is all, any or 1..{len(members)}, not {quote(k)}")
            if len(groups) == MAX_GROUPS:
                raise fail(f"more than {MAX_GROUPS} groups")
            groups[name] = Group(name, threshold, members)
        elif keyword == "quorum":
            if len(items) != 1:
                raise fail("a quorum line is 'quorum <name>|none'")
            if quorum is not None:
                raise fail("a policy has one quorum line")
            name = items[0]
            if name != "none" and name not in witnesses and name not in groups:
                raise fail(f"the quorum {quote(name)} is not a witness or group defined above")
            quorum = (None if name == "none" else name,)
        else:
            raise fail(f"unknown keyword {quote(keyword)}")

    if quorum is None:
        raise PolicyError("the policy has no quorum line")
    return Policy(
        tuple(logs),
        witnesses,
        groups,
        quorum[0],
        log_urls=tuple(log_urls),
        witness_urls=witness_urls,
    )
