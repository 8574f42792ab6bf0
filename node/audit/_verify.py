"""Checking this node's log against what its witnesses cosigned (govnode audit verify, 第三十九条).

The hash chain alone cannot tell a log whose newest records were deleted, or whose past was
rewritten with the chain recomputed, from an honest one. A checkpoint cosigned by a witness can:
its size says how many records there were, its root what they were. The records are read, their
tree recomputed from them (not read from the stored tree), and compared with the newest
witnessed checkpoint, which comes from the witnesses themselves (so an attacker with this
node's database cannot hide it) or, offline, from this node's own checkpoints table with the
cosignatures checked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from node.audit._checkpoints import StoredCheckpoint
from node.audit._keys import Cosigner
from node.audit._log import ChainCheck
from node.tlog import NoteError, Verifier, open_note, parse_checkpoint


class WitnessedError(ValueError):
    """A witnessed checkpoint does not verify: it is no evidence of anything."""


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint of this log that a witness cosigned: ``size`` records with ``root``."""

    size: int
    root: bytes
    by: str  # who vouches for it, for messages: a witness's identity
    at: dt.datetime | None = None  # when it was cosigned, if known
    origin: str = ""
    note: bytes = b""  # the checkpoint as cosigned


def witnessed_note(
    note: bytes, origin: str, log: Verifier, cosigner: Cosigner, at: dt.datetime | None = None
) -> Witnessed:
    """The checkpoint in ``note`` after checking that this log signed it and ``cosigner``
    cosigned it."""
    try:
        opened, _ = open_note(note, [log])
        open_note(note, [cosigner.verifier])
        checkpoint = parse_checkpoint(opened.text)
    except (NoteError, ValueError) as exc:
        raise WitnessedError(f"the checkpoint {cosigner.identity} returned: {exc}") from None
    if checkpoint.origin != origin:
        raise WitnessedError(
            f"{cosigner.identity} returned a checkpoint of {checkpoint.origin[:80]!r}, "
            f"not of {origin}"
        )
    return Witnessed(
        checkpoint.size, checkpoint.root, str(cosigner.identity), at, checkpoint.origin, note
    )


def stored_witnessed(
    stored: StoredCheckpoint, origin: str, log: Verifier, cosigners: Sequence[Cosigner]
) -> Witnessed:
    """This node's own newest cosigned checkpoint, believed only if a cosignature in it
    verifies under a witness key statement that itself verifies."""
    for cosigner in cosigners:
        try:
            return witnessed_note(stored.note, origin, log, cosigner, stored.made_at)
        except WitnessedError:
            continue
    raise WitnessedError(
        f"the checkpoint of {stored.size} records in this node's table carries no cosignature "
        "that verifies"
    )


def sizes_to_check(witnessed: Sequence[Witnessed]) -> set[int]:
    return {w.size for w in witnessed}


def problems(check: ChainCheck, witnessed: Sequence[Witnessed]) -> list[str]:
    """What the records, as they are, contradict of the witnessed checkpoints; empty if
    nothing. ``check`` is a chain check from the first record with roots at their sizes (or,
    after a prune, from the anchor with the kept subtrees' frontier: a checkpoint inside the
    pruned records is the archive's to check, govnode audit verify-archive)."""
    found: list[str] = []
    records = check.size
    for w in sorted(witnessed, key=lambda w: -w.size):
        if w.size < check.after:
            continue
        when = f" at {w.at.isoformat(timespec='seconds')}" if w.at else ""
        if records < w.size:
            found.append(
                f"records #{records + 1} to #{w.size} are missing: {w.by} cosigned a "
                f"checkpoint of {w.size} records{when}, and the log holds {records}"
            )
        elif check.roots.get(w.size) != w.root:
            found.append(
                f"the first {w.size} records are not the ones {w.by} cosigned{when}: their "
                "Merkle root differs, so records up to that size were altered or replaced "
                "(their hash chain was recomputed to hide it)"
            )
    return found
