"""Downloading a served dataset as a file (第三十二条: 普遍开放 whole, 授权开放 narrowed to a
key's approved items by node.opendata._access), with its provenance (第三十五条:
注明来源和获取日期).

The file's size and SHA-256 are known before its first byte is sent (node.opendata._digests:
kept since the publication, or computed once by a first download and kept), so that the
receipt stating them travels with the first chunk and a download that broke off resumes at a
byte offset of the same bytes. The file is sent in chunks of at most :data:`CHUNK_BYTES`, as
the caller takes them (the caller of :meth:`DownloadFile.chunks` takes one chunk at a time), so
memory stays constant whatever the dataset's size:

- the full file of a version (every published item: 普遍开放, or a key approved for all of
  them) is streamed from its bytes stored at publication (node.opendata._files), a range by
  seeking to its first chunk;
- anything else (a key's narrowed items, a version published before files were stored) is
  made as it is sent: rows read from ``open_row`` a page at a time and encoded
  (node.opendata._encode). A range is then rendered from the file's start and the bytes before
  ``offset`` dropped: resuming near the end of a large file costs the node a read of the rows
  before it (where a byte offset falls is known only by encoding what precedes it).

A range that ends early stops reading there. A whole file is checked against the digest sent
first as it ends: bytes that differ fail the download (DATA_LOSS) rather than end with a
receipt they do not match, and the digest and the stored file are dropped, to be made anew.

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
from node.opendata._files import FileMissing
from node.opendata._publish import OpenData
from node.opendata._receipt import MAX_RECIPIENT, FileDigest, Receipt, make_receipt

#: Largest chunk of a file sent at once.
CHUNK_BYTES = 256 * 1024
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
    """One download of one served version (its items as ``served`` has them), in chunks.
    ``whole``: ``served`` has every published item of the version, whose file is stored."""

    def __init__(
        self,
        opendata: OpenData,
        served: Served,
        fmt: str,
        *,
        bom: bool = False,
        whole: bool = False,
    ) -> None:
        self.served = served
        self.format = check_format(fmt, bom=bom)
        self._opendata = opendata
        self._bom = bom
        self._whole = whole
        self._digest: FileDigest | None = None
        #: Rows read so far (none when the file is streamed from its stored bytes).
        self.rows = 0
        #: The file was streamed from its stored bytes, not rendered.
        self.stored = False

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

    async def _rendered(self, offset: int, end: int) -> AsyncGenerator[bytes]:
        """Bytes ``[offset, end)`` of the file, rendered from its start."""
        made = 0  # bytes of the file rendered so far
        pieces = self._pieces()
        try:
            async for piece in pieces:
                start, made = made, made + len(piece)
                if made <= offset:
                    continue
                yield piece[max(0, offset - start) : end - start]
                if made >= end:
                    break
        finally:
            await pieces.aclose()

    async def _stored(self, offset: int, end: int, size: int) -> AsyncGenerator[bytes] | None:
        """Bytes ``[offset, end)`` of the file from its stored bytes, or None when they are not
        stored (a narrowed item set, a version published before files were stored). The csv
        with a byte order mark is the mark and the csv's bytes."""
        if not self._whole:
            return None
        served, files = self.served, self._opendata.files
        file = await files.find(served.entry.resource_code, served.version, self.format)
        skip = len(BOM) if self._bom else 0
        if file is None or file.size + skip != size:
            return None

        async def pieces() -> AsyncGenerator[bytes]:
            if offset < skip:
                yield BOM[offset:end]
            try:
                async for piece in files.read(file, max(0, offset - skip), end - skip):
                    yield piece
            except FileMissing:  # the version's rows went while it was being downloaded
                raise _replaced(served, None) from None

        return pieces()

    async def _forget(self) -> None:
        """Drop the digest (and the stored file) of a file whose bytes did not match it."""
        served = self.served
        code, version = served.entry.resource_code, served.version
        await self._opendata.digests.forget(code, version, self.format, self._bom, served.columns)
        if self.stored:
            await self._opendata.files.forget(code, version, self.format)

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
        if end > offset:
            pieces = await self._stored(offset, end, digest.size)
            self.stored = pieces is not None
            if pieces is None:
                pieces = self._rendered(offset, end)
            try:
                async for piece in pieces:
                    buffer += piece
                    # Only full chunks while more may follow (what is left at the end is the
                    # last chunk): the buffer holds at most a chunk and one piece (a row, or
                    # a stored chunk).
                    while len(buffer) > CHUNK_BYTES:
                        data = bytes(buffer[:CHUNK_BYTES])
                        del buffer[:CHUNK_BYTES]
                        sent.update(data)
                        yield Chunk(data, at, last=False)
                        at += CHUNK_BYTES
            finally:
                await pieces.aclose()
        if at + len(buffer) != end:
            raise _replaced(self.served, None if self.stored else self.rows)
        sent.update(buffer)
        if whole and sent.hexdigest() != digest.sha256:
            await self._forget()
            raise DataLoss(
                f"the file of version {self.served.version} of {self.served.entry.resource_code} "
                f"is not the one its SHA-256 ({digest.sha256[:16]}…) was stated for: discard "
                "it and download again"
            )
        yield Chunk(bytes(buffer), at, last=True)


def _replaced(served: Served, rows: int | None) -> Aborted:
    """``rows``: how many rows were read when the file was rendered, None when it was stored."""
    read = "" if rows is None else f" ({rows} of its {served.rows} rows were read)"
    return Aborted(
        f"version {served.version} of {served.entry.resource_code} was replaced twice while it "
        f"was being downloaded{read}: download it again"
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
