"""Who may use what (第二十三至二十八、三十七条).

- ``_policy``: share types and methods;
- ``_grants``: applications' grants and their scope (有条件共享); ``_applications``: applying,
  reviewing, withdrawing and revoking;
- ``_masking``: masking of sensitive items;
- ``_oracle`` and ``_budgets``: the Verify oracle's rate limits, quotas and enumeration watch;
- ``_notifications``: what providers, applicants and authorities are told.
"""

from __future__ import annotations

from node.sharing._applications import MAX_TEXT, Applications, region_of_id
from node.sharing._grants import (
    AccessControl,
    Application,
    ApplicationStatus,
    Decision,
    Draft,
    Grant,
    Review,
    check_history_reader,
    check_reviewer,
    check_scope,
    may_see,
)
from node.sharing._masking import mask
from node.sharing._notifications import Notification, NotificationKind, Notifications
from node.sharing._oracle import OracleGuard
from node.sharing._policy import Access, authorize, is_provider

__all__ = [
    "MAX_TEXT",
    "Access",
    "AccessControl",
    "Application",
    "ApplicationStatus",
    "Applications",
    "Decision",
    "Draft",
    "Grant",
    "Notification",
    "NotificationKind",
    "Notifications",
    "OracleGuard",
    "Review",
    "authorize",
    "check_history_reader",
    "check_reviewer",
    "check_scope",
    "is_provider",
    "mask",
    "may_see",
    "region_of_id",
]
