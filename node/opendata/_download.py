"""Downloading a served dataset as a file (第三十二条: 普遍开放 whole, 授权开放 narrowed to a
key's approved items by node.opendata._access), with its provenance (第三十五条:
注明来源和获取日期).

The file is made as it is sent: rows are read from ``open_row`` a page at a time
(:meth:`OpenData.rows`) and encoded into chunks of at most :data:`CHUNK_BYTES`, so memory stays
constant whatever the dataset's size, and the caller's pace sets the reading pace (the caller
of :meth:`DownloadFile.chunks` takes one chunk at a time). The version is fixed when the
download starts: a publication meanwhile keeps the rows of the version served until then
(node.opendata._publish), so the file never mixes versions; if a second publication removed
them before the end, the download fails (ABORTED) rather than end short.

Formats:

- ``csv``: UTF-8, a header row of the opened items' names in catalog order, RFC 4180 (CRLF
  line ends, a field quoted when it holds a comma, a quote or a line break, quotes doubled),
  with a UTF-8 byte order mark first on request (Excel reads UTF-8 only with one);
- ``jsonl``: one JSON object per row (item name -> value, in catalog order), UTF-8, LF.

Recipients, as a receipt names them: a caller's SPIFFE ID, or what a portal says about the
member of the public it serves: ``<kind>:<id>``, e.g. ``ip:203.0.113.9`` or ``key:ab12cd34``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.quote import quote
from node.errors import Aborted, InvalidArgument
from node.opendata._catalog import FORMATS, Publisher, Served
from node.opendata._publish import OpenData
from node.opendata._receipt import MAX_RECIPIENT, Receipt, make_receipt

#: Largest chunk of a file sent at once.
CHUNK_BYTES = 64 * 1024
#: Rows read from the database at once.
PAGE_ROWS = 500
BOM = b"\xef\xbb\xbf"
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


class _Encoder:
    def __init__(self, fmt: str, columns: Sequence[str]) -> None:
        self._fmt = fmt
        self._columns = tuple(columns)
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)

    def header(self) -> bytes:
        if self._fmt != "csv":
            return b""
        return self._line(list(self._columns))

    def row(self, values: dict[str, str]) -> bytes:
        ordered = [str(values.get(name, "")) for name in self._columns]
        if self._fmt == "csv":
            return self._line(ordered)
        record = dict(zip(self._columns, ordered, strict=True))
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    def _line(self, fields: list[str]) -> bytes:
        self._text.seek(0)
        self._text.truncate()
        self._csv.writerow(fields)
        return self._text.getvalue().encode()


@dataclass(frozen=True)
class Chunk:
    data: bytes
    #: The file's last chunk: :attr:`DownloadFile.sha256` and ``size`` are final.
    last: bool


class DownloadFile:
    """One download of one served version, in chunks; its digest once the last is taken."""

    def __init__(self, opendata: OpenData, served: Served, fmt: str, *, bom: bool = False) -> None:
        self.served = served
        self.format = check_format(fmt, bom=bom)
        self._opendata = opendata
        self._bom = bom
        self._digest = hashlib.sha256()
        self.size = 0
        self.rows = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def _take(self, buffer: bytearray, n: int) -> bytes:
        data = bytes(buffer[:n])
        del buffer[:n]
        self._digest.update(data)
        self.size += len(data)
        return data

    async def chunks(self) -> AsyncIterator[Chunk]:
        served = self.served
        code, version = served.entry.resource_code, served.version
        encoder = _Encoder(self.format, served.columns)
        buffer = bytearray(BOM if self._bom else b"")
        buffer += encoder.header()
        after = 0
        while True:
            page = await self._opendata.rows(code, version, after=after, limit=PAGE_ROWS)
            for number, values in page:
                buffer += encoder.row(values)
                self.rows += 1
                after = number
                # Only full chunks while more may follow (what is left at the end is the last
                # chunk), sent row by row: the buffer holds at most a chunk and one row.
                while len(buffer) > CHUNK_BYTES:
                    yield Chunk(self._take(buffer, CHUNK_BYTES), last=False)
            if len(page) < PAGE_ROWS:
                break
        if self.rows != served.rows:
            raise Aborted(
                f"version {version} of {code} was replaced twice while it was being downloaded "
                f"({self.rows} of its {served.rows} rows were read): download it again"
            )
        yield Chunk(self._take(buffer, len(buffer)), last=True)


def receipt_for(
    served: Served,
    publisher: Publisher,
    *,
    fmt: str,
    recipient: str,
    node: str,
    obtained_at: dt.datetime,
) -> Receipt:
    """The receipt of a download about to start, its digest still unknown (all zeros, size 0):
    made first so that a field a receipt cannot hold is refused before any byte is sent."""
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
        sha256="0" * 64,
        size=0,
        obtained_at=obtained_at,
        recipient=recipient,
        node=node,
    )


def sign_download(
    receipt: Receipt, file: DownloadFile, key: ec.EllipticCurvePrivateKey, chain_pem: str
) -> bytes:
    """The receipt file of a finished download."""
    return make_receipt(replace(receipt, sha256=file.sha256, size=file.size), key, chain_pem)
