"""The rejections of a Submit acknowledgement, bounded in size whatever the batch.

A refused record used to get one rejection per problem. 10,000 records (MAX_BATCH_RECORDS)
against an entry of 1,000 items (MAX_ITEMS) are up to ten million problems: an ack of hundreds
of megabytes for a request of a few, far over the 4 MiB a gRPC message may take
(``limits.max_message_bytes``). The batch was committed, but its ack could not be sent; a
resend got the stored outcome, just as large, so the provider could never learn it. So:

- every refused record is listed, with at least one rejection: ``SubmitAck.rejections`` names
  every refused index, whatever else is cut;
- a record lists at most :data:`REASONS_PER_RECORD` problems (sorted by item name, the record
  as a whole first), then one rejection with item "" saying how many more it has;
- a reason is at most :data:`REASON_BYTES` of UTF-8 (gateway.quote.clip_message), and an item
  name longer than any catalog item's (a name the caller made up) is not echoed as the item: the
  rejection is the record's (item ""), its reason quoting a prefix of the name;
- the records' rejections, in batch order, take at most :data:`ACK_REASON_BYTES` of the ack
  (counted as encoded in it); from the first refused record whose rejections would pass that,
  each refused record gets the single rejection :data:`NOT_LISTED`.

The worst case is :data:`MAX_ACK_BYTES`, 1.89 MiB: under half the default message limit.
Submit stores the bounded list with the batch (``submit_batch.rejections``), so a resend
replays the same ack; :func:`bounded` gives back what it is given when that is bounded already,
and cuts a list stored before these bounds to them.

Pure: no database, no grpc. The sizes are protobuf's encoding of ``RecordRejection`` within
``SubmitAck`` (field 4), worked out here so the domain needs no generated code; the tests check
them against the real messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import groupby

from gateway.quote import QUOTE_CHARS, clip_message, quote
from node.records._types import MAX_BATCH_ID, MAX_BATCH_RECORDS, Rejection

__all__ = [
    "ACK_REASON_BYTES",
    "MAX_ACK_BYTES",
    "NOT_LISTED",
    "REASONS_PER_RECORD",
    "REASON_BYTES",
    "RejectionList",
    "bounded",
    "rejection_bytes",
]

#: Problems an ack lists per refused record; a record with more gets one more rejection
#: saying how many. Five: enough to fix a record whose values are mostly right, while a
#: record wrong everywhere (a file in the wrong layout) says so in six lines, not a thousand.
REASONS_PER_RECORD = 5
#: UTF-8 bytes of one reason, at most: the node's status message limit
#: (gateway.quote.MAX_MESSAGE_BYTES). Most reasons take a few dozen bytes, quoting values
#: through gateway.quote; the longest show the catalog's own text (the first 10 allowed
#: values of an ENUM, each up to 200 characters) and are cut here.
REASON_BYTES = 1024
#: Encoded bytes the listed rejections of one ack take, at most: 1 MiB, a quarter of the
#: default message limit. That lists at least 180 refused records in full (six rejections
#: with the longest items and reasons), and about 2,400 with twenty bad INTEGER values each.
ACK_REASON_BYTES = 1024 * 1024
#: The one rejection of each refused record after the ack's budget for reasons is spent.
NOT_LISTED = (
    "reasons not listed: an ack lists at most 1 MiB of reasons; fix those listed and resend"
)
#: Fields of SubmitAck other than rejections and held_records, at most: batch_id (field 1, up
#: to MAX_BATCH_ID characters of up to 4 UTF-8 bytes: tag, 2-byte length, 512 bytes), accepted,
#: rejected and held (tag and a varint of at most 3 bytes each: 12), duplicate (2) and
#: committed_at (a Timestamp: tag, length, seconds and nanos: at most 2 + 11 + 6 = 19).
_ACK_FIELDS_BYTES = (1 + 2 + 4 * MAX_BATCH_ID) + 3 * (1 + 3) + 2 + 19
#: A HeldRecord in SubmitAck.held_records, at most: tag, length, index (tag and 2 bytes) and a
#: change request id ("350100-C-" and 16 hex digits: tag, length, 25 bytes).
_HELD_RECORD_BYTES = 1 + 1 + (1 + 2) + (1 + 1 + 25)


def _varint_bytes(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _field_bytes(length: int) -> int:
    """A length-delimited field of ``length`` bytes with a one-byte tag."""
    return 1 + _varint_bytes(length) + length


def rejection_bytes(rejection: Rejection) -> int:
    """What ``rejection`` adds to a SubmitAck, encoded (tag, length and RecordRejection)."""
    body = 0
    if rejection.index:
        body += 1 + _varint_bytes(rejection.index)
    if rejection.item:
        body += _field_bytes(len(rejection.item.encode()))
    if rejection.reason:
        body += _field_bytes(len(rejection.reason.encode()))
    return _field_bytes(body)


_NOT_LISTED_BYTES = rejection_bytes(Rejection(MAX_BATCH_RECORDS - 1, "", NOT_LISTED))
#: The largest SubmitAck Submit sends, in bytes: the listed rejections, then a NOT_LISTED one
#: (or a held record, the smaller) for every other record of the largest batch, and the other
#: fields. 1,979,124 bytes: under half of the default limits.max_message_bytes (4 MiB).
MAX_ACK_BYTES = (
    ACK_REASON_BYTES
    + MAX_BATCH_RECORDS * max(_NOT_LISTED_BYTES, _HELD_RECORD_BYTES)
    + _ACK_FIELDS_BYTES
)


def _entry(index: int, item: str, reason: str) -> Rejection:
    """One rejection with its item and reason cut to size (idempotent)."""
    if len(item) > QUOTE_CHARS:  # longer than any item name (63): made up by the caller
        reason = f"item {quote(item)}: {reason}"
        item = ""
    return Rejection(index, item, clip_message(reason, REASON_BYTES))


def _capped(index: int, problems: Sequence[tuple[str, str]]) -> list[Rejection]:
    """A refused record's rejections: its first problems by item name, then how many more."""
    shown = sorted(problems)[:REASONS_PER_RECORD]
    entries = [_entry(index, item, reason) for item, reason in shown]
    more = len(problems) - len(shown)
    if more:
        entries.append(
            Rejection(
                index,
                "",
                f"and {more} more problems: an ack lists at most {REASONS_PER_RECORD} per "
                "record; fix those listed and resend",
            )
        )
    return entries


class RejectionList:
    """The rejections of one ack, built record by record in batch order, within
    :data:`ACK_REASON_BYTES`."""

    def __init__(self) -> None:
        self.rejections: list[Rejection] = []
        self._spent = 0
        self._full = False

    def refuse(self, index: int, problems: Sequence[tuple[str, str]]) -> None:
        """List the record at ``index`` (after those listed so far) with its ``problems``
        (item, reason), at least one."""
        assert problems, "a refused record has a problem"
        self.keep(index, _capped(index, problems) if not self._full else [])

    def keep(self, index: int, entries: list[Rejection]) -> None:
        """List the record at ``index`` with ``entries``, its rejections as they are, if they
        fit in what is left of the budget and it was never passed; else with NOT_LISTED."""
        size = sum(rejection_bytes(r) for r in entries)
        if self._full or not entries or self._spent + size > ACK_REASON_BYTES:
            self._full = True
            self.rejections.append(Rejection(index, "", NOT_LISTED))
            return
        self._spent += size
        self.rejections.extend(entries)


def bounded(rejections: Iterable[Rejection]) -> tuple[Rejection, ...]:
    """``rejections`` (each record's together, records in batch order) within the ack's
    budget: what :class:`RejectionList` makes of them. The per-record cap is not applied
    again (a record's "and N more" would count as a problem): lists built by RejectionList
    come back unchanged, and a list stored before the bounds existed is cut to the budget."""
    listing = RejectionList()
    for index, group in groupby(rejections, key=lambda r: r.index):
        listing.keep(index, [_entry(index, r.item, r.reason) for r in group])
    return tuple(listing.rejections)
