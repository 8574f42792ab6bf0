"""Usage logs for providers (使用日志推送给相应的数据生产应用单位, 第三十九条).

A provider agency (数据生产应用单位) receives the records of a node's audit log about its own
resources: those whose ``resource_code`` is one of the resources it provides in the catalog.
Each record comes with its proof file (node.audit._prooffile) against a checkpoint a witness has
cosigned, so records are handed out only once such a checkpoint covers them.

A filtered feed cannot show by itself that nothing was left out, so the node walks its log in
*stretches* (consecutive sequences, up to a witnessed checkpoint, at most :data:`MAX_SPAN` at a
time) and after the records of each stretch signs a **usage statement**: of the sequences
``first`` to ``last``, exactly these concern this provider. It is a C2SP signed note by the
node key (key name ``<host>/node``, as the witness key statement) whose text is, line by line::

    govnode usage statement v1
    provider <the provider agency's SPIFFE ID>
    log <the log's origin: <region>.<trust domain>/audit>
    checkpoint <tree size> <base64 of the tree's Merkle root>
    range <first> <last>
    count <how many sequences are listed>
    sha256 <hex SHA-256 over the listed sequences, each in decimal followed by "\\n">
    resource <a resource code the statement is about>      (one line each, sorted)

``last`` is at most the checkpoint's size, so every sequence in the range is in the witnessed
tree. A statement that leaves a record out is a signed false statement: the provider cannot
see the omitted record, but anyone who audits the log (the authority, or the province as
witness) can re-derive the statement from the records and finds it. The provider checks what
it can alone (:func:`check_usage`): every proof, every statement's signature, and that the
records it received in each statement's range are exactly those listed, so a withheld record
is found.

Pure domain (no grpc): the stream (node.servicers.usage) and the bundle (``govnode audit
usage``) both come from :meth:`UsageLog.stretch`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Table, select
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.identity import Identity, Role
from gateway.quote import quote
from node.audit._checkpoints import Checkpoints, CosignerKeys, StoredCheckpoint
from node.audit._keys import log_origin, node_key_name, origin_epoch, origin_parts
from node.audit._log import _ENTRY_COLUMNS, AuditLog, AuditRecord, _timestamp
from node.audit._log import _record as _audit_record
from node.audit._policy import WitnessRule
from node.audit._prooffile import CheckedProof, ProofFileError, check_proof_file, make_proof_file
from node.catalog import Catalog
from node.errors import FailedPrecondition, NotFound, PermissionDenied
from node.models import AuditRecordRow
from node.pki import PkiError, verify_chain
from node.storage import Database
from node.tlog import (
    EcdsaSigner,
    EcdsaVerifier,
    NoteError,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_tlog_proof,
    sign_note,
)

HEADER = "govnode usage statement v1"
#: At most this many sequences of the log per statement: a stretch's listed sequences stay in
#: memory, and a long catch-up is cut into statements a provider can check one at a time.
MAX_SPAN = 50_000
#: A statement names its resources one per line in a note of at most 64 KiB.
MAX_RESOURCES = 1_000
_PAGE = 500

_table: Table = SQLModel.metadata.tables[str(AuditRecordRow.__tablename__)]
_c = _table.c


class UsageError(ValueError):
    """A usage statement that is malformed or does not verify."""


def sequences_digest(sequences: Iterable[int]) -> str:
    """Hex SHA-256 over the sequences, each in decimal followed by a newline."""
    digest = hashlib.sha256()
    for sequence in sequences:
        digest.update(f"{sequence}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class UsageStatement:
    """What a usage statement says (decoded from its signed note, or about to be signed)."""

    provider: str
    origin: str
    checkpoint_size: int
    checkpoint_root: bytes
    first: int
    last: int
    count: int
    digest: str
    resources: tuple[str, ...]

    def text(self) -> str:
        lines = [
            HEADER,
            f"provider {self.provider}",
            f"log {self.origin}",
            f"checkpoint {self.checkpoint_size} {base64.b64encode(self.checkpoint_root).decode()}",
            f"range {self.first} {self.last}",
            f"count {self.count}",
            f"sha256 {self.digest}",
            *(f"resource {code}" for code in self.resources),
        ]
        return "\n".join(lines) + "\n"


def parse_statement(text: str) -> UsageStatement:
    """The fields of a statement's text; raises :class:`UsageError` naming the bad line."""
    lines = text.split("\n")
    if lines[-1] != "" or len(lines) < 8 or lines[0] != HEADER:
        raise UsageError(f"not a {HEADER!r} statement")
    fields: dict[str, list[str]] = {}
    for line in lines[1:7]:
        key, _, value = line.partition(" ")
        fields[key] = value.split(" ")
    try:
        (provider,) = fields["provider"]
        (origin,) = fields["log"]
        size_text, root_text = fields["checkpoint"]
        first_text, last_text = fields["range"]
        (count_text,) = fields["count"]
        (digest,) = fields["sha256"]
        size, first, last, count = (
            int(size_text),
            int(first_text),
            int(last_text),
            int(count_text),
        )
        root = base64.b64decode(root_text, validate=True)
    except (KeyError, ValueError, binascii.Error) as exc:
        raise UsageError(f"a statement line is malformed ({exc})") from None
    resources = []
    for line in lines[7:-1]:
        key, _, code = line.partition(" ")
        if key != "resource" or not code:
            raise UsageError(f"unexpected statement line {line[:60]!r}")
        resources.append(code)
    if not 0 < first <= last <= size or not 0 <= count <= last - first + 1 or len(root) != 32:
        raise UsageError(
            f"range {first}-{last}, count {count} and checkpoint {size} do not fit together"
        )
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise UsageError("sha256 is not a hex SHA-256")
    return UsageStatement(
        provider, origin, size, root, first, last, count, digest, tuple(resources)
    )


@dataclass(frozen=True)
class SignedStatement:
    """A statement as it travels: the signed note, the node's chain (PEM, without the root)
    and the listed sequences (not signed: checked against the signed count and digest)."""

    note: bytes
    chain_pem: str
    sequences: tuple[int, ...]
    statement: UsageStatement

    def to_json(self) -> str:
        return json.dumps(
            {
                "note": self.note.decode(),
                "chain_pem": self.chain_pem,
                "sequences": list(self.sequences),
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class UsageRecord:
    """A record about one of the provider's resources, with its proof file."""

    sequence: int
    content: dict[str, Any]  # as its chain hash covers it (node.audit._prooffile)
    prev_hash: str
    hash: str
    proof: bytes
    record: AuditRecord

    def to_json(self) -> str:
        return json.dumps(
            {"content": self.content, "prev_hash": self.prev_hash, "hash": self.hash},
            ensure_ascii=False,
            sort_keys=True,
        )


class UsageLog:
    """The usage records and statements of one node's log."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        host: str,
        node_key: ec.EllipticCurvePrivateKey,
        chain_pem: str,
    ) -> None:
        self._db = db
        self._audit = audit
        self.origin = log_origin(host)
        self._signer = EcdsaSigner(node_key_name(host), node_key)
        self._chain_pem = chain_pem

    async def stretch(
        self,
        *,
        provider: str,
        resources: Iterable[str],
        checkpoint: StoredCheckpoint,
        cosigners: Sequence[CosignerKeys],
        statement_after: int,
        after: int,
    ) -> AsyncIterator[UsageRecord | SignedStatement]:
        """The provider's records after ``after`` up to ``checkpoint``, with their proofs, and
        after the records of every :data:`MAX_SPAN` sequences from ``statement_after + 1`` the
        statement covering them (which lists the provider's records up to ``after`` too, not
        yielded again). ``statement_after`` must not exceed ``after``."""
        codes = tuple(sorted(set(resources)))
        if not 0 <= statement_after <= after:
            raise ValueError(f"statement_after {statement_after} is not within 0..{after}")
        if not codes or len(codes) > MAX_RESOURCES:
            raise ValueError(f"a statement names 1 to {MAX_RESOURCES} resources, not {len(codes)}")
        first = statement_after + 1
        while first <= checkpoint.size:
            last = min(first + MAX_SPAN - 1, checkpoint.size)
            listed: list[int] = []
            async for row in self._rows(codes, first, last):
                listed.append(row.sequence)
                if row.sequence > after:
                    yield await self._record(row, checkpoint, cosigners)
            statement = UsageStatement(
                provider=provider,
                origin=self.origin,
                checkpoint_size=checkpoint.size,
                checkpoint_root=checkpoint.root,
                first=first,
                last=last,
                count=len(listed),
                digest=sequences_digest(listed),
                resources=codes,
            )
            note = sign_note(statement.text(), self._signer)
            yield SignedStatement(note, self._chain_pem, tuple(listed), statement)
            first = last + 1

    async def _rows(self, codes: Sequence[str], first: int, last: int) -> AsyncIterator[Any]:
        cursor = first - 1
        while True:
            statement = (
                select(_table)
                .where(_c.sequence > cursor, _c.sequence <= last, _c.resource_code.in_(codes))
                .order_by(_c.sequence)
                .limit(_PAGE)
            )

            async def txn(session: AsyncSession, statement: Any = statement) -> list[Any]:
                connection = await session.connection()
                return list(await connection.execute(statement))

            rows = await self._db.read("audit.usage", txn)
            for row in rows:
                yield row
            if len(rows) < _PAGE:
                return
            cursor = rows[-1].sequence

    async def _record(
        self, row: Any, checkpoint: StoredCheckpoint, cosigners: Sequence[CosignerKeys]
    ) -> UsageRecord:
        content = {name: getattr(row, name) for name in ("sequence", *_ENTRY_COLUMNS)}
        content["at"] = _timestamp(content["at"])
        content["detail"] = json.loads(row.detail)
        _, proof = await self._audit.inclusion_proof(row.sequence, checkpoint.size)
        data = make_proof_file(
            content=content,
            prev_hash=str(row.prev_hash),
            record_hash=str(row.hash),
            proof=proof,
            checkpoint=checkpoint,
            log_chain_pem=self._chain_pem,
            cosigners=list(cosigners),
        )
        return UsageRecord(
            row.sequence, content, str(row.prev_hash), str(row.hash), data, _audit_record(row)
        )


class CosignedWatch:
    """The newest checkpoint a witness has cosigned, read at most once per ``interval_s``
    however many streams ask: what the usage streams wait on (cosignatures arrive from other
    nodes, so there is no local commit to be woken by)."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        interval_s: float,
        rule: Callable[[], Awaitable[WitnessRule]] | None = None,
    ) -> None:
        """``rule``: which cosignatures make a checkpoint witnessed (the federation's: the
        province's for a city's log, most cities' for the province's); without one, any."""
        self._checkpoints = checkpoints
        self.interval_s = interval_s
        self._rule = rule
        self._lock = asyncio.Lock()
        self._read_at: float | None = None
        self._newest: StoredCheckpoint | None = None

    async def newest(self) -> StoredCheckpoint | None:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._read_at is None or loop.time() - self._read_at >= self.interval_s:
                self._newest = (
                    await self._checkpoints.newest_witnessed(await self._rule())
                    if self._rule is not None
                    else await self._checkpoints.newest_cosigned()
                )
                self._read_at = loop.time()
            return self._newest


async def provided_resources(
    catalog: Catalog, caller: Identity, resource_code: str = ""
) -> list[str]:
    """The resources whose usage ``caller`` receives: those the catalog names it the provider
    of (an agency whose 统一社会信用代码 is the entry's ``provider_code``, the rule that lets it
    register and feed them), withdrawn ones included, since their past use is still its
    business; only ``resource_code`` if given. Anyone else is refused."""
    who = f"{caller} is not the provider of"
    if caller.role is not Role.AGENCY:
        raise PermissionDenied(
            f"{caller} is not an agency: usage logs go to the agency that provides the data "
            "(使用日志推送给相应的数据生产应用单位, 第三十九条); read your own calls with "
            "QueryAudit"
        )
    if resource_code:
        try:
            entry = await catalog.get(resource_code)
        except NotFound:
            entry = None
        if entry is None or entry.provider_code != caller.subject:
            raise PermissionDenied(
                f"resource_code: {who} {quote(resource_code)}; only its provider receives its "
                "usage log (第三十九条)"
            )
        return [resource_code]
    codes: list[str] = []
    token = ""
    while True:
        entries, token = await catalog.list(
            provider_code=caller.subject, include_withdrawn=True, page_size=500, page_token=token
        )
        codes.extend(e.resource_code for e in entries)
        if not token or len(codes) > MAX_RESOURCES:
            break
    if not codes:
        raise PermissionDenied(
            f"{who} any resource in this node's catalog; only a provider receives the usage "
            "log of its resources (第三十九条)"
        )
    if len(codes) > MAX_RESOURCES:
        raise FailedPrecondition(
            f"{caller} provides more than {MAX_RESOURCES} resources; ask with resource_code "
            "for one at a time"
        )
    return sorted(codes)


# --- the provider's side ------------------------------------------------------------------


def read_statement(
    note: bytes,
    chain_pem: str,
    sequences: Sequence[int],
    root: x509.Certificate,
    trust_domain: str,
) -> SignedStatement:
    """Check a statement's signature (the node's chain to ``root``, its node key), that it is
    about that node's log, and that ``sequences`` are what it signs; raises
    :class:`UsageError` naming what fails."""
    try:
        identity, leaf = verify_chain(chain_pem, root, trust_domain)
    except PkiError as exc:
        raise UsageError(f"the signer's certificate chain: {exc}") from None
    public = leaf.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise UsageError(f"the certificate of {identity} does not hold an ECDSA key")
    try:
        opened, _ = open_note(note, [EcdsaVerifier(node_key_name(identity.host), public)])
    except NoteError as exc:
        raise UsageError(f"the statement's signature by {identity}: {exc}") from None
    statement = parse_statement(opened.text)
    if origin_epoch(statement.origin, identity.host) is None:
        raise UsageError(
            f"the statement is about the log {statement.origin[:80]!r}, but signed by {identity}"
        )
    listed = tuple(sequences)
    if (
        len(listed) != statement.count
        or sequences_digest(listed) != statement.digest
        or any(not statement.first <= s <= statement.last for s in listed)
        or list(listed) != sorted(set(listed))
    ):
        raise UsageError(
            f"the sequences given with the statement of {statement.first}-{statement.last} "
            f"are not the {statement.count} it signs"
        )
    return SignedStatement(note, chain_pem, listed, statement)


@dataclass
class UsageCheck:
    """What :func:`check_usage` found: ``problems`` empty means everything checked."""

    log: str = ""
    provider: str = ""
    records: int = 0
    statements: int = 0
    #: The sequence ranges the statements cover, merged.
    covered: list[tuple[int, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_usage(
    proofs: Sequence[bytes],
    statements: Sequence[tuple[bytes, str, Sequence[int]]],
    root: x509.Certificate,
    trust_domain: str,
    *,
    provider: str = "",
) -> UsageCheck:
    """Check what a provider received from one node (a stream, or a bundle): every proof file
    (node.audit._prooffile), every statement (signed note, chain PEM, listed sequences), and
    that the records received in each statement's range are exactly those it lists. With
    ``provider``, the statements must be addressed to it. Every problem is named, at most a
    few hundred."""
    found = UsageCheck(provider=provider)
    records: dict[int, CheckedProof] = {}
    roots: dict[int, bytes] = {}

    def problem(text: str) -> None:
        if len(found.problems) < 200:
            found.problems.append(text)

    for data in proofs:
        try:
            checked = check_proof_file(data, root, trust_domain)
        except ProofFileError as exc:
            problem(f"a proof does not check: {exc}")
            continue
        found.log = found.log or origin_parts(checked.origin)[0]
        if origin_parts(checked.origin)[0] != found.log:
            problem(f"record #{checked.sequence} is of the log {checked.origin}, not {found.log}")
            continue
        roots.setdefault(checked.size, _root_of(data))
        if roots[checked.size] != _root_of(data):
            problem(f"two different trees of {checked.size} records: the node showed two logs")
        if checked.sequence in records and records[checked.sequence].record != checked.record:
            problem(f"record #{checked.sequence} was received twice, with different contents")
        records[checked.sequence] = checked
    found.records = len(records)

    read: list[SignedStatement] = []
    for note, chain_pem, sequences in statements:
        try:
            signed = read_statement(note, chain_pem, sequences, root, trust_domain)
        except UsageError as exc:
            problem(f"a statement does not check: {exc}")
            continue
        statement = signed.statement
        where = f"the statement of {statement.first}-{statement.last}"
        found.log = found.log or origin_parts(statement.origin)[0]
        if origin_parts(statement.origin)[0] != found.log:
            problem(f"{where} is about the log {statement.origin}, not {found.log}")
            continue
        found.provider = found.provider or statement.provider
        if statement.provider != found.provider:
            problem(f"{where} is addressed to {statement.provider}, not {found.provider}")
        tree = roots.get(statement.checkpoint_size)
        if tree is not None and tree != statement.checkpoint_root:
            problem(
                f"{where} names a tree of {statement.checkpoint_size} records other than the "
                "proofs': the node showed two logs"
            )
        read.append(signed)
    found.statements = len(read)

    received = sorted(records)
    listed_by: dict[int, str] = {}
    for signed in read:
        statement = signed.statement
        where = f"the statement of {statement.first}-{statement.last}"
        listed = set(signed.sequences)
        for sequence in sorted(listed):
            listed_by.setdefault(sequence, where)
            if sequence not in records:
                problem(f"record #{sequence} is listed by {where} but was not received: withheld")
        start = bisect.bisect_left(received, statement.first)
        stop = bisect.bisect_right(received, statement.last)
        for sequence in received[start:stop]:
            if sequence not in listed:
                problem(
                    f"record #{sequence} was received but {where} does not list it: the "
                    "statement is false"
                )
                continue
            code = str(records[sequence].record.get("resource_code", ""))
            if code not in statement.resources:
                problem(f"record #{sequence} is about {code}, not a resource {where} names")
    found.covered = _merged((s.statement.first, s.statement.last) for s in read)
    for sequence in sorted(records):
        if sequence not in listed_by and not any(a <= sequence <= b for a, b in found.covered):
            problem(f"record #{sequence} is covered by no statement")
    for (_, end), (start, _) in zip(found.covered, found.covered[1:], strict=False):
        problem(f"no statement covers sequences {end + 1}-{start - 1}")
    if not read and not found.problems:
        problem("no statement: nothing shows which records were left out")
    return found


def _root_of(proof: bytes) -> bytes:
    checkpoint = parse_tlog_proof(proof).checkpoint
    return parse_checkpoint(parse_note(checkpoint).text).root


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
