"""Backup and verified restore of a node (备份恢复机制, 第三十九条): a signed manifest of a
backup's files and of what its database held (``_manifest``), copying and restoring the
database on SQLite and PostgreSQL (``_database``), private keys under a passphrase
(``_keys``), making a backup while the node serves (``_create``), verifying one by restoring
it into a scratch database (``_verify``), and restoring one as a node directory
(``_restore``); and what a directory of backups holds, for the console (``_listing``).
"""

from __future__ import annotations

from node.backup._create import Created, create_backup
from node.backup._keys import check_passphrase
from node.backup._listing import (
    NAME,
    LastVerification,
    Listing,
    Summary,
    check_name,
    list_backups,
    summary,
)
from node.backup._manifest import FORMAT, MANIFEST, SIGNATURE, BackupError
from node.backup._restore import Restored, restore_backup
from node.backup._verify import REPORT, Check, Verification, verify_backup, write_report

__all__ = [
    "FORMAT",
    "MANIFEST",
    "NAME",
    "REPORT",
    "SIGNATURE",
    "BackupError",
    "Check",
    "Created",
    "LastVerification",
    "Listing",
    "Restored",
    "Summary",
    "Verification",
    "check_name",
    "check_passphrase",
    "create_backup",
    "list_backups",
    "restore_backup",
    "summary",
    "verify_backup",
    "write_report",
]
