"""A catalog snapshot's parts parsed in a process of its own, while the city stores the parts
before them (:meth:`node.clients.CitySync._snapshot`).

Parsing and checking an entry of the province's snapshot (pydantic's validating parse, which
takes less time than the standard library's ``json.loads`` alone) is most of what a newly joined
city spends holding the interpreter, and storing the entries is most of the rest: in one
process they take turns, in two they overlap, on a second core. The parsing process is started
the safe way in a process with gRPC's threads (``spawn``: it imports govnode first, 2-3 s), so
only a snapshot past :data:`PROCESS_AFTER` entries starts one, and its parts go to it once it
is ready; until then, and for a small catalog, the city parses them itself. If no process can
be started here (no POSIX semaphores in a container, for instance) or one breaks, the city
logs it and parses in its own process from then on. The process ends with the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ClassVar

import structlog
from govnode.v1 import federation_pb2

from gateway.identity import Identity
from node.catalog import Replica
from node.federation import snapshot_replicas
from node.servicers.federation_sync import snapshot_entries

__all__ = ["PROCESS_AFTER", "Parsed", "PartParser", "replicas_of_part"]

log = structlog.get_logger("govnode.catalog_sync")

#: A snapshot's parts go to a parsing process of their own once this many of its entries have
#: been seen (the process costs 2-3 s of a core to start, about as much as parsing some tens
#: of thousands of entries here).
PROCESS_AFTER = 5_000

#: One part's replicas to store and the refusal that cut them short (None if none):
#: :meth:`node.federation.CatalogExchange.snapshot_replicas`.
Parsed = tuple[list[Replica], Exception | None]


def replicas_of_part(raw: bytes, region: str, sender: Identity) -> Parsed:
    """In the parsing process: the replicas of one serialized snapshot part, as the node of
    ``region`` would make them itself."""
    part = federation_pb2.CatalogSnapshotPart.FromString(raw)
    return snapshot_replicas(snapshot_entries(part), region, sender)


def _ready() -> bool:
    """In the parsing process, first: by the time it returns, what parsing needs is imported."""
    return True


class PartParser:
    """Where each part of one snapshot is parsed: here (:meth:`submit` returns None) or in the
    parsing process (an awaitable of its :data:`Parsed`, in the order submitted).

    ``wait_s``: how long :meth:`submit` waits for a process it has just started to be ready
    (0, the default, never: the city parses meanwhile; tests wait, to send every part of a
    small snapshot through the process)."""

    #: Set once a parsing process could not be started or broke: parts are parsed in the
    #: city's own process from then on.
    unavailable: ClassVar[bool] = False

    def __init__(
        self, region: str, sender: Identity, *, after: int = PROCESS_AFTER, wait_s: float = 0.0
    ) -> None:
        self._region = region
        self._sender = sender
        self._after = after
        self._wait_s = wait_s
        self._seen = 0
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[bool] | None = None

    async def submit(
        self, part: federation_pb2.CatalogSnapshotPart
    ) -> asyncio.Future[Parsed] | None:
        self._seen += len(part.entries_json) + part.HasField("large_entry")
        if self._pool is None and self._seen > self._after and not PartParser.unavailable:
            self._start()
        ready = self._ready
        if ready is not None and self._wait_s > 0:
            with contextlib.suppress(Exception):  # not ready in time: looked at below
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ready)), self._wait_s)
        if self._pool is None or ready is None or not ready.done():
            return None
        if ready.exception() is not None:
            self._give_up(ready.exception())
            return None
        try:
            job = self._pool.submit(
                replicas_of_part, part.SerializeToString(), self._region, self._sender
            )
        except (BrokenProcessPool, RuntimeError) as error:
            self._give_up(error)
            return None
        return asyncio.wrap_future(job)

    def broke(self, error: BaseException) -> None:
        """A part sent to the parsing process failed with ``error`` (not a refusal of the
        part): parse here from now on."""
        if isinstance(error, BrokenProcessPool):
            self._give_up(error)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _start(self) -> None:
        try:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            self._ready = self._pool.submit(_ready)
        except (OSError, NotImplementedError, ImportError) as error:
            self._give_up(error)
            return
        log.info("catalog_snapshot_parse_process_started", after_entries=self._seen)

    def _give_up(self, error: BaseException | None) -> None:
        if not PartParser.unavailable:
            log.warning("catalog_snapshot_parse_process_unavailable", error=repr(error)[:200])
        PartParser.unavailable = True
        self.close()
