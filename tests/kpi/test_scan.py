"""The PostgreSQL rebuild's SQL helpers: the 766 score and local dates."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Date, bindparam, select, text

from ioc.context import AppContext
from ioc.kit.clock import local_date
from ioc.kit.types import UTCDateTime
from ioc.kpi import service_index
from ioc.kpi.scan import _Clock, date_column
from ioc.records.stores import STORES
from tests.kpi.strategies import TZ
from tests.support.factories import make_dossier

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@ON_POSTGRES
async def test_the_service_index_in_sql_equals_the_python_score(ctx: AppContext) -> None:
    names = service_index.COMPONENTS
    rng = random.Random(11)
    cases = [{name: None for name in names}, {name: 100.0 for name in names}]
    for _ in range(150):
        cases.append(
            {
                name: rng.choice([None, 0.0, 50.0, 12.5, 62.5, round(rng.uniform(0, 100), 4)])
                for name in names
            }
        )
    rows = ", ".join(
        "(" + ", ".join(f"{v!r}::float8" if v is not None else "NULL::float8" for v in case) + ")"
        for case in (tuple(c[name] for name in names) for c in cases)
    )
    columns = [f"r{i}" for i in range(len(names))]
    score = service_index.score_sql(dict(zip(names, columns, strict=True)))
    query = text(f"SELECT {score} FROM (VALUES {rows}) AS t({', '.join(columns)})")
    async with ctx.sessionmaker() as session:
        scores = (await session.execute(query)).scalars().all()
    assert [service_index.score(case) for case in cases] == scores
    assert scores[0] is None and scores[1] == 100.0


@ON_POSTGRES
async def test_local_dates_by_arithmetic_match_the_zone(ctx: AppContext) -> None:
    clock = _Clock.around(TZ, date(2026, 11, 25))
    midnight = datetime(2026, 3, 1, 17, tzinfo=UTC)  # local midnight of 2 March
    moments = [
        midnight,
        midnight + timedelta(microseconds=1),
        midnight - timedelta(microseconds=1),
        datetime(1960, 1, 1, 16, 30, tzinfo=UTC),  # before the zone's offset was +07
        *(
            midnight + timedelta(seconds=random.Random(3).randint(-(10**8), 10**8))
            for _ in range(50)
        ),
    ]
    async with ctx.sessionmaker() as session:
        for moment in moments:
            value = bindparam(None, moment, type_=UTCDateTime())
            at, before = (
                await session.execute(
                    select(clock.day_of(value, before=False), clock.day_of(value, before=True))
                )
            ).one()
            assert at == local_date(moment, TZ)
            assert before == local_date(moment - timedelta(microseconds=1), TZ)


def test_stored_local_dates_are_the_local_dates_of_their_moments() -> None:
    # The rebuild reads `X_date` as the local date of `X_at` (`scan.date_column`).
    paired = {
        (store, column.name)
        for store in STORES.values()
        for column in store.model.__table__.columns
        if date_column(store.model, column.name) is not None
    }
    assert ("dossier", "resolved_at") in {(s.record_class.record_type, n) for s, n in paired}
    for store, name in paired:
        assert isinstance(date_column(store.model, name).type, Date), (store, name)
    midnight = datetime(2026, 3, 1, 17, tzinfo=UTC)  # local midnight of 2 March
    dossier = make_dossier(
        received_at=midnight - timedelta(microseconds=1),
        due_at=midnight,
        resolved_at=midnight + timedelta(hours=30),
    )
    row = STORES["dossier"].to_row(dossier, instance_id=1, tz=TZ, now=midnight)
    for name in ("received_at", "due_at", "resolved_at"):
        stored = date_column(STORES["dossier"].model, name)
        assert row[stored.key] == local_date(row[name], TZ)
