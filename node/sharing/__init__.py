"""Who may use what (第二十三至二十八、三十七条).

- ``_decision``: the access decision of every Verify, Compare, Query, Exchange and Subscribe
  call, in one call: :meth:`AccessDecider.decide` takes the caller, the entry, the method and
  the items the request touches (:class:`Touches`), applies the catalog's share type and
  methods, the caller's grants, the items' scope and (Verify, Compare) the oracle's admission,
  and returns a :class:`Permit` (which items in clear, the grant, whether the oracle applied)
  or raises the refusal naming the rule;
- ``_grants``: applications' grants, their parties and their scope (有条件共享);
  ``_applications``: applying, reviewing, withdrawing and revoking;
- ``_masking``: masking of sensitive items;
- ``_oracle`` and ``_budgets``: the Verify oracle's rate limits, quotas and enumeration watch;
- ``_notifications``: what providers, applicants and authorities are told;
- ``_quality_sample``: the one exception to the decision, the data management authority's
  Compare of a quality sample against an authoritative source (一致性).
"""

from __future__ import annotations

from node.sharing._applications import MAX_TEXT, Applications, region_of_id
from node.sharing._decision import AccessDecider, AuditDetail, Permit, Touches, check_scope
from node.sharing._grants import (
    Application,
    ApplicationStatus,
    Decision,
    Draft,
    Grant,
    Review,
    check_history_reader,
    check_reviewer,
    is_provider,
    may_see,
)
from node.sharing._masking import mask
from node.sharing._notifications import (
    Notification,
    NotificationKind,
    Notifications,
    notification_from_row,
)
from node.sharing._oracle import ORACLE_REFUSALS, OracleGuard, key_digest
from node.sharing._quality_sample import check_quality_sample, sourced_items

__all__ = [
    "MAX_TEXT",
    "ORACLE_REFUSALS",
    "AccessDecider",
    "Application",
    "ApplicationStatus",
    "Applications",
    "AuditDetail",
    "Decision",
    "Draft",
    "Grant",
    "Notification",
    "NotificationKind",
    "Notifications",
    "OracleGuard",
    "Permit",
    "Review",
    "Touches",
    "check_history_reader",
    "check_quality_sample",
    "check_reviewer",
    "check_scope",
    "is_provider",
    "key_digest",
    "mask",
    "may_see",
    "notification_from_row",
    "region_of_id",
    "sourced_items",
]
