"""Publishing this node's supervision summary (province roll-up, issue 15 item 6).

A background task of every node. Soon after start (:data:`FIRST_DELAY_S`) and then every
``[supervision] summary_seconds`` it computes its region's summary (node.supervision's
compute_summary: SQL in small transactions) and signs it with the node key and chain:

- a city sends it to its province with FederationService.PublishSupervisionSummary, made as
  the node itself (gateway.forward ``own_unary``: the forwarder's channel, breaker, retries of
  UNAVAILABLE and deadline). A failure the province may get over (UNAVAILABLE, a deadline, the
  database away) is tried again with jittered backoff doubling from :data:`RETRY_FIRST_S` up to
  the period; a refusal (PERMISSION_DENIED, INVALID_ARGUMENT: this node is not a member, or the
  summary does not verify) is logged and tried again at the next period only;
- the province keeps its own (node.supervision.Rollup.store), signed the same way.

Errors are logged, never raised into the node.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from govnode.v1 import federation_pb2

from gateway.refusal import Refusal
from node.config import Mode, NodeConfig
from node.errors import DomainError
from node.federation import Router
from node.supervision import Rollup, Supervision, compute_summary, sign_summary
from node.tasks import BackgroundJob

log = structlog.get_logger("govnode.summary_publish")

METHOD = "/govnode.v1.FederationService/PublishSupervisionSummary"
#: One publishing call must finish within this (seconds).
CALL_TIMEOUT_S = 30.0
#: The first summary is made this long after start (seconds; less if the period is shorter).
FIRST_DELAY_S = 2.0
#: The first retry after a failure the province may get over (seconds), doubling to the period.
RETRY_FIRST_S = 5.0
#: Refusals that will not change by trying again soon.
_FINAL = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class SummaryPublisher(BackgroundJob):
    """Runs this node's summary rounds until :meth:`stop`."""

    task_name = "summary_publish"

    def __init__(
        self,
        config: NodeConfig,
        supervision: Supervision,
        router: Router,
        *,
        node_uri: str,
        node_key: ec.EllipticCurvePrivateKey,
        chain_pem: str,
        rollup: Rollup | None,
    ) -> None:
        self._config = config
        self._supervision = supervision
        self._router = router
        self._node_uri = node_uri
        self._key = node_key
        self._chain_pem = chain_pem
        self._rollup = rollup
        self._every = config.supervision.summary_seconds
        self._failures = 0
        #: Rounds that published (sent and answered, or kept at the province).
        self.published = 0

    def _retry_in(self) -> float:
        delay = min(self._every, RETRY_FIRST_S * 2**self._failures)
        self._failures = min(self._failures + 1, 32)
        return random.uniform(delay / 2, delay)

    async def _forever(self) -> None:
        await asyncio.sleep(min(FIRST_DELAY_S, self._every))
        while True:
            wait = self._every
            try:
                await self.run_once()
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Refusal as exc:
                if exc.code not in _FINAL:
                    wait = self._retry_in()
                log.warning(
                    "summary_publish_refused",
                    code=exc.code.name,
                    error=exc.message[:300],
                    retry_in_s=round(wait, 2),
                )
            except DomainError as exc:  # the database away, no endpoint yet
                wait = self._retry_in()
                log.warning(
                    "summary_publish_failed",
                    code=type(exc).__name__,
                    error=str(exc)[:300],
                    retry_in_s=round(wait, 2),
                )
            except Exception as exc:  # never into the node: the next round tries again
                wait = self._retry_in()
                log.warning(
                    "summary_publish_failed", error=str(exc)[:300], retry_in_s=round(wait, 2)
                )
            await asyncio.sleep(wait)

    async def run_once(self) -> bool:
        """Compute, sign and publish one summary; whether the province stored it."""
        summary = await compute_summary(
            self._supervision,
            self._node_uri,
            max_agencies=self._config.supervision.summary_max_agencies,
        )
        document = sign_summary(summary, self._key, self._chain_pem)
        if self._config.node.mode is Mode.PROVINCE:
            assert self._rollup is not None, "the province keeps its own summary"
            stored = await self._rollup.store(summary, document, self._node_uri)
        else:
            fed = self._config.federation
            assert fed.province_endpoint and fed.province_region, "a city names its province"
            reply = await self._router.forwarder.own_unary(
                fed.province_endpoint,
                fed.province_region,
                METHOD,
                federation_pb2.PublishSupervisionSummaryRequest(summary=document),
                federation_pb2.PublishSupervisionSummaryResponse,
                within_s=CALL_TIMEOUT_S,
            )
            stored = bool(reply.stored)
        self.published += 1
        log.info(
            "summary_published",
            region=summary.region,
            agencies=len(summary.agencies),
            agencies_total=summary.agencies_total,
            resources=len(summary.resources),
            bytes=len(document),
            stored=stored,
        )
        return stored
