"""The Submit baseline: raw ``sqlite3`` ``executemany`` of comparable rows, no server at all.

Fairness: the same pragmas the node's SQLite backend applies to every connection
(``node/storage/_backends.py``: WAL, ``synchronous = NORMAL``, foreign keys, busy timeout),
the same transaction shape (``BEGIN IMMEDIATE``, one commit per batch, so each batch is as
durable as a Submit batch is when it is acked), a file in the same directory as the node's
database, and the same records, JSON-encoded inside the timed loop as the node must. Rows go
into a table shaped like the node's current-record table: resource code, record key, the values
as JSON text, the record's version and its update time, keyed by (resource code, record key).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench import dataset

#: Mirrors SQLiteBackend.on_connect; kept in step by hand (the bench must not reach into
#: node.storage internals for a baseline that is meant to be raw).
PRAGMAS = (
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    resource_code VARCHAR(15) NOT NULL,
    record_key VARCHAR(1024) NOT NULL,
    item_values JSON NOT NULL,
    version INTEGER NOT NULL,
    data_seq BIGINT NOT NULL,
    updated_at DATETIME NOT NULL,
    temporary BOOLEAN NOT NULL,
    PRIMARY KEY (resource_code, record_key)
)
"""

INSERT = (
    "INSERT INTO record (resource_code, record_key, item_values, version, data_seq, updated_at, "
    "temporary) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: The node keeps every version of a record (its history, GetRecordHistory), so each new
#: record is two rows: its current version in ``record`` and version 1 in ``record_version``,
#: which is indexed by key as well. ``history=True`` writes that too: the least storage work a
#: Submit of new records does, to tell the node's own cost from the work it must do.
HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS record_version (
    resource_code VARCHAR(15) NOT NULL,
    data_seq BIGINT NOT NULL,
    record_key VARCHAR(1024) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    version INTEGER NOT NULL,
    item_values JSON NOT NULL,
    batch_id VARCHAR(128) NOT NULL,
    submitted_by VARCHAR(300) NOT NULL,
    at DATETIME NOT NULL,
    PRIMARY KEY (resource_code, data_seq)
)
"""
HISTORY_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_record_version_key ON record_version (resource_code, record_key)"
)
INSERT_VERSION = (
    "INSERT INTO record_version (resource_code, data_seq, record_key, kind, version, item_values, "
    "batch_id, submitted_by, at) VALUES (?, ?, ?, 'upsert', 1, ?, ?, ?, ?)"
)
SUBMITTER = "spiffe://350000.fujian.gov.cn/agency/bench"


@dataclass(frozen=True)
class SqliteFigures:
    batches: int
    rows: int
    seconds: float

    @property
    def records_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def insert_batches(
    path: Path,
    *,
    first: int,
    batches: int,
    batch_size: int,
    duration: float,
    history: bool = False,
) -> SqliteFigures:
    """Insert records ``first``... in ``batches`` transactions of ``batch_size`` rows each
    (``history``: and each one's first version, see HISTORY_SCHEMA).

    Stops starting batches after ``duration`` seconds. Synchronous on purpose: this is the
    cost of the storage work alone, with no event loop, driver thread or ORM in between.
    """
    values = [
        [dataset.record_values(i) for i in range(start, start + batch_size)]
        for start in range(first, first + batches * batch_size, batch_size)
    ]
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            connection.execute(pragma)
        connection.execute(SCHEMA)
        if history:
            connection.execute(HISTORY_SCHEMA)
            connection.execute(HISTORY_INDEX)
        done = rows = 0
        seq = first
        t0 = time.perf_counter()
        for batch in values:
            if time.perf_counter() - t0 > duration:
                break
            now = dt.datetime.now(dt.UTC).isoformat()
            connection.execute("BEGIN IMMEDIATE")
            rows_of_batch = [
                (
                    dataset.RESOURCE_CODE,
                    json.dumps([record[dataset.KEY_ITEM]], ensure_ascii=False),
                    json.dumps(record, ensure_ascii=False, sort_keys=True),
                    1,
                    seq + n,
                    now,
                    False,
                )
                for n, record in enumerate(batch, 1)
            ]
            connection.executemany(INSERT, rows_of_batch)
            if history:
                batch_id = f"b{done}"
                connection.executemany(
                    INSERT_VERSION,
                    [
                        (code, data_seq, key, values, batch_id, SUBMITTER, at)
                        for code, key, values, _, data_seq, at, _ in rows_of_batch
                    ],
                )
            seq += len(batch)
            connection.execute("COMMIT")
            done += 1
            rows += len(batch)
        seconds = time.perf_counter() - t0
    finally:
        connection.close()
    return SqliteFigures(done, rows, seconds)
