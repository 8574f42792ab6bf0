"""Checkpoints (c2sp.org/tlog-checkpoint): the text of a signed note that states a log's tree
head, one line each for the origin (the log's name), the tree size and the base64 root, then
optional extension lines (NOT RECOMMENDED by the spec: monitors cannot audit them).

A log signs a checkpoint only if it is consistent with every checkpoint it signed before; that
rule is the caller's (node.audit), this module only reads and writes the text.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from node.tlog._hashing import HASH_SIZE

MAX_SIZE = 2**63 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(ValueError):
    """A checkpoint text that the spec does not allow."""


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _check_line(what: str, line: str) -> None:
    if not line:
        raise CheckpointError(f"the {what} line is empty")
    for c in line:
        if c < " ":
            raise CheckpointError(f"control character {c!r} in the {what} line {_quote(line)}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"a tree size is in 0..2**63-1, not {self.size}")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"a root hash is {HASH_SIZE} bytes, not {len(self.root)}")
        for line in self.extensions:
            _check_line("extension", line)

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in a
        newline."""
        root = base64.b64encode(self.root).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint a note text states; :class:`CheckpointError` if it is not one."""
    if not text.endswith("\n"):
        raise CheckpointError(f"a checkpoint text ends with a newline: {_quote(text[-40:])}")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(f"a checkpoint has origin, size and root lines: {_quote(text)}")
    origin, size, root, *extensions = lines
    _check_line("origin", origin)
    if not _DECIMAL.fullmatch(size):
        raise CheckpointError(f"the size line is a decimal without leading zeros: {_quote(size)}")
    if int(size) > MAX_SIZE:
        raise CheckpointError(f"the tree size {_quote(size)} is not below 2**63")
    try:
        raw = base64.b64decode(root, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"the root line is not base64: {_quote(root)}") from None
    if base64.b64encode(raw).decode("ascii") != root:
        raise CheckpointError(f"the root line is not canonical base64: {_quote(root)}")
    if len(raw) != HASH_SIZE:
        raise CheckpointError(f"the root hash is {HASH_SIZE} bytes, not {len(raw)}")
    return Checkpoint(origin, int(size), raw, tuple(extensions))
