"""Shared fixtures.

Sections:

- **Storage backends**: every storage and catalog test runs on SQLite (a file in tmp_path) and,
  when ``GOVNODE_TEST_POSTGRES_URL`` is set, on PostgreSQL too, each test in a database of its
  own that is dropped afterwards (so tests are isolated and can run in parallel).
- **Catalog test data**: valid agency codes, agency identities and catalog entries to start
  from; tests change what they are about and leave the rest valid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from sqlalchemy import make_url

from gateway.identity import Identity, Role
from node.catalog import (
    Classification,
    DataItem,
    DataType,
    MaskingKind,
    MaskingRule,
    OpenType,
    ResourceEntry,
    ShareMethod,
    ShareType,
    UpdateCycle,
    ValidationKind,
    ValidationRule,
)
from node.codes import make_credit_code
from node.storage import Database

# --- storage backends ---------------------------------------------------------------------

POSTGRES_ENV = "GOVNODE_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")
POSTGRES_SKIP = f"{POSTGRES_ENV} not set: PostgreSQL tests skipped, SQLite only"


def _postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


def pytest_report_header(config: pytest.Config) -> list[str]:
    url = _postgres_url()
    if url is None:
        return [f"storage backends: sqlite (set {POSTGRES_ENV} to run PostgreSQL too)"]
    shown = make_url(url).render_as_string(hide_password=True)
    return [f"storage backends: sqlite, postgresql ({shown}, a fresh database per test)"]


@contextlib.asynccontextmanager
async def _fresh_postgres_database(base_url: str) -> AsyncIterator[str]:
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
async def _backend_url(backend: str, sqlite_file: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{sqlite_file}"
        return
    base = _postgres_url()
    if base is None:
        pytest.skip(POSTGRES_SKIP)
    async with _fresh_postgres_database(base) as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of an empty database, once per backend (test ids end in [sqlite]/[postgresql])."""
    async with _backend_url(request.param, tmp_path / "node.db") as url:
        yield url


NewDatabaseUrl = Callable[[], Awaitable[str]]


@pytest.fixture(params=BACKENDS)
async def db_urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NewDatabaseUrl]:
    """A factory of empty databases on one backend per test run (ids [sqlite]/[postgresql]),
    for tests that start several nodes, each with a database of its own."""
    async with contextlib.AsyncExitStack() as stack:

        async def new_url() -> str:
            return await stack.enter_async_context(
                _backend_url(request.param, tmp_path / f"{uuid.uuid4().hex}.db")
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


OpenDatabase = Callable[[str], Awaitable[Database]]


@pytest.fixture
async def open_database(tmp_path: Path) -> AsyncIterator[OpenDatabase]:
    """Open a fresh, migrated database on a named backend ("sqlite" or "postgresql"); for
    tests that compare backends or need several independent databases. Skips on PostgreSQL
    when it is not configured."""
    async with contextlib.AsyncExitStack() as stack:

        async def open_on(backend: str) -> Database:
            url = await stack.enter_async_context(
                _backend_url(backend, tmp_path / f"{uuid.uuid4().hex}.db")
            )
            db = await Database.open(url)
            stack.push_async_callback(db.close)
            await db.migrate()
            return db

        yield open_on


# --- catalog test data --------------------------------------------------------------------

NODE_REGION = "350100"  # 福州市
TRUST_DOMAIN = "fujian.gov.cn"
FIXED_TIME = dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.UTC)


def agency_code(n: int, region: str = NODE_REGION) -> str:
    """A valid 统一社会信用代码 of an agency registered in ``region`` (chars 3-8)."""
    return make_credit_code(f"11{region}MB{n:07d}")


def agency(code: str, region: str = NODE_REGION) -> Identity:
    return Identity(region, TRUST_DOMAIN, Role.AGENCY, code)


def resource_code(n: int, classification: Classification = Classification.DEPARTMENTAL) -> str:
    digit = {Classification.BASIC: 1, Classification.THEMATIC: 2, Classification.DEPARTMENTAL: 3}
    return f"{NODE_REGION}-{digit[classification]}-{n:06d}"


def item(name: str, **fields: Any) -> DataItem:
    values: dict[str, Any] = {
        "title": name.upper(),
        "data_type": DataType.STRING,
        "sensitivity_level": 1,
    } | fields
    return DataItem(name=name, **values)


def make_entry(n: int, provider: str | None = None, **fields: Any) -> ResourceEntry:
    """A valid, conditionally shared departmental entry numbered ``n``, with a key item."""
    classification = fields.get("classification", Classification.DEPARTMENTAL)
    values: dict[str, Any] = {
        "resource_code": resource_code(n, classification),
        "name": f"资源{n}",
        "provider_name": "福州市市场监督管理局",
        "provider_code": provider or agency_code(1),
        "classification": Classification.DEPARTMENTAL,
        "industry_category": "市场监管",
        "summary": "企业登记信息",
        "format": "table",
        "items": (item("tyshxydm", key=True, required=True), item("qymc")),
        "share_type": ShareType.CONDITIONAL,
        "share_conditions": "用于行政审批",
        "share_methods": (ShareMethod.VERIFY, ShareMethod.QUERY),
        "open_type": OpenType.NOT_OPEN,
        "update_cycle": UpdateCycle.DAILY,
        "publish_date": "2025-01-15",
    } | fields
    return ResourceEntry(**values)


def person_entry(n: int = 2, provider: str | None = None, **fields: Any) -> ResourceEntry:
    """A valid entry of personal records (人口基础信息) keyed by 公民身份号码, with an item of
    every kind the records tests need: rules, masking, dates, decimals, enums."""
    items = (
        DataItem(
            name="sfzhm",
            title="公民身份号码",
            data_type=DataType.STRING,
            key=True,
            sensitivity_level=3,
            validation=ValidationRule(kind=ValidationKind.CITIZEN_ID),
            masking=MaskingRule(kind=MaskingKind.CITIZEN_ID),
        ),
        DataItem(
            name="xm",
            title="姓名",
            data_type=DataType.STRING,
            required=True,
            sensitivity_level=3,
            validation=ValidationRule(max_length=50),
            masking=MaskingRule(kind=MaskingKind.NAME),
        ),
        DataItem(
            name="sjhm",
            title="手机号码",
            data_type=DataType.STRING,
            sensitivity_level=3,
            validation=ValidationRule(kind=ValidationKind.PHONE),
            masking=MaskingRule(kind=MaskingKind.PHONE),
        ),
        DataItem(name="csrq", title="出生日期", data_type=DataType.DATE, sensitivity_level=2),
        DataItem(name="ysr", title="月收入", data_type=DataType.DECIMAL, sensitivity_level=3),
        DataItem(
            name="hyzk",
            title="婚姻状况",
            data_type=DataType.ENUM,
            sensitivity_level=3,
            validation=ValidationRule(enum_values=("未婚", "已婚", "离婚", "丧偶")),
        ),
    )
    values: dict[str, Any] = {
        "name": "人口基础信息",
        "provider_name": "福州市公安局",
        "items": items,
        "share_methods": (ShareMethod.VERIFY, ShareMethod.COMPARE, ShareMethod.QUERY),
    } | fields
    return make_entry(n, provider, **values)


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


# --- logging ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _logging_config_restored() -> Iterator[None]:
    """A CLI command run in-process (typer's CliRunner) configures structlog for the whole
    process, as a command does in its own; each test starts from the configuration it found."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
