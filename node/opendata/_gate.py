"""Who may open data (第三十一条): the province always; a city only once the province approved
it as a sub-platform (after its conformance tests, `govnode federation approve`); the city
learns its approval on its heartbeat (node.federation.own_approval)."""

from __future__ import annotations

from node.federation import own_approval
from node.opendata._publish import MayOpen
from node.storage import Database

NOT_APPROVED = (
    "this city's node is not approved as an open-data sub-platform yet: the province approves "
    "it after its connectivity and security tests (第三十一条), and until then it neither "
    "publishes nor serves open data"
)


def open_data_gate(db: Database, *, province: bool) -> MayOpen:
    async def may_open() -> str | None:
        if province or await own_approval(db):
            return None
        return NOT_APPROVED

    return may_open
