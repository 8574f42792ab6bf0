"""The province-scale bench writes its records and audit records in bulk, not through Submit
and the calls (bench.scale_data): what it writes must be what the node itself reads back, a
record Verify finds, a data version that counts every record, and an audit chain that
verifies. Small counts; the bench runs them by the million."""

from __future__ import annotations

from bench import dataset
from bench.scale_data import load_audit, load_records, provider_identity
from node.audit import AuditLog
from node.catalog import Catalog
from node.records import Records
from node.storage import Database

REGION = "350000"


async def test_bulk_records_are_found_by_verify_and_counted(database: Database) -> None:
    provider = provider_identity(REGION, "fujian.gov.cn")
    entry = await Catalog(database, REGION).register(provider, dataset.resource_entry())
    await load_records(database, entry, provider.uri, 0, 1500, batch=1000)
    await load_records(database, entry, provider.uri, 1500, 10, batch=1000)
    records = Records(database, REGION)
    for i in (0, 999, 1000, 1509):
        key = {dataset.KEY_ITEM: dataset.credit_code(i)}
        outcome = await records.verify(entry, key, {dataset.CLAIMED_ITEM: dataset.company_name(i)})
        assert outcome.all_match, i
    missing = {dataset.KEY_ITEM: dataset.credit_code(1510)}
    assert not (await records.verify(entry, missing, {})).found
    row = await database.fetch_one(
        "SELECT data_version, record_count FROM resource_data WHERE resource_code = :code",
        {"code": entry.resource_code},
    )
    assert row is not None and tuple(row) == (1510, 1510)


async def test_bulk_audit_records_keep_a_chain_that_verifies(database: Database) -> None:
    caller = provider_identity(REGION, "fujian.gov.cn").uri
    assert await load_audit(database, caller, 1200, batch=500) == 1200
    check = await AuditLog(database).verify_chain()
    assert check.ok, check.reason
    assert check.checked == 1200
