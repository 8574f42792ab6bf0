"""No change of government data without approval (第四十一条): change requests, their review by the
data management authority, and their application.
"""

from __future__ import annotations

from node.governance._changes import (
    ChangeAction,
    ChangeDraft,
    ChangeHook,
    ChangeRequest,
    ChangeRequests,
    ChangeStatus,
    ChangeTarget,
)

__all__ = [
    "ChangeAction",
    "ChangeDraft",
    "ChangeHook",
    "ChangeRequest",
    "ChangeRequests",
    "ChangeStatus",
    "ChangeTarget",
]
