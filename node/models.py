"""Database tables (SQLModel, ``table=True``).

Rows are storage, not domain objects: the catalog service turns them into
``node.catalog._types`` values. Every datetime column is :class:`UTCDateTime`, so values come
back timezone-aware in UTC on SQLite and PostgreSQL alike. The schema itself is created by
migrations (node/migrations), never by ``metadata.create_all``;
``tests/storage/test_storage.py`` checks the two agree.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    false,
    text,
)
from sqlmodel import Field, SQLModel

from node.storage import UTCDateTime

CODE_LEN = 15  # RRRRRR-C-NNNNNN
CREDIT_CODE_LEN = 18
REGION_LEN = 6
ELEMENT_LEN = 64


class CatalogEntryRow(SQLModel, table=True):
    """The current state of one catalog entry (政务信息资源目录, 第十八条).

    The columns are what lists filter and sort on; ``body`` is the whole entry as canonical
    JSON, so every field round-trips whatever the wire contract adds later.
    """

    __tablename__ = "catalog_entry"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    name: str = Field(max_length=200)
    provider_code: str = Field(max_length=CREDIT_CODE_LEN, index=True)
    provider_name: str = Field(max_length=200)
    region: str = Field(max_length=REGION_LEN, index=True)
    classification: str = Field(max_length=16)
    industry_category: str = Field(max_length=100)
    share_type: str = Field(max_length=16)
    open_type: str = Field(max_length=16)
    status: str = Field(max_length=16)
    version: int
    created_at: dt.datetime = Field(sa_type=UTCDateTime)
    updated_at: dt.datetime = Field(sa_type=UTCDateTime)
    body: str = Field(sa_type=Text)


class CatalogEntryVersionRow(SQLModel, table=True):
    """Every version of every entry, v1 included; never deleted (第四十一条)."""

    __tablename__ = "catalog_entry_version"

    resource_code: str = Field(
        primary_key=True,
        max_length=CODE_LEN,
        sa_column_args=[ForeignKey("catalog_entry.resource_code")],
    )
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    body: str = Field(sa_type=Text)
    changed_by: str = Field(max_length=300)
    changed_at: dt.datetime = Field(sa_type=UTCDateTime)
    reason: str = Field(default="", sa_type=Text)


class ElementSourceRow(SQLModel, table=True):
    """The one authoritative source of a standard data element in a region (一数一源, 第十三条).

    The primary key is the rule: two resources cannot both be the source of one element in one
    region, whichever process tries.
    """

    __tablename__ = "element_source"

    region: str = Field(primary_key=True, max_length=REGION_LEN)
    standard_element: str = Field(primary_key=True, max_length=ELEMENT_LEN)
    resource_code: str = Field(
        max_length=CODE_LEN, index=True, sa_column_args=[ForeignKey("catalog_entry.resource_code")]
    )
    item_name: str = Field(max_length=63)


class CatalogChangeRow(SQLModel, table=True):
    """The ordered catalog change feed other nodes follow (sequence is gap-free, see catalog)."""

    __tablename__ = "catalog_change"

    sequence: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    version: int
    kind: str = Field(max_length=16)
    origin_region: str = Field(max_length=REGION_LEN)
    at: dt.datetime = Field(sa_type=UTCDateTime)
    #: NULL from migration 0033 on: the body is the version's (catalog_entry_version), read
    #: through (resource_code, version). Rows written before keep their own copy.
    body: str | None = Field(default=None, sa_type=Text, nullable=True)


class RevokedCertificateRow(SQLModel, table=True):
    """A revoked certificate, refused on every call once the list has propagated."""

    __tablename__ = "revoked_certificate"

    serial_hex: str = Field(primary_key=True, max_length=64)
    issuer_region: str = Field(max_length=REGION_LEN)
    identity: str = Field(max_length=300)
    reason: str = Field(sa_type=Text)
    revoked_at: dt.datetime = Field(sa_type=UTCDateTime)
    revoked_by: str = Field(max_length=300)
    #: Position in this node's revocation feed (gap-free, in the order learned); peers fetch
    #: everything after the last one they applied.
    sequence: int | None = Field(
        default=None, sa_type=BigInteger, sa_column_kwargs={"unique": True}, index=True
    )


class IssuedCertificateRow(SQLModel, table=True):
    """A client certificate this node's CA issued (agency, operator, tester, portal, the
    authority), recorded by whatever issued it (the CLI, the console), for the console's
    certificate list and its expiry warnings. Whether it is revoked is the revocation list's
    business (revoked_certificate), looked up by serial."""

    __tablename__ = "issued_certificate"
    __table_args__ = (Index("ix_issued_certificate_not_after", "not_after", "serial_hex"),)

    serial_hex: str = Field(primary_key=True, max_length=64)
    identity: str = Field(max_length=300)
    #: The identity's role: agency, operator, tester, portal, authority.
    kind: str = Field(max_length=16)
    #: The certificate's common name (the agency's name...).
    name: str = Field(max_length=200)
    not_after: dt.datetime = Field(sa_type=UTCDateTime)
    issued_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: Who issued it: the operator's identity at the console, or "cli".
    issued_by: str = Field(max_length=300)


class MaintenanceModeRow(SQLModel, table=True):
    """Maintenance mode (维护模式): one row (``id`` 1, made by migration 0031), so that a
    restarted node comes up as it was left and every process of a node (several on
    PostgreSQL) follows a switch made at the console or with ``govnode maintenance``
    (node.maintenance)."""

    __tablename__ = "maintenance_mode"

    id: int = Field(primary_key=True)
    #: Whether maintenance mode is on.
    active: bool = Field(default=False)
    #: When it was last switched (on or off); None until the first switch.
    since: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Who switched it: the operator's identity at the console, the node's for the CLI.
    switched_by: str = Field(default="", max_length=300)
    reason: str = Field(default="", max_length=200)
    #: How many switches so far: a process applies a row newer than the one it applied last.
    version: int = Field(default=0, sa_type=BigInteger)


class NodeMetaRow(SQLModel, table=True):
    """Small facts about this node (mode, cached digests), one key each."""

    __tablename__ = "node_meta"

    key: str = Field(primary_key=True, max_length=100)
    value: str = Field(sa_type=Text)


class RequestLogRow(SQLModel, table=True):
    """A write a caller made with a ``request_id`` and its outcome, so that a retry with the same
    id gets the first outcome instead of applying the change twice, and an id names one request
    only (node.idempotency). Written in the same transaction as the write."""

    __tablename__ = "request_log"

    caller: str = Field(primary_key=True, max_length=300)  # SPIFFE ID
    request_id: str = Field(primary_key=True, max_length=128)
    operation: str = Field(max_length=32)  # register_resource, apply, review_change, ...
    object_ref: str = Field(sa_type=Text)  # what it acted on: a resource code, an id, a record
    outcome: str = Field(max_length=64)  # the entry version it made, or the id of its result
    created_at: dt.datetime = Field(sa_type=UTCDateTime)


class AuditRecordRow(SQLModel, table=True):
    """One call to the node, accepted or refused (第三十九条); hash-chained, never updated."""

    __tablename__ = "audit_record"

    sequence: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    at: dt.datetime = Field(sa_type=UTCDateTime, index=True)
    caller: str = Field(max_length=300, index=True)
    origin_node: str = Field(max_length=300)
    method: str = Field(max_length=200)
    operation: str = Field(max_length=16)
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    outcome: str = Field(max_length=32)
    message: str = Field(sa_type=Text)
    request_digest: str = Field(max_length=64)
    request_id: str = Field(max_length=64, index=True)
    detail: str = Field(sa_type=Text)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditTreeRow(SQLModel, table=True):
    """The Merkle tree over the audit log (node.audit._tree, RFC 6962): how many records it
    covers and its frontier, the complete subtrees on its right edge (hex, largest first).
    One row, written in the transaction of each audit batch."""

    __tablename__ = "audit_tree"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    size: int = Field(sa_type=BigInteger)
    frontier: str = Field(sa_type=Text)


class AuditSubtreeRow(SQLModel, table=True):
    """A complete subtree of the audit tree at level 8 or above (256 records or more), so a
    proof reads O(log n) rows; smaller ones are hashed from the records' own hashes."""

    __tablename__ = "audit_subtree"

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    hash: str = Field(max_length=64)


class AuditPrunedRow(SQLModel, table=True):
    """Where the live audit log starts after `govnode audit prune` (第三十九条): records before
    ``first_live`` are in archived segments of ``segment_records`` each, and ``anchor_hash`` is
    the chain hash of the last of them, which the live chain links to. One row, or none."""

    __tablename__ = "audit_pruned"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    first_live: int = Field(sa_type=BigInteger)
    anchor_hash: str = Field(max_length=64)
    segment_records: int = Field(sa_type=BigInteger)
    #: The newest ``at`` among the pruned records: a query from a later time needs none of them.
    newest_at: dt.datetime = Field(sa_type=UTCDateTime)
    pruned_at: dt.datetime = Field(sa_type=UTCDateTime)


class AuditEpochRow(SQLModel, table=True):
    """A new origin of this node's audit log (第三十九条): started when the node came back from
    a backup shorter than, or different from, what its witnesses had cosigned. The log never
    signs another history under an origin whose sizes were witnessed: it goes on under
    ``<host>/audit/<epoch>``, and the record at ``first_sequence`` names the gap."""

    __tablename__ = "audit_epoch"

    epoch: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    origin: str = Field(max_length=300)
    #: The sequence of the record that opened this origin (action ``audit.log_restarted``).
    first_sequence: int = Field(sa_type=BigInteger)
    opened_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: The origin before, its newest witnessed checkpoint (size, root, the cosigned note).
    previous_origin: str = Field(max_length=300)
    previous_size: int = Field(sa_type=BigInteger)
    previous_root: str = Field(max_length=64)
    previous_note: str = Field(sa_type=Text)
    #: The size of the log as restored: records after it, up to ``previous_size``, are lost.
    restored_size: int = Field(sa_type=BigInteger)


class AuditRestoreRow(SQLModel, table=True):
    """`govnode backup restore` put this database back (第三十九条): until the node has asked its
    witnesses what they cosigned of its log, it signs no checkpoint."""

    __tablename__ = "audit_restore"

    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite")
    )
    restored_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: The audit log's size in the backup.
    tree_size: int = Field(sa_type=BigInteger)
    checked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: What the check found (empty while unchecked).
    outcome: str = Field(default="", sa_type=Text)


class OpenDatasetRow(SQLModel, table=True):
    """A catalog entry in the open catalog (第二十九条): published by the node's data management
    authority, with the version of its data now served. It is served only while the entry is
    still the one that version was made from (a change or withdrawal takes it out)."""

    __tablename__ = "open_dataset"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    published: bool
    #: The version served (0 while none was published).
    version: int
    changed_by: str = Field(max_length=300)
    changed_at: dt.datetime = Field(sa_type=UTCDateTime)


class OpenVersionRow(SQLModel, table=True):
    """One attempt to publish a resource's data: the de-identified snapshot (rows in open_row)
    and the check's report. ``state``: building, published or refused (a refused version keeps
    its report, not its rows)."""

    __tablename__ = "open_version"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    entry_version: int
    #: The resource's data version (resource_data) the snapshot was read at.
    data_version: int = Field(sa_type=BigInteger)
    state: str = Field(max_length=16)
    made_by: str = Field(max_length=300)
    made_at: dt.datetime = Field(sa_type=UTCDateTime)
    rows: int = Field(sa_type=BigInteger)
    #: The de-identification report as JSON (node.opendata._publish.Report).
    report: str = Field(sa_type=Text)


class OpenRowRow(SQLModel, table=True):
    """One row of a published snapshot, as the public gets it: the treated values as JSON, and
    the key of its class over the quasi-identifiers (the k-anonymity check groups by it)."""

    __tablename__ = "open_row"
    __table_args__ = (Index("ix_open_row_class", "resource_code", "version", "class_key"),)

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    row: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    class_key: str = Field(max_length=64)
    data: str = Field(sa_type=Text)


class OpenFileDigestRow(SQLModel, table=True):
    """The size and SHA-256 of one file a served version is downloaded as (node.opendata.
    _digests), known before the file is sent so that its receipt comes first. ``columns`` is
    the hex SHA-256 of the file's column names joined by a line feed: a 授权开放 key's file holds
    only its approved items. Deleted with the version's rows."""

    __tablename__ = "open_file_digest"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    format: str = Field(primary_key=True, max_length=8)
    bom: bool = Field(primary_key=True)
    columns: str = Field(primary_key=True, max_length=64)
    size: int = Field(sa_type=BigInteger)
    sha256: str = Field(max_length=64)


class OpenFileChunkRow(SQLModel, table=True):
    """One chunk of a published version's full file (node.opendata._files): the csv or jsonl of
    every published item, written once at publication and streamed by downloads. Chunks are
    numbered from 0 and all but the last have the same size. The csv with a byte order mark is
    the mark and these bytes, not a third copy. Deleted with the version's rows."""

    __tablename__ = "open_file_chunk"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    format: str = Field(primary_key=True, max_length=8)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    data: bytes = Field(sa_type=LargeBinary)


class OpenApplicationRow(SQLModel, table=True):
    """An application for 授权开放 data (第三十二、三十三条), submitted by the portal for an
    eligible entity and reviewed by this node's authority. Never deleted; its status moves from
    pending to approved or rejected once. An approval issues one key (open_key)."""

    __tablename__ = "open_application"

    id: str = Field(primary_key=True, max_length=64)  # "<region>-OA-<hex>"
    status: str = Field(max_length=16)
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    provider_code: str = Field(max_length=CREDIT_CODE_LEN)
    entity_type: str = Field(max_length=24)
    entity_code: str = Field(max_length=CREDIT_CODE_LEN, index=True)
    entity_name: str = Field(max_length=200)
    contact: str = Field(max_length=200)
    domestic_control_declared: bool
    evidence_reference: str = Field(max_length=200)
    #: What the authority confirms on review (node.opendata._eligibility.Eligibility).
    to_confirm: str = Field(max_length=300)
    use: str = Field(max_length=16)
    purpose: str = Field(sa_type=Text)
    submitted_by: str = Field(max_length=300)  # SPIFFE ID of the portal
    request_id: str = Field(default="", max_length=128)
    created_at: dt.datetime = Field(sa_type=UTCDateTime, index=True)
    reviewer: str = Field(default="", max_length=300)
    reviewed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    review_comment: str = Field(default="", sa_type=Text)
    competitive_selection_ref: str = Field(default="", max_length=200)
    key_id: str = Field(default="", max_length=32)


class OpenKeyRow(SQLModel, table=True):
    """An API key issued by an approval (授权, 第三十三条): stored only as HMAC-SHA256 under the
    node's key secret, scoped to one resource, its items, a use and a period; revoked, never
    deleted."""

    __tablename__ = "open_key"

    key_id: str = Field(primary_key=True, max_length=32)  # the key's visible part
    key_hash: str = Field(max_length=64)  # hex HMAC-SHA256(secret, key)
    application_id: str = Field(max_length=64, sa_column_args=[ForeignKey("open_application.id")])
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    provider_code: str = Field(max_length=CREDIT_CODE_LEN)
    entity_code: str = Field(max_length=CREDIT_CODE_LEN)
    entity_name: str = Field(max_length=200)
    items: str = Field(sa_type=Text)  # JSON list
    use: str = Field(max_length=16)
    issued_at: dt.datetime = Field(sa_type=UTCDateTime)
    not_after: dt.datetime = Field(sa_type=UTCDateTime)
    revoked: bool = False
    revoked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str = Field(default="", max_length=300)
    revoke_reason: str = Field(default="", sa_type=Text)


class OpenUseReportRow(SQLModel, table=True):
    """A use report (定期报告开发利用情况, 第三十五条) of a key's holder for one period."""

    __tablename__ = "open_use_report"

    key_id: str = Field(
        primary_key=True, max_length=32, sa_column_args=[ForeignKey("open_key.key_id")]
    )
    #: 1 for the first use_report_days after the approval, 2 for the next, ...
    period: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    application_id: str = Field(max_length=64)
    resource_code: str = Field(max_length=CODE_LEN)
    text: str = Field(sa_type=Text)
    filed_by: str = Field(max_length=300)
    filed_at: dt.datetime = Field(sa_type=UTCDateTime, index=True)


class AuditCheckpointRow(SQLModel, table=True):
    """A checkpoint of this node's audit tree (C2SP tlog-checkpoint, 第三十九条): the signed note
    with the node's signature and, appended as witnesses return them, their cosignatures."""

    __tablename__ = "audit_checkpoint"

    size: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    root: str = Field(max_length=64)
    made_at: dt.datetime = Field(sa_type=UTCDateTime)
    note: str = Field(sa_type=Text)
    #: Names of the witnesses whose cosignatures are in ``note``, comma-separated, sorted.
    cosigned_by: str = Field(default="", sa_type=Text)


class AuditCosignerRow(SQLModel, table=True):
    """A witness of this node's log as verifiers need it: its certificate chain and its
    statement of its witness key (node.audit._keys), as it last returned them."""

    __tablename__ = "audit_cosigner"

    identity: str = Field(primary_key=True, max_length=300)
    witness_name: str = Field(max_length=300)
    chain_pem: str = Field(sa_type=Text)
    statement: str = Field(sa_type=Text)
    updated_at: dt.datetime = Field(sa_type=UTCDateTime)


class WitnessStateRow(SQLModel, table=True):
    """What this node, as a witness (tlog-witness), last cosigned of another node's log: one
    row per log origin, replaced only by a compare-and-swap on ``size``."""

    __tablename__ = "witness_state"

    origin: str = Field(primary_key=True, max_length=300)
    size: int = Field(sa_type=BigInteger)
    root: str = Field(max_length=64)
    note: str = Field(sa_type=Text)
    updated_at: dt.datetime = Field(sa_type=UTCDateTime)


class WitnessEvidenceRow(SQLModel, table=True):
    """A checkpoint this node refused to cosign because it contradicts one it cosigned before (a
    rollback or a fork): kept as evidence of the log's misbehaviour, with the request as sent."""

    __tablename__ = "witness_evidence"

    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite")
    )
    origin: str = Field(max_length=300, index=True)
    at: dt.datetime = Field(sa_type=UTCDateTime)
    kind: str = Field(max_length=32)
    message: str = Field(sa_type=Text)
    request: str = Field(sa_type=Text)
    #: The checkpoint this node had cosigned when it refused (its note).
    cosigned: str = Field(sa_type=Text)


# --- records (汇聚, 第二十一条; 共享, 第二十六条) -------------------------------------------
# Written with SQLAlchemy Core in bulk by node.records._store, so the row classes are mostly schema.
# The values column is ``item_values``, not ``values``: ``Table.c.values`` is a method of
# SQLAlchemy's column collection, and VALUES is an SQL keyword.

RECORD_KEY_LEN = 1024  # canonical JSON of the key values; a btree entry must stay small
BATCH_ID_LEN = 128


class RecordRow(SQLModel, table=True):
    """The current version of one record of a resource, keyed by its key items' values.

    ``record_key`` is the canonical JSON array of the key values in catalog item order;
    ``item_values`` the whole record in canonical form (node.records._validation). Never deleted.
    """

    __tablename__ = "record"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    record_key: str = Field(primary_key=True, max_length=RECORD_KEY_LEN)
    item_values: dict[str, str] = Field(sa_type=JSON)
    version: int
    data_seq: int = Field(sa_type=BigInteger)
    updated_at: dt.datetime = Field(sa_type=UTCDateTime)
    temporary: bool
    #: Deleted with the authority's approval (第四十一条): the row stays, pointing at its
    #: "delete" version, and every read of current data passes it by.
    deleted: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    #: Error reports (纠错, 第十六条) on this record not resolved yet: changed in the
    #: transaction of each report and resolution, so the read Verify, Compare and Query already
    #: do tells whether the record is disputed, with no other query when it is not.
    open_disputes: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RecordVersionRow(SQLModel, table=True):
    """Every version of every record, in the order written: the resource's change feed.

    ``data_seq`` is gap-free per resource (1, 2, 3, ...; handed out under the resource's
    submit lock), so a consumer resuming "after N" misses nothing (Exchange, Subscribe).
    Versions written under a temporary collection (临时采集, 第十二条) carry its reason, expiry
    and extra items, for supervision (第四十二条).
    """

    __tablename__ = "record_version"
    __table_args__ = (Index("ix_record_version_key", "resource_code", "record_key"),)

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    data_seq: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    record_key: str = Field(max_length=RECORD_KEY_LEN)
    kind: str = Field(max_length=16)  # "upsert"; "delete" only ever with approval (第四十一条)
    version: int
    item_values: dict[str, str] = Field(sa_type=JSON)
    batch_id: str = Field(max_length=BATCH_ID_LEN)
    submitted_by: str = Field(max_length=300)
    at: dt.datetime = Field(sa_type=UTCDateTime)
    temporary_reason: str | None = Field(default=None, sa_type=Text)
    temporary_expires_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    temporary_items: list[str] | None = Field(default=None, sa_type=JSON)


class ResourceDataRow(SQLModel, table=True):
    """Aggregation state of one resource: data version, last aggregation, record count."""

    __tablename__ = "resource_data"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    data_version: int = Field(sa_type=BigInteger)
    last_aggregated_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_batch_id: str = Field(max_length=BATCH_ID_LEN)
    record_count: int = Field(sa_type=BigInteger)


class SubmitBatchRow(SQLModel, table=True):
    """A batch applied to a resource: a resend of the same batch_id with the same content gets
    this outcome back (with other content it is refused)."""

    __tablename__ = "submit_batch"

    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    batch_id: str = Field(primary_key=True, max_length=BATCH_ID_LEN)
    submitted_by: str = Field(max_length=300)
    accepted: int
    rejected: int
    rejections: str = Field(sa_type=Text)  # JSON [[index, item, reason], ...]
    temporary: str | None = Field(default=None, sa_type=Text)  # JSON, when 临时采集
    data_version: int = Field(sa_type=BigInteger)
    at: dt.datetime = Field(sa_type=UTCDateTime)
    #: JSON [[index, change request id], ...]: records held for approval (第四十一条).
    held: str | None = Field(default=None, sa_type=Text)
    #: SHA-256 (hex) of the batch's content (node.records._submit.batch_digest): a resend of
    #: the batch id with other content is refused. NULL for batches stored before migration
    #: 0014, whose resends stay duplicates whatever they hold.
    content_digest: str | None = Field(default=None, max_length=64)


class QualityCheckRow(SQLModel, table=True):
    """One quality check of one resource (数据质量, 第十五、十六条): its scores and the whole
    report as JSON (node.quality). The dated history the daily check adds to, and drops are
    measured against; never updated, never deleted."""

    __tablename__ = "quality_check"
    __table_args__ = (Index("ix_quality_check_resource", "resource_code", "checked_at"),)

    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite")
    )
    resource_code: str = Field(max_length=CODE_LEN)
    checked_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: The China Standard Time day of the check, YYYY-MM-DD (the history's date).
    day: str = Field(max_length=10)
    entry_version: int
    #: The overall score (0-100), NULL when nothing could be measured.
    overall: float | None = Field(default=None, sa_type=Double)
    grade: str = Field(max_length=1)  # A-E, "" when unmeasured
    #: JSON {dimension: score or null}: what later checks compare against.
    scores: str = Field(sa_type=Text)
    #: The whole report (node.quality.report_to_json).
    report: str = Field(sa_type=Text)
    checked_by: str = Field(max_length=300)


class DataErrorRow(SQLModel, table=True):
    """A consumer's report of a wrong record (纠错, 第十六条), kept at the node that owns the
    record; ``id`` is ``<region>-E-<hex>`` so any node can route a call on it. While its status
    is ``open`` or ``correction_requested`` it counts in the record's ``open_disputes``."""

    __tablename__ = "data_error"
    __table_args__ = (
        Index("ix_data_error_record", "resource_code", "record_key", "status"),
        Index("ix_data_error_reporter", "reporter", "reported_at"),
        Index("ix_data_error_provider", "provider_code", "reported_at"),
        Index("ix_data_error_change", "change_request_id"),
    )

    id: str = Field(primary_key=True, max_length=64)
    #: open, rejected, correction_requested, corrected
    status: str = Field(max_length=24)
    resource_code: str = Field(max_length=CODE_LEN)
    provider_code: str = Field(max_length=32)
    record_key: str = Field(max_length=RECORD_KEY_LEN)
    #: The key items' values as the reporter named them (JSON object).
    key_values: str = Field(sa_type=Text)
    item: str = Field(default="", max_length=64)
    description: str = Field(sa_type=Text)
    suggested_value: str = Field(default="", sa_type=Text)
    evidence: str = Field(default="", sa_type=Text)
    reporter: str = Field(max_length=300)
    request_id: str = Field(default="", max_length=128)
    reported_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: [quality] correction_days after reported_at.
    due_at: dt.datetime = Field(sa_type=UTCDateTime)
    resolved_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    resolved_by: str = Field(default="", max_length=300)
    resolution_note: str = Field(default="", sa_type=Text)
    change_request_id: str = Field(default="", max_length=64)
    corrected_version: int = Field(default=0)


class InvitationRow(SQLModel, table=True):
    """A one-time, expiring invitation for one city to join (only the token's hash is kept)."""

    __tablename__ = "invitation"

    token_hash: str = Field(primary_key=True, max_length=64)
    region: str = Field(max_length=REGION_LEN, index=True)
    name: str = Field(max_length=64)
    created_at: dt.datetime = Field(sa_type=UTCDateTime)
    expires_at: dt.datetime = Field(sa_type=UTCDateTime)
    created_by: str = Field(max_length=300)
    used_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class FederationMemberRow(SQLModel, table=True):
    """A city sub-platform the province knows (第十九条)."""

    __tablename__ = "federation_member"

    region: str = Field(primary_key=True, max_length=REGION_LEN)
    name: str = Field(max_length=64)
    endpoint: str = Field(max_length=300)
    ca_serial_hex: str = Field(max_length=64)
    joined_at: dt.datetime = Field(sa_type=UTCDateTime)
    approved_sub_platform: bool
    last_seen_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)


class FeedCursorRow(SQLModel, table=True):
    """How far this node has applied a peer's catalog change feed (resume point, at most once).

    On the province one row per city (the city's feed sequence); on a city one row for the
    province (the province's feed sequence, which relays every other city's changes).
    """

    __tablename__ = "feed_cursor"

    peer_region: str = Field(primary_key=True, max_length=REGION_LEN)
    last_applied_sequence: int = Field(sa_type=BigInteger)
    updated_at: dt.datetime = Field(sa_type=UTCDateTime)


class AssertionNonceRow(SQLModel, table=True):
    """A caller-assertion nonce already accepted (replay protection), kept until it expires."""

    __tablename__ = "assertion_nonce"

    nonce_hex: str = Field(primary_key=True, max_length=128)
    expires_at: dt.datetime = Field(sa_type=UTCDateTime, index=True)


class SubPlatformApprovalRow(SQLModel, table=True):
    """The province's approval of a city as a sub-platform after it passed the conformance
    suite (第三十一条), with the signed report it rests on. Approvals are never deleted; the
    newest one of a region is in force."""

    __tablename__ = "sub_platform_approval"

    id: int | None = Field(default=None, primary_key=True)
    region: str = Field(max_length=REGION_LEN, index=True)
    node_identity: str = Field(max_length=300)
    tester_identity: str = Field(max_length=300)
    suite_version: str = Field(max_length=20)
    report_sha256: str = Field(max_length=64, unique=True)
    report: str = Field(sa_type=Text)  # the signed report.json, byte for byte (UTF-8)
    approved_by: str = Field(max_length=200)
    approved_at: dt.datetime = Field(sa_type=UTCDateTime)


class NotificationRow(SQLModel, table=True):
    """A notification to one party (an agency, an authority), made by this node: applications
    received and reviewed (第二十五条), grants revoked, suspected enumeration, change requests
    (第四十一条). Ids increase; a reader resumes after the last id it saw."""

    __tablename__ = "notification"
    __table_args__ = (
        Index("ix_notification_recipient", "recipient", "id"),
        # A notification another node made and delivered here is stored once (its origin's
        # key); local ones (origin_region empty) are outside the index.
        Index(
            "ux_notification_origin",
            "origin_region",
            "origin_id",
            unique=True,
            sqlite_where=text("origin_region != ''"),
            postgresql_where=text("origin_region != ''"),
        ),
    )

    id: int | None = Field(
        default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite")
    )
    recipient: str = Field(max_length=300)
    kind: str = Field(max_length=40)
    resource_code: str = Field(default="", max_length=CODE_LEN)
    application_id: str = Field(default="", max_length=64)
    grant_id: str = Field(default="", max_length=64)
    change_request_id: str = Field(default="", max_length=64)
    #: The error report (纠错) the notification is about.
    data_error_id: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    audit_sequence: int = Field(default=0, sa_type=BigInteger)
    message: str = Field(sa_type=Text)
    at: dt.datetime = Field(sa_type=UTCDateTime)
    #: Made at another node and delivered here (node.federation._notices): that node's region
    #: and its id there; empty and 0 when this node made it.
    origin_region: str = Field(default="", max_length=REGION_LEN)
    origin_id: int = Field(default=0, sa_type=BigInteger)


class NoticeCursorRow(SQLModel, table=True):
    """How far this node has delivered its notifications for one other region's recipients
    (node.federation._notices): the highest notification id the next node acknowledged.
    At-least-once: the cursor moves after the delivery is acknowledged."""

    __tablename__ = "notice_cursor"

    destination_region: str = Field(primary_key=True, max_length=REGION_LEN)
    last_delivered_id: int = Field(sa_type=BigInteger)
    updated_at: dt.datetime = Field(sa_type=UTCDateTime)


class AccessApplicationRow(SQLModel, table=True):
    """An application to use a 有条件共享 resource (第二十五条), held by the node that owns the
    resource and reviewed by that node's authority. Never deleted; its status moves from
    pending to approved, rejected or withdrawn once."""

    __tablename__ = "access_application"

    id: str = Field(primary_key=True, max_length=64)  # "<owner region>-A-<hex>"
    status: str = Field(max_length=16)
    applicant: str = Field(max_length=300, index=True)  # SPIFFE ID
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    provider_code: str = Field(max_length=CREDIT_CODE_LEN)
    region: str = Field(max_length=REGION_LEN)  # the resource's (and the node's) region
    probe: bool = False  # on a conformance probe resource (第三十一条)
    items: str = Field(sa_type=Text)  # JSON list
    share_methods: str = Field(sa_type=Text)  # JSON list
    purpose: str = Field(sa_type=Text)
    legal_basis: str = Field(sa_type=Text)
    not_before: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    not_after: dt.datetime = Field(sa_type=UTCDateTime)
    request_id: str = Field(default="", max_length=128)
    created_at: dt.datetime = Field(sa_type=UTCDateTime, index=True)
    reviewer: str = Field(default="", max_length=300)
    decided_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    review_comment: str = Field(default="", sa_type=Text)
    grant_id: str = Field(default="", max_length=64)


class AccessGrantRow(SQLModel, table=True):
    """A grant (授权) made by an approved application: the bounded right of one grantee to use
    one resource (防止越权使用, 第三十七条). Read on every call it covers; revoked, never
    deleted."""

    __tablename__ = "access_grant"
    __table_args__ = (Index("ix_access_grant_grantee_resource", "grantee", "resource_code"),)

    id: str = Field(primary_key=True, max_length=64)  # "<owner region>-G-<hex>"
    application_id: str = Field(max_length=64, sa_column_args=[ForeignKey("access_application.id")])
    grantee: str = Field(max_length=300)  # SPIFFE ID
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    provider_code: str = Field(max_length=CREDIT_CODE_LEN)
    region: str = Field(max_length=REGION_LEN)
    probe: bool = False
    items: str = Field(sa_type=Text)  # JSON list
    clear_text_items: str = Field(sa_type=Text)  # JSON list
    share_methods: str = Field(sa_type=Text)  # JSON list
    purpose: str = Field(sa_type=Text)
    not_before: dt.datetime = Field(sa_type=UTCDateTime)
    not_after: dt.datetime = Field(sa_type=UTCDateTime)
    justification: str = Field(default="", sa_type=Text)
    granted_by: str = Field(max_length=300)
    created_at: dt.datetime = Field(sa_type=UTCDateTime, index=True)
    revoked: bool = False
    revoked_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoke_reason: str = Field(default="", sa_type=Text)
    revoked_by: str = Field(default="", max_length=300)


class ChangeRequestRow(SQLModel, table=True):
    """A provider's request for approval to change or delete a record or a catalog entry
    (未经批准不得更改和删除政务数据, 第四十一条), held by the node that owns the resource and
    reviewed by that node's authority. Never deleted; its status moves from pending to approved
    or rejected once, and an approval applies the change in the same transaction."""

    __tablename__ = "change_request"
    #: Submit looks for pending requests by the keys a batch holds (node.records._hold).
    __table_args__ = (Index("ix_change_request_record", "resource_code", "record_key"),)

    id: str = Field(primary_key=True, max_length=64)  # "<owner region>-C-<hex>"
    status: str = Field(max_length=16)
    requester: str = Field(max_length=300, index=True)  # SPIFFE ID
    target: str = Field(max_length=16)  # record, entry
    action: str = Field(max_length=16)  # update, delete
    resource_code: str = Field(max_length=CODE_LEN, index=True)
    provider_code: str = Field(max_length=CREDIT_CODE_LEN)
    probe: bool = False
    record_key: str = Field(default="", max_length=RECORD_KEY_LEN)  # canonical JSON, records
    key_values: str = Field(default="", sa_type=Text)  # JSON object, records
    new_values: str = Field(default="", sa_type=Text)  # JSON object, record updates
    new_entry: str = Field(default="", sa_type=Text)  # entry JSON, entry updates
    previous_values: str = Field(default="", sa_type=Text)  # JSON object, records
    previous_version: int = Field(default=0, sa_type=BigInteger)
    reason: str = Field(sa_type=Text)
    request_id: str = Field(default="", max_length=128)
    created_at: dt.datetime = Field(sa_type=UTCDateTime, index=True)
    reviewer: str = Field(default="", max_length=300)
    reviewed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    review_comment: str = Field(default="", sa_type=Text)
    applied_version: int = Field(default=0, sa_type=BigInteger)
    #: A record change held from this Submit batch; "" when asked for directly.
    batch_id: str = Field(default="", max_length=BATCH_ID_LEN)


# --- Verify oracle protection (防止越权使用, 第三十七条) ---------------------------------------
# Written by node.sharing._budgets in single SQL statements whose arithmetic runs in the database,
# so instants are float seconds since the Unix epoch (UTC by definition) rather than
# UTCDateTime: "refilled_at + elapsed * rate" is then the same expression on SQLite and
# PostgreSQL. Rows are pruned by node.sharing._budgets once they say nothing a missing row
# would not.

KEY_DIGEST_LEN = 24  # hex of the 12-byte node.sharing._oracle.key_digest


class OracleBudgetRow(SQLModel, table=True):
    """What one caller has used of its Verify budget on one resource: the token bucket
    (``verify_per_minute``), today's count (``verify_per_day``) and the enumeration watch's
    quiet period. Shared by every process of the node, so a restart or a second process behind
    the load balancer changes nothing."""

    __tablename__ = "oracle_budget"

    caller: str = Field(primary_key=True, max_length=300)  # SPIFFE ID
    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    #: Tokens left at ``refilled_at`` (refilled evenly, up to verify_per_minute).
    tokens: float = Field(sa_type=Double)
    refilled_at: float = Field(sa_type=Double)  # epoch seconds; never moves back
    #: The China Standard Time day ``used_today`` counts, as YYYYMMDD; never moves back.
    day: int = Field(index=True)
    used_today: int
    #: After an enumeration flag, no other flag before this instant (epoch seconds).
    quiet_until: float = Field(sa_type=Double)


class OracleKeyRow(SQLModel, table=True):
    """A key one caller asked Verify about on one resource, as a digest (never the key's
    values), and when last asked: the enumeration watch counts these within its window."""

    __tablename__ = "oracle_key"

    caller: str = Field(primary_key=True, max_length=300)
    resource_code: str = Field(primary_key=True, max_length=CODE_LEN)
    digest: str = Field(primary_key=True, max_length=KEY_DIGEST_LEN)
    seen_at: float = Field(sa_type=Double, index=True)  # epoch seconds


class ComplianceReportRow(SQLModel, table=True):
    """One compliance report of one agency over a period (监督检查, 第八、四十二条), as generated:
    its figures (numerator, denominator, audit sequence range each) and the findings' audit
    sequences, with the audit log's head it was computed at, so that ``govnode supervision
    recount`` re-derives it from the log (node.supervision). Never updated."""

    __tablename__ = "compliance_report"
    __table_args__ = (Index("ix_compliance_report_agency", "agency_code", "generated_at"),)

    id: str = Field(primary_key=True, max_length=64)  # "<region>-R-<hex>"
    agency_code: str = Field(max_length=CREDIT_CODE_LEN)
    period_start: dt.datetime = Field(sa_type=UTCDateTime)
    period_end: dt.datetime = Field(sa_type=UTCDateTime)
    generated_at: dt.datetime = Field(sa_type=UTCDateTime)
    generated_by: str = Field(max_length=300)
    #: The audit log's size and last chain hash when the report was computed: the records
    #: after it are not in the report.
    head_size: int = Field(sa_type=BigInteger)
    head_hash: str = Field(max_length=64)
    #: The audit records of the period the report read: first and last sequence (0, 0: none).
    window_first: int = Field(sa_type=BigInteger)
    window_last: int = Field(sa_type=BigInteger)
    #: JSON [{kind, numerator, denominator, first, last, noted, value}, ...] in kind order.
    figures: str = Field(sa_type=Text)
    #: JSON {kind: [audit sequence, ...]}: the records behind each numerator (bounded).
    findings: str = Field(sa_type=Text)


class RectificationNoticeRow(SQLModel, table=True):
    """A rectification notice (责令限期改正, 第四十二条) for one figure of one agency, with its
    deadline; the node closes it when the figure recovers or, past the deadline, escalates it
    to the published criticisms (通报批评). Each transition keeps its time."""

    __tablename__ = "rectification_notice"
    __table_args__ = (Index("ix_rectification_notice_agency", "agency_code", "issued_at"),)

    id: str = Field(primary_key=True, max_length=64)  # "<region>-N-<hex>"
    agency_code: str = Field(max_length=CREDIT_CODE_LEN)
    kind: str = Field(max_length=32)  # node.supervision.Kind
    note: str = Field(sa_type=Text)
    deadline: dt.datetime = Field(sa_type=UTCDateTime)
    issued_by: str = Field(max_length=300)
    issued_at: dt.datetime = Field(sa_type=UTCDateTime)
    #: The audit log's size when issued: findings after it are new findings.
    issued_at_sequence: int = Field(sa_type=BigInteger)
    status: str = Field(max_length=16, index=True)  # open, rectified, criticised
    closed_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Why it closed or escalated, as the scheduler saw it.
    outcome: str = Field(default="", sa_type=Text)


class AcceptanceCertificateRow(SQLModel, table=True):
    """A project acceptance certificate this node issued (第九、二十二条): the signed file as
    given, with what it certifies, so that the authority can list what it vouched for and
    when (node.supervision). Never updated."""

    __tablename__ = "acceptance_certificate"
    __table_args__ = (Index("ix_acceptance_certificate_agency", "agency_code", "issued_at"),)

    serial: str = Field(primary_key=True, max_length=64)  # "<region>-C-<hex>"
    agency_code: str = Field(max_length=CREDIT_CODE_LEN)
    project: str = Field(max_length=200)  # "" for the agency as a whole
    #: JSON [resource code, ...] the certificate names.
    resources: str = Field(sa_type=Text)
    issued_at: dt.datetime = Field(sa_type=UTCDateTime)
    valid_until: dt.datetime = Field(sa_type=UTCDateTime)
    issued_by: str = Field(max_length=300)
    #: The audit log's size and Merkle root (hex) at the issue time, as the certificate states.
    audit_size: int = Field(sa_type=BigInteger)
    audit_root: str = Field(max_length=64)
    #: The certificate file (JSON: the signed note's lines and the node's chain).
    document: str = Field(sa_type=Text)


class SupervisionSummaryRow(SQLModel, table=True):
    """The newest supervision summary of one region (issue 15 item 6), kept at the province:
    a city's as it sent it, signed by its node key (node.supervision's summary format), and
    the province's own, computed the same way. One row per region, replaced by a newer one."""

    __tablename__ = "supervision_summary"

    region: str = Field(primary_key=True, max_length=REGION_LEN)
    #: SPIFFE ID of the node that signed it (the node of ``region``).
    signed_by: str = Field(max_length=300)
    generated_at: dt.datetime = Field(sa_type=UTCDateTime)
    received_at: dt.datetime = Field(sa_type=UTCDateTime)
    period_start: dt.datetime = Field(sa_type=UTCDateTime)
    period_end: dt.datetime = Field(sa_type=UTCDateTime)
    #: The canonical body the node signed (JSON), and the whole signed document as sent, so
    #: anyone can check it again against the province root.
    body: str = Field(sa_type=Text)
    document: str = Field(sa_type=Text)
