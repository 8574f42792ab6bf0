"""The Verify oracle's budgets in the database (tables ``oracle_budget`` and ``oracle_key``).

Every process of a node shares them, so the limits hold across restarts and behind a load
balancer (DESIGN.md: process memory may cache, never own). :mod:`node.sharing._oracle` decides
what the limits mean and words the refusals; this module makes each admission one write
transaction:

1. **The decision is one statement.** An ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <the
   bucket has a token and today's count has room> RETURNING`` refills the bucket, spends from it
   and counts the rows against today's quota, or, when the WHERE fails, changes nothing: a
   refused call spends nothing. It is atomic on both backends: SQLite runs one writer at a time
   (``BEGIN IMMEDIATE``); PostgreSQL locks the conflicting row and evaluates the WHERE on its
   newest version, so concurrent callers in any number of processes queue on the row and each
   sees the spending of the one before.
2. **The enumeration watch runs in the same transaction**, after an admission, while the budget
   row is still locked: so the watch of one (caller, resource) pair is serialised too, and a run
   is flagged exactly once per window however many processes see it.

The SQL is the same text on SQLite (3.35+: RETURNING) and PostgreSQL, with the configured limits
written in as integer literals (they come from the validated config, never from a caller), so
nothing here branches on the backend. Instants are float epoch seconds and every computation on
them is done in SQL; :func:`available_tokens` is the same formula in Python, for the refusal's
"retry after".

Storage stays bounded:

- ``oracle_budget``: one row per (caller, resource) pair that used Verify today. A row whose
  bucket is full again (idle for a minute), whose day is past and whose quiet period is over
  says nothing a missing row would not, and is pruned.
- ``oracle_key``: key digests (12-byte blake2b, in hex; never the key's values). Per pair at most
  ``enumeration_distinct_keys - 1`` survive a transaction (a run that reaches the threshold is
  flagged and forgotten, or, in the quiet period after a flag, trimmed to the newest), and rows
  older than the window are pruned.

Pruning runs in an admission's transaction, at most once a minute per process (the caller
decides when, :data:`PRUNE_SECONDS`); both deletes use an index. On PostgreSQL a prune and an
admission that revives expired keys can, rarely, deadlock; the database aborts one and
``write_sync`` re-runs it whole, like any other conflict.

Cost per admission: one hop to the writer thread on SQLite. On PostgreSQL one transaction: the
decision alone when the watch is off (``enumeration_distinct_keys = 0``), and with the watch two
more statements (remember the keys, count the run), plus BEGIN and COMMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from node.config import OracleSection
from node.storage import Database

#: How often one process prunes rows that no longer matter (seconds).
PRUNE_SECONDS = 60.0

# The bucket refills verify_per_minute tokens in 60 s; a row untouched this long is full.
_REFILL_SECONDS = 60.0


@dataclass(frozen=True)
class Decision:
    """What one admission found. ``admitted``: the budget was spent. Otherwise the pair's row
    as it stood when refused (zeros when there is none), for the refusal's message."""

    admitted: bool
    flagged: bool = False
    tokens: float = 0.0
    refilled_at: float = 0.0
    day: int = 0
    used_today: int = 0


def available_tokens(config: OracleSection, tokens: float, refilled_at: float, now: float) -> float:
    """The bucket's tokens at ``now``: what the SQL of :class:`OracleBudgets` computes, in the
    same order of operations (so a refusal's retry time agrees with the decision)."""
    per_minute = config.verify_per_minute
    elapsed = now - refilled_at if now > refilled_at else 0.0
    refilled = tokens + elapsed * per_minute / 60
    return per_minute if refilled > per_minute else refilled


def _admit_sql(config: OracleSection) -> str:
    per_minute, per_day = config.verify_per_minute, config.verify_per_day
    b = "oracle_budget"
    # A clock that lags another process's never moves refilled_at or day back: the bucket
    # refills only for time no process has counted yet, and a lagging process counts against
    # the newer day.
    elapsed = f"CASE WHEN :now > {b}.refilled_at THEN :now - {b}.refilled_at ELSE 0 END"
    refilled = f"{b}.tokens + ({elapsed}) * {per_minute} / 60"
    available = f"CASE WHEN {refilled} > {per_minute} THEN {per_minute} ELSE {refilled} END"
    used = f"CASE WHEN :day > {b}.day THEN 0 ELSE {b}.used_today END"
    allows = []
    if per_minute:
        allows.append(f"{available} >= 1")
    if per_day:
        allows.append(f"{used} + :rows <= {per_day}")
    where = f"WHERE {' AND '.join(allows)}" if allows else ""
    # Only integers from the validated config are written into the text; callers' values
    # (caller, resource, instants) are bound parameters.
    return f"""
        INSERT INTO {b} (caller, resource_code, tokens, refilled_at, day, used_today, quiet_until)
        VALUES (:caller, :resource_code, {max(per_minute - 1, 0)}, :now, :day, :rows, 0)
        ON CONFLICT (caller, resource_code) DO UPDATE SET
            tokens = {f"{available} - 1" if per_minute else f"{b}.tokens"},
            refilled_at = CASE WHEN :now > {b}.refilled_at THEN :now ELSE {b}.refilled_at END,
            day = CASE WHEN :day > {b}.day THEN :day ELSE {b}.day END,
            used_today = {used} + :rows
        {where}
        RETURNING quiet_until
    """  # noqa: S608


class OracleBudgets:
    """The shared budgets of one node (see the module docstring). One instance per process."""

    def __init__(self, db: Database, config: OracleSection) -> None:
        self._db = db
        self._config = config
        self._window = config.enumeration_window_seconds
        self._threshold = config.enumeration_distinct_keys
        self._admit = text(_admit_sql(config))
        self._read = text(
            "SELECT tokens, refilled_at, day, used_today FROM oracle_budget "
            "WHERE caller = :caller AND resource_code = :resource_code"
        )
        self._quiet = text(
            "UPDATE oracle_budget SET quiet_until = :until "
            "WHERE caller = :caller AND resource_code = :resource_code"
        )
        self._see = text(
            "INSERT INTO oracle_key (caller, resource_code, digest, seen_at) "
            "VALUES (:caller, :resource_code, :digest, :now) "
            "ON CONFLICT (caller, resource_code, digest) DO UPDATE SET seen_at = CASE "
            "WHEN excluded.seen_at > oracle_key.seen_at THEN excluded.seen_at "
            "ELSE oracle_key.seen_at END"
        )
        self._count = text(
            "SELECT count(*) FROM oracle_key "
            "WHERE caller = :caller AND resource_code = :resource_code AND seen_at > :cutoff"
        )
        self._forget = text(
            "DELETE FROM oracle_key WHERE caller = :caller AND resource_code = :resource_code"
        )
        # The newest threshold - 1 stay: one more new key after the quiet period is a new run.
        self._trim = text(
            "DELETE FROM oracle_key "
            "WHERE caller = :caller AND resource_code = :resource_code AND digest NOT IN ("
            "SELECT digest FROM oracle_key "
            "WHERE caller = :caller AND resource_code = :resource_code AND seen_at > :cutoff "
            "ORDER BY seen_at DESC, digest LIMIT :keep)"
        )
        self._prune_keys = text("DELETE FROM oracle_key WHERE seen_at <= :cutoff")
        self._prune_budgets = text(
            "DELETE FROM oracle_budget WHERE day < :day AND refilled_at <= :full_since "
            "AND quiet_until <= :now"
        )

    async def admit(
        self,
        caller: str,
        resource_code: str,
        digests: Sequence[str],
        *,
        rows: int,
        now: float,
        day: int,
        prune: bool = False,
    ) -> Decision:
        """Spend one call (``rows`` against the daily quota) of ``caller`` on ``resource_code``
        at ``now`` (epoch seconds) on CST day ``day`` (YYYYMMDD), and watch ``digests`` (in the
        order asked); or refuse and spend nothing. One write transaction, retried as a whole on
        a conflict; ``prune`` also deletes rows that no longer matter, in the same transaction.
        """
        pair = {"caller": caller, "resource_code": resource_code}
        now = float(now)
        distinct = list(dict.fromkeys(digests))

        def txn(connection: Connection) -> Decision:
            if prune:
                self._prune(connection, now, day)
            per_day = self._config.verify_per_day
            quiet_until = None
            if not (per_day and rows > per_day):  # more rows than a whole day: never fits
                params = pair | {"now": now, "day": day, "rows": rows}
                quiet_until = connection.execute(self._admit, params).scalar_one_or_none()
            if quiet_until is None:
                row = connection.execute(self._read, pair).first()
                if row is None:
                    return Decision(admitted=False)
                return Decision(False, False, float(row[0]), float(row[1]), row[2], row[3])
            flagged = self._threshold > 0 and self._watch(
                connection, pair, distinct, now, float(quiet_until)
            )
            return Decision(admitted=True, flagged=flagged)

        return await self._db.write_sync("oracle.admit", txn)

    def _watch(
        self,
        connection: Connection,
        pair: dict[str, str],
        digests: list[str],
        now: float,
        quiet_until: float,
    ) -> bool:
        """Remember the keys; True when the pair's run of different keys within the window
        reaches the threshold and the last flag is a window old (the run is then forgotten)."""
        threshold, cutoff = self._threshold, now - self._window
        quiet = now < quiet_until
        if len(digests) >= threshold:
            # One Compare alone makes the run: no need to store keys only to count them.
            connection.execute(self._forget, pair)
            if not quiet:
                connection.execute(self._quiet, pair | {"until": now + self._window})
                return True
            keep = digests[len(digests) - threshold + 1 :] if threshold > 1 else []
            if keep:
                connection.execute(self._see, [pair | {"digest": d, "now": now} for d in keep])
            return False
        if digests:
            connection.execute(self._see, [pair | {"digest": d, "now": now} for d in digests])
        seen = connection.execute(self._count, pair | {"cutoff": cutoff}).scalar_one()
        if seen < threshold:
            return False
        if quiet:  # flagged in this window already: stay bounded
            connection.execute(self._trim, pair | {"cutoff": cutoff, "keep": threshold - 1})
            return False
        connection.execute(self._forget, pair)
        connection.execute(self._quiet, pair | {"until": now + self._window})
        return True

    def _prune(self, connection: Connection, now: float, day: int) -> None:
        connection.execute(self._prune_keys, {"cutoff": now - self._window})
        connection.execute(
            self._prune_budgets,
            {"day": day, "full_since": now - _REFILL_SECONDS, "now": now},
        )
