"""The storage backends tests run on: SQLite always, PostgreSQL when GOVNODE_TEST_POSTGRES_URL is
set, each test in a database of its own that is dropped afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection

from bench.databases import POSTGRES_ENV, postgres_url
from bench.databases import backend_url as bench_backend_url
from node.storage import Database
from node.storage._migrations import alembic_config

BACKENDS = ("sqlite", "postgresql")
POSTGRES_SKIP = f"{POSTGRES_ENV} not set: PostgreSQL tests skipped, SQLite only"


@contextlib.asynccontextmanager
async def backend_url(backend: str, sqlite_file: Path) -> AsyncIterator[str]:
    """As bench's, but a test on PostgreSQL without a server is skipped."""
    if backend != "sqlite" and postgres_url() is None:
        pytest.skip(POSTGRES_SKIP)
    async with bench_backend_url(backend, sqlite_file) as url:
        yield url


NewDatabaseUrl = Callable[[], Awaitable[str]]
OpenDatabase = Callable[[str], Awaitable[Database]]


def sqlite_urls(base: Path) -> NewDatabaseUrl:
    """A new SQLite database per node, under ``base``: for federation tests whose subject does
    not depend on the backend (offline proof files, bundles, files altered as SQLite files),
    where a PostgreSQL run would only repeat the same code path at twice the cost."""
    made = iter(range(1000))

    async def new() -> str:
        return f"sqlite+aiosqlite:///{base / f'node-{next(made)}.db'}"

    return new


async def migrate(db: Database, how: str, revision: str) -> None:
    """Alembic ``upgrade``/``downgrade`` to ``revision`` on ``db`` (migration tests)."""

    def run(sync: Connection) -> None:
        getattr(command, how)(alembic_config(sync), revision)

    async with db.engine.begin() as connection:
        await connection.run_sync(run)
