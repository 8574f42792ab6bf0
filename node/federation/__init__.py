"""The province and its cities (第十九、二十条), the domain side of both ends.

- ``_join``: invitations and admitting a city (the province's side of joining);
- ``_sync``: the province's catalog exchange with its cities (feed changes, and the snapshot
  a newly joined city starts from);
- ``_peers``, ``_routing``: which node serves a region, and routing calls to it;
- ``_nonces``: caller assertions' nonces, each accepted once;
- ``_approval``: approving a city as a sub-platform on its conformance report (第三十一条);
- ``_notices``: notifications for other regions' recipients, delivered and received once.

The city's gRPC client side (catalog sync, heartbeats, joining) is in :mod:`node.clients`.
"""

from __future__ import annotations

from node.federation._approval import (
    DEFAULT_MAX_AGE,
    ApprovalError,
    ApprovalFacts,
    approvals,
    approved_cities,
    check_report,
    is_approved,
    known_cities,
    own_approval,
    record_approval,
    set_own_approval,
)
from node.federation._join import (
    Invitation,
    JoinApplication,
    admit,
    create_invitation,
    cst,
    invitations,
    members,
    reachable_address,
)
from node.federation._nonces import AssertionNonces
from node.federation._notices import (
    MAX_BATCH,
    MAX_MESSAGE_BYTES,
    NoticeInbox,
    NoticeOutbox,
)
from node.federation._peers import (
    ProvinceLink,
    heard_from,
    province_peers,
    record_peer_info,
    skew_ms,
)
from node.federation._routing import Router
from node.federation._sync import CatalogExchange, snapshot_replicas

__all__ = [
    "DEFAULT_MAX_AGE",
    "MAX_BATCH",
    "MAX_MESSAGE_BYTES",
    "ApprovalError",
    "ApprovalFacts",
    "AssertionNonces",
    "CatalogExchange",
    "Invitation",
    "JoinApplication",
    "NoticeInbox",
    "NoticeOutbox",
    "ProvinceLink",
    "Router",
    "admit",
    "approvals",
    "approved_cities",
    "check_report",
    "create_invitation",
    "cst",
    "heard_from",
    "invitations",
    "is_approved",
    "known_cities",
    "members",
    "own_approval",
    "province_peers",
    "reachable_address",
    "record_approval",
    "record_peer_info",
    "set_own_approval",
    "skew_ms",
    "snapshot_replicas",
]
