"""Fresh databases for a run: a SQLite file, or a PostgreSQL database of its own created next
to the one GOVNODE_TEST_POSTGRES_URL names (the user needs CREATEDB) and dropped afterwards.
The test suite makes its databases the same way (tests/support/databases.py)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy import make_url

POSTGRES_ENV = "GOVNODE_TEST_POSTGRES_URL"


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
    """A new database on ``backend`` ("sqlite" or "postgresql"): its URL, for the block."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_file}"
        return
    base = postgres_url()
    if base is None:
        raise RuntimeError(f"{POSTGRES_ENV} is not set: no PostgreSQL server to run on")
    async with fresh_postgres_database(base) as url:
        yield url
