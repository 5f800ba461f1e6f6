"""The differences worked out on PostgreSQL: how their look-ups are planned."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ioc.context import AppContext
from ioc.db import driver_connection
from ioc.kpi import delta_sql
from ioc.kpi.delta import delta_kpis, lookup_query
from ioc.records.stores import STORES

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
BY_DIFFERENCE = [t for t in STORES if delta_kpis(t)]
LARGE_TABLE = "SET LOCAL enable_seqscan = off"
"""Plans as for a large table: the test's is empty, and once analysed (autovacuum) it is
rightly read whole; a statement that can look each id up still must."""


@ON_POSTGRES
@pytest.mark.parametrize("record_type", BY_DIFFERENCE)
async def test_the_old_versions_are_copied_by_the_unique_key_whatever_the_statistics(
    ctx: AppContext, record_type: str
) -> None:
    """Planned as a join, the copy read every record of the instance (a fresh table) or hashed
    the whole table (one grown since its last ANALYZE); each id must be one index look-up."""
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(text(LARGE_TABLE))
        await delta_sql.keep_versions(session, record_type, instance_id=1, external_ids=[])
        driver = await driver_connection(session)
        ids = [f"id-{n}" for n in range(5_000)]
        plan = [
            row[0]
            for row in await driver.fetch(
                "EXPLAIN " + delta_sql.keep_statement(record_type), 1, ids, 1
            )
        ]
    assert_each_id_looked_up_by_key(plan, STORES[record_type].model.__table__.name)


@ON_POSTGRES
@pytest.mark.parametrize("record_type", list(STORES))
async def test_a_snapshot_of_stored_versions_looks_each_id_up_by_the_unique_key(
    ctx: AppContext, record_type: str
) -> None:
    """The Python pairing's read of the stored versions (record types without a kept copy)."""
    table = STORES[record_type].model
    ids = [f"id-{n}" for n in range(5_000)]
    query = lookup_query(record_type, {"unit_code": table.unit_code}, 1, ids, postgres=True)
    async with ctx.sessionmaker() as session, session.begin():
        await session.execute(text(LARGE_TABLE))
        sql = query.compile(session.bind, compile_kwargs={"literal_binds": True})
        plan = (await session.scalars(text(f"EXPLAIN {sql}"))).all()
    assert_each_id_looked_up_by_key(plan, table.__table__.name)


def assert_each_id_looked_up_by_key(plan: list[str], table: str) -> None:
    shown = "\n".join(plan)
    assert "Hash" not in shown and f"Seq Scan on {table}" not in shown, shown
    lookups = [line for line in plan if "Index Cond" in line]
    assert lookups and all("external_id" in line for line in lookups), shown
