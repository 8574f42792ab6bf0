"""Shared fixtures (the helpers they build on are in tests/support/).

Sections:

- **Storage backends**: every storage and catalog test runs on SQLite (a file in tmp_path) and,
  when ``GOVNODE_TEST_POSTGRES_URL`` is set, on PostgreSQL too, each test in a database of its
  own that is dropped afterwards (so tests are isolated and can run in parallel); the backends
  themselves are in ``tests.support.databases``.
- **Running nodes**: a province on each backend (``tests.support.nodes`` starts others).
- **Browser**: Debian's chromium driven by Playwright (``browser``, ``page``), for the portal's
  pages; the helpers are in ``tests.support.browser``.
- **Logging**: each test starts from the structlog configuration it found.

Catalog test data (agency codes, identities, entries) is in ``tests.support.entries``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from sqlalchemy import make_url

from bench.databases import POSTGRES_ENV, postgres_url
from node.storage import Database
from tests.support.databases import (
    BACKENDS,
    NewDatabaseUrl,
    OpenDatabase,
    backend_url,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

# --- order ---------------------------------------------------------------------------------

#: The test files whose tests take longest (``pytest --durations=120``, 2026-12-05), slowest
#: first. They run before the others, so that the workers of ``pytest -n`` finish together
#: rather than one of them running a long test alone at the end.
SLOW_FIRST = (
    "tests/hostile/test_fuzz_wire.py",
    "tests/supervision/test_certificate.py",
    "tests/conformance/test_conformance.py",
    "tests/federation/test_approval.py",
    "tests/app/test_serve_process.py",
    "tests/app/test_cli.py",
    "tests/conformance/test_conformance_opendata.py",
    "tests/sharing/test_access_cli.py",
    "tests/audit/test_witnessing.py",
    "tests/audit/test_archive.py",
    "tests/quality/test_errors_cli.py",
    "tests/governance/test_changes_cli.py",
    "tests/opendata/test_applications_api.py",
    "tests/backup/test_backup_restore.py",
    "tests/federation/test_federation_join.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow files first (SLOW_FIRST), each file's tests in their own order."""
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


# --- storage backends ---------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> list[str]:
    url = postgres_url()
    if url is None:
        return [f"storage backends: sqlite (set {POSTGRES_ENV} to run PostgreSQL too)"]
    shown = make_url(url).render_as_string(hide_password=True)
    return [f"storage backends: sqlite, postgresql ({shown}, a fresh database per test)"]


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database, once per backend (test ids end in [sqlite]/[postgresql])."""
    async with backend_url(request.param, tmp_path / "node.db") as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def db_urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NewDatabaseUrl]:
    """A factory of empty databases on one backend per test run (ids [sqlite]/[postgresql]),
    for tests that start several nodes, each with a database of its own."""
    async with contextlib.AsyncExitStack() as stack:

        async def new_url() -> str:
            return await stack.enter_async_context(
                backend_url(request.param, tmp_path / f"{uuid.uuid4().hex}.db")
            )

        yield new_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An empty SQLite database file, for tests about SQLite itself."""
    return f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """An open, migrated database on each backend."""
    db = await Database.open(db_url)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()


@pytest.fixture
async def open_database(tmp_path: Path) -> AsyncIterator[OpenDatabase]:
    """Open a fresh, migrated database on a named backend ("sqlite" or "postgresql"); for
    tests that compare backends or need several independent databases. Skips on PostgreSQL
    when it is not configured."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_on(backend: str) -> Database:
            url = await stack.enter_async_context(
                backend_url(backend, tmp_path / f"{uuid.uuid4().hex}.db")
            )
            db = await Database.open(url)
            stack.push_async_callback(db.close)
            await db.migrate()
            return db

        yield open_on


# --- running nodes ------------------------------------------------------------------------


@pytest.fixture
async def province(tmp_path: Path, db_url: str) -> AsyncIterator[Any]:
    """A province node with fresh PKI, serving mutual TLS on loopback, on each backend."""
    from tests.support.nodes import make_province, start

    setup = make_province(tmp_path / "province", db_url)
    node = await start(setup)
    try:
        yield setup, node
    finally:
        await node.stop(grace=0)


# --- browser ------------------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless, started for this test and closed after it (about half a
    second); fails the test when chromium is not installed (``make browser`` installs it)."""
    from tests.support.browser import launch_chromium

    async with launch_chromium() as started:
        yield started


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh zh-CN browser context that accepts self-signed certificates (the
    portal serves HTTPS; tests give it a throwaway certificate)."""
    from tests.support.browser import open_page

    async with open_page(browser, ignore_https_errors=True) as opened:
        yield opened


# --- logging ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _logging_config_restored() -> Iterator[None]:
    """A CLI command run in-process (typer's CliRunner) configures structlog for the whole
    process, as a command does in its own; each test starts from the configuration it found."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
