"""Outbound gRPC: the city's link to its province (catalog sync both ways, heartbeats, revocations)
and joining by invitation. The client-side twin of :mod:`node.servicers`; domain packages do not
import it.
"""

from __future__ import annotations

from node.clients._catalog_sync import CitySync
from node.clients._join import JoinError, join_province

__all__ = ["CitySync", "JoinError", "join_province"]
