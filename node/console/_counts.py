"""The desks' pending counts on the overview: what waits for someone at this node. Each is one
bounded query (at most :data:`CAP` rows are counted; more shows as "1000+"), using the
domain packages' own status values, so a renamed status cannot silently count nothing."""

from __future__ import annotations

from node.governance import ChangeStatus
from node.opendata import OpenApplicationStatus
from node.quality import DataErrorStatus
from node.sharing import ApplicationStatus
from node.storage import Database
from node.supervision import NoticeStatus

CAP = 1000

#: (message key, table, status that means "waiting", the desk page listing those), in the
#: order the overview shows them; each count links to its desk (node.console._pages_desks,
#: _pages_corrections).
PENDING: tuple[tuple[str, str, str, str], ...] = (
    (
        "pending_applications",
        "access_application",
        ApplicationStatus.PENDING.value,
        "/desks/applications?status=pending",
    ),  # 有条件共享
    (
        "pending_changes",
        "change_request",
        ChangeStatus.PENDING.value,
        "/desks/changes?status=pending",
    ),  # 第四十一条
    (
        "pending_open",
        "open_application",
        OpenApplicationStatus.PENDING.value,
        "/desks/open?status=pending",
    ),  # 授权开放
    (
        "pending_errors",
        "data_error",
        DataErrorStatus.OPEN.value,
        f"/desks/errors?status={DataErrorStatus.OPEN.value}",
    ),  # 纠错, 第十六条
    (
        "pending_notices",
        "rectification_notice",
        NoticeStatus.OPEN.value,
        "/desks/notices",
    ),  # 责令限期改正: the desk lists every notice, open ones marked
)


async def pending_counts(db: Database) -> list[tuple[str, str, str]]:
    """(message key, count as shown, the desk's page) for each desk."""
    counts = []
    for key, table, status, href in PENDING:
        row = await db.fetch_one(
            # The table name is one of the constants above, never input.
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE status = :status "  # noqa: S608
            f"LIMIT {CAP + 1}) AS waiting",
            {"status": status},
        )
        n = int(row[0]) if row is not None else 0
        counts.append((key, f"{CAP}+" if n > CAP else str(n), href))
    return counts
