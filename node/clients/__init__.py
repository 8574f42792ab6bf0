"""Outbound gRPC: the city's link to its province (catalog sync both ways, heartbeats,
revocations), joining by invitation, sending the audit log's checkpoints to its witnesses,
the province reading its approved cities' open catalogs, and every node delivering the
notifications it holds for other regions' recipients, and every node's supervision summary
(a city's sent to its province).
The client-side twin of :mod:`node.servicers`; domain packages do not import it.
"""

from __future__ import annotations

from node.clients._catalog_sync import CitySync
from node.clients._checkpointing import (
    CheckpointPublisher,
    PublisherStatus,
    WitnessStatus,
    fetch_witnessed,
    newest_witnessed,
    witness_endpoints,
    witness_rule,
)
from node.clients._city_catalogs import fetch_city_catalog
from node.clients._join import JoinError, join_province
from node.clients._notice_delivery import NoticeDelivery
from node.clients._summary_publish import SummaryPublisher

__all__ = [
    "CheckpointPublisher",
    "CitySync",
    "JoinError",
    "NoticeDelivery",
    "PublisherStatus",
    "SummaryPublisher",
    "WitnessStatus",
    "fetch_city_catalog",
    "fetch_witnessed",
    "join_province",
    "newest_witnessed",
    "witness_endpoints",
    "witness_rule",
]
