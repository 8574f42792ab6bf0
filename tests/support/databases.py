"""The storage backends tests run on: SQLite always, PostgreSQL when GOVNODE_TEST_POSTGRES_URL is
set, each test in a database of its own that is dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from node.storage import Database

POSTGRES_ENV = "GOVNODE_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
POSTGRES_SKIP = f"{POSTGRES_ENV} not set: PostgreSQL tests skipped, SQLite only"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@contextlib.asynccontextmanager
async def fresh_postgres_database(base_url: str) -> AsyncIterator[str]:
    """Create ``gn_<uuid>`` next to the database in ``base_url``; yield its URL; drop it."""
    base = make_url(base_url)
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"gn_{uuid.uuid4().hex}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def backend_url(backend: str, sqlite_file: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_file}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip(POSTGRES_SKIP)
    async with fresh_postgres_database(base) as url:
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
