"""Storage: one engine for SQLite (default) and PostgreSQL, named retried transactions,
Alembic migrations run from code.

Usage::

    db = await Database.open("sqlite+aiosqlite:///var/lib/govnode/node.db")
    await db.migrate()
    entry = await db.read("get_entry", lambda s: s.get(CatalogEntryRow, code))
    await db.close()
"""

from node.storage._backends import MIN_SQLITE_VERSION, StorageError
from node.storage._database import (
    Database,
    Transaction,
    driver_cursor,
    driver_marks,
    insert_rows,
)
from node.storage._health import RECOVERY_PROBE_BYTES, StorageFault, StorageHealth, StorageMonitor
from node.storage._migrations import head_revision
from node.storage._types import IN_CHUNK, UTCDateTime, in_chunks, utc_now

__all__ = [
    "IN_CHUNK",
    "MIN_SQLITE_VERSION",
    "RECOVERY_PROBE_BYTES",
    "Database",
    "StorageError",
    "StorageFault",
    "StorageHealth",
    "StorageMonitor",
    "Transaction",
    "UTCDateTime",
    "driver_cursor",
    "driver_marks",
    "head_revision",
    "in_chunks",
    "insert_rows",
    "utc_now",
]
