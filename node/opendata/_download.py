"""Downloading a served dataset as a file (第三十二条: 普遍开放 whole, 授权开放 narrowed to a
key's approved items by node.opendata._access), with its provenance (第三十五条:
注明来源和获取日期).

The file's size and SHA-256 are known before its first byte is sent (node.opendata._digests:
kept since the publication, or computed once by a first download and kept), so that the
receipt stating them travels with the first chunk and a download that broke off resumes at a
byte offset of the same bytes. The file itself is made as it is sent: rows are read from
``open_row`` a page at a time and encoded (node.opendata._encode) into chunks of at most
:data:`CHUNK_BYTES`, so memory stays constant whatever the dataset's size, and the caller's pace
sets the reading pace (the caller of :meth:`DownloadFile.chunks` takes one chunk at a time).

A range (``offset``, ``length``) is rendered from the file's start and the bytes before
``offset`` dropped: resuming near the end of a large file costs the node a read of the rows
before it (the encoding of a row depends on nothing but the row, but where a byte offset falls
is known only by encoding what precedes it). A range that ends early stops reading there. A
whole file is checked against the digest sent first as it ends: bytes that differ fail the
download (DATA_LOSS) rather than end with a receipt they do not match.

The version is fixed when the download starts: a publication meanwhile keeps the rows of the
version served until then (node.opendata._publish), so the file never mixes versions; if a
second publication removed them before the end, the download fails (ABORTED) rather than end
short.

Recipients, as a receipt names them: a caller's SPIFFE ID, or what a portal says about the
member of the public it serves: ``<kind>:<id>``, e.g. ``ip:203.0.113.9`` or ``key:ab12cd34``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.quote import quote
from node.errors import Aborted, DataLoss, InvalidArgument, OutOfRange
from node.opendata._catalog import FORMATS, Publisher, Served
from node.opendata._digests import compute_digests
from node.opendata._encode import BOM, Encoder, served_rows
from node.opendata._publish import OpenData
from node.opendata._receipt import MAX_RECIPIENT, FileDigest, Receipt, make_receipt

#: Largest chunk of a file sent at once.
CHUNK_BYTES = 64 * 1024
#: A recipient a portal names: a kind and an id of URL-safe characters (an IPv6 address has
#: colons), as short as a receipt allows.
RECIPIENT_RE = re.compile(r"^[a-z]{1,16}:[A-Za-z0-9._:-]{1,100}$")


def recipient_problem(value: str) -> str | None:
    if len(value) > MAX_RECIPIENT or not RECIPIENT_RE.match(value):
        return (
            f"{quote(value)} is not a recipient: <kind>:<id> such as ip:203.0.113.9 or "
            f"key:ab12cd34, letters, digits and . _ : - only, at most {MAX_RECIPIENT} characters"
        )
    return None


def check_format(fmt: str, *, bom: bool) -> str:
    if fmt not in FORMATS:
        raise InvalidArgument(f"format: {quote(fmt)} is not offered; one of {', '.join(FORMATS)}")
    if bom and fmt != "csv":
        raise InvalidArgument(f"bom: only a csv file starts with a byte order mark, not {fmt}")
    return fmt


def check_range(offset: int, length: int) -> None:
    """OutOfRange for a negative offset or length, before anything is read."""
    if offset < 0:
        raise OutOfRange(f"offset: {offset} is negative; 0 starts the file at its first byte")
    if length < 0:
        raise OutOfRange(f"length: {length} is negative; 0 sends the file to its end")


@dataclass(frozen=True)
class Chunk:
    data: bytes
    #: The byte of the file ``data`` starts at.
    offset: int
    #: The last chunk of the range asked for.
    last: bool


class DownloadFile:
    """One download of one served version (its items as ``served`` has them), in chunks."""

    def __init__(self, opendata: OpenData, served: Served, fmt: str, *, bom: bool = False) -> None:
        self.served = served
        self.format = check_format(fmt, bom=bom)
        self._opendata = opendata
        self._bom = bom
        self._digest: FileDigest | None = None
        #: Rows read so far.
        self.rows = 0

    async def digest(self) -> FileDigest:
        """The whole file's size and SHA-256: kept since the publication, or computed now by
        one pass over the rows (and kept for the next download)."""
        if self._digest is not None:
            return self._digest
        served, digests = self.served, self._opendata.digests
        code, version, columns = served.entry.resource_code, served.version, served.columns
        found = await digests.get(code, version, self.format, self._bom, columns)
        if found is None:
            computed, rows = await compute_digests(self._opendata, code, version, columns)
            if rows != served.rows:
                raise _replaced(served, rows)
            await digests.keep(code, version, columns, computed)
            found = computed[(self.format, self._bom)]
        self._digest = found
        return found

    async def _pieces(self) -> AsyncGenerator[bytes]:
        """The file's bytes, a row at a time."""
        served = self.served
        encoder = Encoder(self.format, served.columns)
        yield (BOM if self._bom else b"") + encoder.header()
        async for _, values in served_rows(
            self._opendata, served.entry.resource_code, served.version
        ):
            self.rows += 1
            yield encoder.row(values)
        if self.rows != served.rows:
            raise _replaced(served, self.rows)

    async def chunks(self, offset: int = 0, length: int = 0) -> AsyncIterator[Chunk]:
        """Bytes ``[offset, offset + length)`` of the file (to its end when ``length`` is 0),
        in chunks; OutOfRange when ``offset`` is past the file's size. At ``offset`` equal to
        the size, one empty chunk."""
        check_range(offset, length)
        digest = await self.digest()
        if offset > digest.size:
            raise OutOfRange(f"offset: {offset} is past the end of the file ({digest.size} bytes)")
        end = digest.size if not length else min(digest.size, offset + length)
        whole = offset == 0 and end == digest.size
        sent = hashlib.sha256()
        buffer = bytearray()
        at = offset  # the file's byte buffer[0] is
        made = 0  # bytes of the file rendered so far
        if end > offset:
            pieces = self._pieces()
            try:
                async for piece in pieces:
                    start, made = made, made + len(piece)
                    if made <= offset:
                        continue
                    buffer += piece[max(0, offset - start) : end - start]
                    # Only full chunks while more may follow (what is left at the end is the
                    # last chunk): the buffer holds at most a chunk and one row.
                    while len(buffer) > CHUNK_BYTES:
                        data = bytes(buffer[:CHUNK_BYTES])
                        del buffer[:CHUNK_BYTES]
                        sent.update(data)
                        yield Chunk(data, at, last=False)
                        at += CHUNK_BYTES
                    if made >= end:
                        break
            finally:
                await pieces.aclose()
        if at + len(buffer) != end:
            raise _replaced(self.served, self.rows)
        sent.update(buffer)
        if whole and sent.hexdigest() != digest.sha256:
            await self._opendata.digests.forget(
                self.served.entry.resource_code,
                self.served.version,
                self.format,
                self._bom,
                self.served.columns,
            )
            raise DataLoss(
                f"the file of version {self.served.version} of {self.served.entry.resource_code} "
                f"is not the one its SHA-256 ({digest.sha256[:16]}…) was stated for: discard "
                "it and download again"
            )
        yield Chunk(bytes(buffer), at, last=True)


def _replaced(served: Served, rows: int) -> Aborted:
    return Aborted(
        f"version {served.version} of {served.entry.resource_code} was replaced twice while it "
        f"was being downloaded ({rows} of its {served.rows} rows were read): download it again"
    )


def receipt_for(
    served: Served,
    publisher: Publisher,
    *,
    fmt: str,
    recipient: str,
    node: str,
    obtained_at: dt.datetime,
    digest: FileDigest,
) -> Receipt:
    """The receipt of a download about to start, stating the whole file's ``digest``."""
    entry = served.entry
    return Receipt(
        dataset=served.dataset_iri,
        resource_code=entry.resource_code,
        resource_name=entry.name,
        provider_code=entry.provider_code,
        provider_name=entry.provider_name,
        authority_region=publisher.region,
        authority_name=publisher.name,
        version=served.version,
        format=fmt,
        sha256=digest.sha256,
        size=digest.size,
        obtained_at=obtained_at,
        recipient=recipient,
        node=node,
    )


def sign_download(receipt: Receipt, key: ec.EllipticCurvePrivateKey, chain_pem: str) -> bytes:
    """The receipt file of a download, signed by the node."""
    return make_receipt(receipt, key, chain_pem)
