"""Incremental recompute by differences on PostgreSQL, in one statement.

The same differences as `ioc.kpi.delta` (read its docstring for the rules and why they are
exact), worked out by the database instead of in Python: before its upsert, the ingest copies
the stored versions of the batch's records into a temporary table (`keep_versions`); after
it, one statement (`apply`) pairs each record's old version (that table) with its new one (the
records table), per KPI:

- in-period KPIs: a pair whose (unit, day, numerator, denominator) changed takes the old
  contribution off its day and adds the new one (summed per unit and day for all the KPIs
  sharing a time column, then split by KPI: far fewer rows than one per record and KPI); an
  old version whose drift moment passed since the start of yesterday has its day cell counted
  again from the records instead;
- stock KPIs: each version's interval of days becomes +1/−1 events; their running sum,
  where it is not zero, is the change of each day between the old and new interval's ends;
  the versions counting now change today's cell;
- every day difference is added to its day, month, quarter and year cell (a stock's longer
  period only at its last day, today while it runs) and to the province's; differences
  summing to zero are dropped; the rest are upserted (`num = num + excluded.num`);
- composite scores (the 766 index) are combined again for the cells whose components moved,
  from the upserted and stored component cells, rounded as Python rounds (`python_round`),
  and written only where the score changed.

It returns every changed cell (kpi, unit, period kind, period start, numerator, denominator).
Look-ups go by key whatever the statistics (`OFFSET 0` keeps each a parameterised index scan):
the batch's ids in the records' unique key, the old versions in the temporary table's index.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import column, literal_column, table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.db import driver_connection
from ioc.kit.clock import local_date, local_midnight
from ioc.kit.types import UTCDateTime
from ioc.kpi import service_index
from ioc.kpi.catalog import CATALOG, KpiDefinition, ValueKind
from ioc.kpi.engine import STOCK_HORIZON_DAYS
from ioc.kpi.formulas import Composite, InPeriod, OpenAt, Tally
from ioc.kpi.sql_round import python_round
from ioc.records.stores import STORES
from ioc.units.service import COMMUNE_LEVEL

_marks = itertools.count(1)

Row = tuple[str, str, str, date, float, float | None]
"""A changed cell: (kpi, unit, period kind, period start, numerator, denominator)."""


def supported(session: AsyncSession, record_type: str) -> bool:
    """Whether the differences of `record_type` are worked out in SQL: on PostgreSQL, for a
    record type some KPIs of which move by differences."""
    return session.bind.dialect.name == "postgresql" and any(
        k.record_type == record_type and isinstance(k.formula, InPeriod | OpenAt) for k in CATALOG
    )


def kept_table(record_type: str) -> str:
    """The temporary table holding the old versions of `record_type` records."""
    return f"kpi_before_{record_type}"


async def keep_versions(
    session: AsyncSession,
    record_type: str,
    *,
    instance_id: int,
    external_ids: list[str],
    facts: Sequence[str] = (),
) -> tuple[int, list[dict[str, Any]]]:
    """Copy the stored versions of these records into this connection's temporary table
    (emptied at commit) before they are overwritten; returns their mark, for `apply`, and the
    columns `facts` of each version copied."""
    name = kept_table(record_type)
    records = STORES[record_type].model.__table__.name
    mark = next(_marks)
    driver = await driver_connection(session)
    await driver.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} (kept integer, LIKE {records})"
        f" ON COMMIT DELETE ROWS; CREATE INDEX IF NOT EXISTS {name}_key"
        f" ON {name} (external_id, kept)"
    )
    rows = await driver.fetch(keep_statement(record_type, facts), mark, external_ids, instance_id)
    return mark, [dict(r) for r in rows]


def keep_statement(record_type: str, facts: Sequence[str] = ()) -> str:
    """`keep_versions`' copy ($1 the mark, $2 the ids, $3 the instance): each id looked up by
    the records' unique key. As a plain join, a records table that has grown since its last
    `ANALYZE` (or never had one: autovacuum off) was planned as a hash of the whole table,
    1.9 s for 8,000 ids among 2 million rows against 17 ms by the key."""
    returning = f" RETURNING {', '.join(facts)}" if facts else ""
    lookup = stored_by_key(record_type, ids="$2::text[]", instance="$3", alias="r")
    return f"INSERT INTO {kept_table(record_type)} SELECT $1, r.* {lookup}{returning}"


def stored_by_key(record_type: str, *, ids: str, instance: str, alias: str) -> str:
    """A FROM clause of the stored versions of the ids in array `ids` (SQL text) for instance
    `instance`, as `alias`: one look-up by the records' unique key per id, whatever the
    statistics (`OFFSET 0` keeps the lateral subquery from being planned as a join)."""
    records = STORES[record_type].model.__table__.name
    return (
        f"FROM unnest({ids}) AS i(external_id) CROSS JOIN LATERAL ("
        f"SELECT * FROM {records} AS r WHERE r.instance_id = {instance}"
        f" AND r.external_id = i.external_id OFFSET 0) AS {alias}"
    )


# ---------------------------------------------------------------- SQL text


def _sql(expression: Any) -> str:
    """An SQLAlchemy expression as PostgreSQL text, its constants inlined."""
    return str(
        expression.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )


AT = literal_column("CAST(:now AS timestamptz)")
"""The moment judged at, inside formula expressions (bound once for the statement)."""


def _tally(tally: Tally, side: Any) -> str:
    value = _sql(tally.value(side)) if tally.value is not None else "1"
    if tally.where is None:
        return f"CAST({value} AS float8)"
    return f"CAST(CASE WHEN {_sql(tally.where(side, AT))} THEN {value} ELSE 0 END AS float8)"


def _where(condition: Any, side: Any) -> str:
    return _sql(condition(side, AT)) if condition is not None else "true"


TICK = " - interval '1 microsecond'"


def _local_day(expression: str, tz: ZoneInfo) -> str:
    """The local date of a moment in `tz`: by a fixed offset when the zone kept one for years
    around now (Asia/Ho_Chi_Minh since 1975; as `delta._local_dates`), which spares a time zone
    rule look-up per row; otherwise by the zone's rules."""
    now = datetime.now(UTC)
    offsets = {tz.utcoffset(now + timedelta(days=n)) for n in range(-800, 801, 15)}
    if len(offsets) == 1:
        (offset,) = offsets
        if offset is not None:
            minutes = int(offset.total_seconds() // 60)
            return f"CAST(timezone(interval '{minutes} minutes', {expression}) AS date)"
    return f"CAST(timezone('{tz.key}', {expression}) AS date)"


def _value(kpi: str, numerator: str, denominator: str) -> str:
    """A cell's displayed value, as `delta.value_sql` (what the stored `value` column holds)."""
    percent = [k.id for k in CATALOG if k.value_kind is ValueKind.PERCENT]
    mean = [k.id for k in CATALOG if k.value_kind is ValueKind.MEAN]
    divisor = f"nullif({denominator}, 0.0)"

    def rounded(value: str) -> str:
        return f"CAST(round(CAST({value} AS numeric), 4) AS float8)"

    return (
        f"CASE WHEN {kpi} IN ({_quoted(percent)})"
        f" THEN {rounded(f'100.0 * {numerator} / {divisor}')}"
        f" WHEN {kpi} IN ({_quoted(mean)}) THEN {rounded(f'{numerator} / {divisor}')}"
        f" ELSE {numerator} END"
    )


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names) or "NULL"


# ---------------------------------------------------------------- the statement


class Shared:
    """Expressions computed once per record version (in a subquery) and referenced by alias
    in each KPI's row: the same condition serves several KPIs and several of their values."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}

    def __call__(self, expression: str) -> str:
        alias = self.aliases.get(expression)
        if alias is None:
            alias = self.aliases[expression] = f"e{len(self.aliases)}"
        return f"v.{alias}"

    def columns(self) -> str:
        return ",\n        ".join(f"{e} AS {a}" for e, a in self.aliases.items())


def _in_period_row(
    kpi: KpiDefinition, side: Any, in_communes: str, shared: Shared, *, old: bool
) -> list[str]:
    formula = kpi.formula
    assert isinstance(formula, InPeriod)
    time = getattr(side, formula.time_column)
    counted = shared(
        f"coalesce({in_communes} AND {_sql(time)} IS NOT NULL"
        f" AND {_where(formula.where, side)}, false)"
    )

    def when(value: str, cast_to: str) -> str:
        return f"CAST(CASE WHEN {counted} THEN {value} END AS {cast_to})"

    numerator = shared(f"coalesce({_tally(formula.numerator, side)}, 0)")
    if formula.denominator is not None:
        denominator = when(shared(f"coalesce({_tally(formula.denominator, side)}, 0)"), "float8")
    else:
        denominator = "CAST(NULL AS float8)"
    row = [
        when(shared(_sql(side.unit_code)), "text"),
        when(shared(_sql(time)), "date"),
        when(numerator, "float8"),
        denominator,
    ]
    if old:
        drift = "false"
        if formula.drifts_at is not None:
            moment = _sql(getattr(side, formula.drifts_at))
            drifted = shared(
                f"coalesce({moment} >= CAST(:since AS timestamptz)"
                f" AND {moment} <= CAST(:now AS timestamptz), false)"
            )
            drift = f"({counted} AND {drifted})"
        row.append(drift)
    return row


def _stock_row(
    kpi: KpiDefinition, side: Any, in_communes: str, shared: Shared, tz: ZoneInfo
) -> list[str]:
    """(unit, counts now, first day, last day) of one version; all NULL if it never counts."""
    formula = kpi.formula
    assert isinstance(formula, OpenAt)
    now = "CAST(:now AS timestamptz)"
    opened = _sql(getattr(side, formula.opened))
    strict = [opened]
    if formula.after is not None:
        strict.append(_sql(getattr(side, formula.after)))
    needed = [f"{m} IS NOT NULL" for m in strict]
    start = end = None
    if formula.window is not None:
        start, end = (_sql(getattr(side, n)) for n in formula.window)
        needed += [f"{start} IS NOT NULL", f"{end} IS NOT NULL"]
    closed = _sql(getattr(side, formula.closed)) if formula.closed else None
    valid = shared(
        f"coalesce({in_communes} AND {' AND '.join(needed)}"
        f" AND {_where(formula.where, side)}, false)"
    )
    counts_now = [f"{m} < {now}" for m in strict]
    if closed is not None:
        counts_now.append(f"({closed} IS NULL OR {closed} > {now})")
    if start is not None:
        counts_now.append(f"({start} <= {now} AND {now} <= {end})")
    firsts = [shared(_local_day(m, tz)) for m in strict] + ["CAST(:first_day AS date)"]
    if start is not None:
        firsts.append(shared(_local_day(start + TICK, tz)))
    lasts = ["CAST(:yesterday AS date)"]
    if closed is not None:
        lasts.append(f"{shared(_local_day(closed + TICK, tz))} - 1")
    if end is not None:
        lasts.append(f"{shared(_local_day(end, tz))} - 1")

    def when(value: str, cast_to: str) -> str:
        return f"CAST(CASE WHEN {valid} THEN {value} END AS {cast_to})"

    return [
        when(shared(_sql(side.unit_code)), "text"),
        when(shared(f"CASE WHEN {' AND '.join(counts_now)} THEN 1 ELSE 0 END"), "int"),
        when(f"greatest({', '.join(firsts)})", "date"),
        when(f"least({', '.join(lasts)})", "date"),
    ]


def _values(rows: list[tuple[str, list[str]]]) -> str:
    return ",\n      ".join(f"('{kpi}', {', '.join(cells)})" for kpi, cells in rows)


def _composites(record_type: str, additive: set[str]) -> list[KpiDefinition]:
    """Composite KPIs of `record_type` all of whose components move by differences here."""
    return [
        k
        for k in CATALOG
        if isinstance(k.formula, Composite)
        and k.record_type == record_type
        and set(k.formula.components) <= additive
    ]


def _composite_ctes(kpi: KpiDefinition, index: int) -> tuple[list[str], str]:
    """CTEs recombining `kpi` for the cells whose components were upserted; returns them and
    the name of the one returning the changed composite cells."""
    formula = kpi.formula
    assert isinstance(formula, Composite)
    components = list(formula.components)
    names = _quoted(components)
    suffix = f"_{index}"
    rate_of = {name: f"r{i}" for i, name in enumerate(components)}
    rates = ",\n      ".join(
        f"max(CASE WHEN kpi = '{name}' AND denominator <> 0 THEN"
        f" {python_round('CAST(100.0 AS float8) * numerator / denominator', 4)} END)"
        f" AS {rate_of[name]}"
        for name in components
    )
    key = "unit_code, period_kind, period_start"
    same_key = (
        "s.unit_code = t.unit_code AND s.period_kind = t.period_kind"
        " AND s.period_start = t.period_start"
    )
    ctes = [
        f"""targets{suffix} AS (
    SELECT DISTINCT {key} FROM upserted WHERE kpi IN ({names})
)""",
        f"""parts{suffix} AS (
    SELECT kpi, {key}, numerator, denominator FROM upserted WHERE kpi IN ({names})
    UNION ALL
    SELECT s.kpi, s.unit_code, s.period_kind, s.period_start, s.numerator, s.denominator
    FROM targets{suffix} AS t
    CROSS JOIN unnest(ARRAY[{names}]) AS c(kpi)
    CROSS JOIN LATERAL (
        SELECT * FROM kpi_values AS s WHERE s.kpi = c.kpi AND {same_key}
        OFFSET 0  -- a look-up by the key per target and component, never a scan
    ) AS s
    WHERE NOT EXISTS (
        SELECT 1 FROM upserted AS u WHERE u.kpi = s.kpi AND u.unit_code = s.unit_code
        AND u.period_kind = s.period_kind AND u.period_start = s.period_start)
)""",
        f"""rates{suffix} AS (
    SELECT {key},
      {rates}
    FROM parts{suffix} GROUP BY {key}
)""",
        f"""scored{suffix} AS MATERIALIZED (
    SELECT r.unit_code, r.period_kind, r.period_start, {service_index.score_sql(rate_of)} AS score
    FROM rates{suffix} AS r
)""",
        f"""scores{suffix} AS (
    SELECT r.unit_code, r.period_kind, r.period_start,
      coalesce(r.score, 0.0) AS points,
      s.numerator AS stored, s.denominator AS stored_denominator, s.kpi AS found
    FROM scored{suffix} AS r
    LEFT JOIN kpi_values AS s ON s.kpi = '{kpi.id}' AND s.unit_code = r.unit_code
      AND s.period_kind = r.period_kind AND s.period_start = r.period_start
)""",
        f"""composite{suffix} AS (
    INSERT INTO kpi_values AS v (kpi, unit_code, period_kind, period_start, numerator,
        denominator, value, computed_at)
    SELECT '{kpi.id}', unit_code, period_kind, period_start, points, NULL, points,
        CAST(:now AS timestamptz)
    FROM scores{suffix}
    WHERE (found IS NULL AND points <> 0)
       OR (found IS NOT NULL AND (stored IS DISTINCT FROM points OR stored_denominator IS NOT NULL))
    ON CONFLICT (kpi, unit_code, period_kind, period_start) DO UPDATE SET
        numerator = excluded.numerator, denominator = NULL, value = excluded.value,
        computed_at = excluded.computed_at
    RETURNING v.kpi, v.unit_code, v.period_kind, v.period_start, v.numerator, v.denominator
)""",
    ]
    return ctes, f"composite{suffix}"


def statement(record_type: str, tz: ZoneInfo) -> str:
    """The one statement applying a batch's differences for `record_type` (see the module)."""
    model = STORES[record_type].model
    records = model.__table__
    kpis = [
        k
        for k in CATALOG
        if k.record_type == record_type and isinstance(k.formula, InPeriod | OpenAt)
    ]
    new = records.alias("n")
    copied = (column(c.name, c.type) for c in records.columns)
    old = table(kept_table(record_type), *copied).alias("o")
    in_new, in_old = (
        f"coalesce({a}.parent_code = :province AND {a}.level = '{COMMUNE_LEVEL}', false)"
        for a in ("cn", "co")
    )
    in_period = [k for k in kpis if isinstance(k.formula, InPeriod)]
    stocks = [k for k in kpis if isinstance(k.formula, OpenAt)]
    shared = Shared()
    sides = {
        k.id: (
            _in_period_row(k, old.c, in_old, shared, old=True),
            _in_period_row(k, new.c, in_new, shared, old=False),
        )
        for k in in_period
    }
    stock_rows = [
        (k.id, _stock_row(k, old.c, in_old, shared, tz) + _stock_row(k, new.c, in_new, shared, tz))
        for k in stocks
    ]

    def changed(kpi: str) -> str:
        (o_unit, o_day, o_n, o_d, _), (n_unit, n_day, n_n, n_d) = sides[kpi]
        before, after = f"{o_unit}, {o_day}, {o_n}, {o_d}", f"{n_unit}, {n_day}, {n_n}, {n_d}"
        return f"(({before}) IS DISTINCT FROM ({after}))"

    groups: dict[str, list[KpiDefinition]] = {}
    for k in in_period:
        groups.setdefault(k.formula.time_column, []).append(k)  # type: ignore[union-attr]
    group_ctes, unpivots = [], []
    for index, (time_column, members) in enumerate(groups.items()):
        old_side, new_side = [], []
        for j, k in enumerate(members):
            (_, _, o_n, o_d, o_drift), (_, _, n_n, n_d) = sides[k.id]
            kept = f"{changed(k.id)} AND NOT {o_drift}"
            old_side += [
                f"-(CASE WHEN {kept} THEN {o_n} END) AS n{j}",
                f"-(CASE WHEN {kept} THEN {o_d} END) AS d{j}",
            ]
            new_side += [
                f"CASE WHEN {changed(k.id)} THEN {n_n} END",
                f"CASE WHEN {changed(k.id)} THEN {n_d} END",
            ]
        sums = ", ".join(f"sum(n{j}) AS n{j}, sum(d{j}) AS d{j}" for j in range(len(members)))
        keys = {
            name: (shared(_sql(side.unit_code)), shared(_sql(getattr(side, time_column))))
            for name, side in (("old", old.c), ("new", new.c))
        }
        group_ctes.append(
            f"""in_{index} AS (
    SELECT unit, day, {sums} FROM (
        SELECT {keys["old"][0]} AS unit, {keys["old"][1]} AS day,
            {", ".join(old_side)}
        FROM versions AS v
        UNION ALL
        SELECT {keys["new"][0]}, {keys["new"][1]},
            {", ".join(new_side)}
        FROM versions AS v
    ) AS s
    WHERE unit IS NOT NULL AND day IS NOT NULL
    GROUP BY unit, day
)"""
        )
        values = ", ".join(f"('{k.id}', g.n{j}, g.d{j})" for j, k in enumerate(members))
        unpivots.append(
            f"""SELECT k.kpi, g.unit, g.day, k.n, k.d FROM in_{index} AS g
    CROSS JOIN LATERAL (VALUES {values}) AS k(kpi, n, d)
    WHERE k.n IS NOT NULL OR k.d IS NOT NULL"""
        )
    stock_sides = ("unit", "now", "first", "last")
    distinct = (
        f"({', '.join(f'k.o_{c}' for c in stock_sides)})"
        f" IS DISTINCT FROM ({', '.join(f'k.n_{c}' for c in stock_sides)})"
    )
    ctes = [
        f"""versions AS MATERIALIZED (
    SELECT {shared.columns()}
    {stored_by_key(record_type, ids="CAST(:ids AS text[])", instance=":instance", alias="n")}
    LEFT JOIN LATERAL (
        SELECT * FROM {kept_table(record_type)} AS k
        WHERE k.external_id = n.external_id AND k.kept = :kept
        OFFSET 0  -- by its index too: the temporary table has no statistics
    ) AS o ON true
    LEFT JOIN admin_units AS cn ON cn.code = n.unit_code
    LEFT JOIN admin_units AS co ON co.code = o.unit_code
)"""
    ]
    day_parts = []
    if in_period:
        recount_kpis = [k for k in in_period if k.formula.drifts_at is not None]  # type: ignore[union-attr]
        drifted = [
            f"SELECT '{k.id}', {sides[k.id][0][0]}, {sides[k.id][0][1]} FROM versions AS v"
            f" WHERE {changed(k.id)} AND {sides[k.id][0][4]}"
            for k in recount_kpis
        ]
        ctes += group_ctes
        ctes += [
            f"""in_rows AS (
    {chr(10).join([unpivots[0], *(f"    UNION ALL{chr(10)}    {u}" for u in unpivots[1:])])}
)""",
            f"""recount AS (
    SELECT DISTINCT kpi, unit, day FROM (
        {" UNION ALL ".join(drifted) or "SELECT NULL, NULL, CAST(NULL AS date) WHERE false"}
    ) AS r(kpi, unit, day)
)""",
        ]
        fresh = []
        for k in recount_kpis:
            formula = k.formula
            assert isinstance(formula, InPeriod)
            t = records.alias("t")
            denominator = (
                f"coalesce(sum({_tally(formula.denominator, t.c)}), 0)"
                if formula.denominator is not None
                else "CAST(NULL AS float8)"
            )
            fresh.append(
                f"""SELECT r.kpi, r.unit, r.day,
        f.n - coalesce(s.numerator, 0) AS n, f.d - coalesce(s.denominator, 0) AS d
    FROM recount AS r
    CROSS JOIN LATERAL (
        SELECT coalesce(sum({_tally(formula.numerator, t.c)}), 0) AS n, {denominator} AS d
        FROM {records.name} AS t
        WHERE t.unit_code = r.unit AND t.{formula.time_column} = r.day
          AND {_where(formula.where, t.c)}
    ) AS f
    LEFT JOIN kpi_values AS s ON s.kpi = r.kpi AND s.unit_code = r.unit
      AND s.period_kind = 'day' AND s.period_start = r.day
    WHERE r.kpi = '{k.id}'"""
            )
        recounted = "".join(f"\n    UNION ALL\n    {f}" for f in fresh)
        ctes.append(
            f"""in_days AS (
    SELECT c.kpi, c.unit, c.day, c.n, c.d
    FROM in_rows AS c
    WHERE NOT EXISTS (
        SELECT 1 FROM recount AS r
        WHERE r.kpi = c.kpi AND r.unit = c.unit AND r.day = c.day){recounted}
)"""
        )
        day_parts.append("SELECT kpi, unit, day, n, d, false AS stock FROM in_days")
    if stocks:
        ctes += [
            f"""stock_pairs AS (
    SELECT k.* FROM versions AS v
    CROSS JOIN LATERAL (VALUES
      {_values(stock_rows)}
    ) AS k(kpi, o_unit, o_now, o_first, o_last, n_unit, n_now, n_first, n_last)
    WHERE {distinct}
)""",
            """stock_events AS (
    SELECT kpi, unit, day, sum(delta) AS delta FROM (
        SELECT kpi, o_unit AS unit, o_first AS day, -1 AS delta
        FROM stock_pairs WHERE o_unit IS NOT NULL AND o_first <= o_last
        UNION ALL
        SELECT kpi, o_unit, o_last + 1, 1
        FROM stock_pairs WHERE o_unit IS NOT NULL AND o_first <= o_last
        UNION ALL
        SELECT kpi, n_unit, n_first, 1
        FROM stock_pairs WHERE n_unit IS NOT NULL AND n_first <= n_last
        UNION ALL
        SELECT kpi, n_unit, n_last + 1, -1
        FROM stock_pairs WHERE n_unit IS NOT NULL AND n_first <= n_last
    ) AS e
    GROUP BY kpi, unit, day HAVING sum(delta) <> 0
)""",
            """stock_runs AS (
    SELECT kpi, unit, day, sum(delta) OVER w AS running, lead(day) OVER w AS following
    FROM stock_events WINDOW w AS (PARTITION BY kpi, unit ORDER BY day)
)""",
            """stock_now AS (
    SELECT kpi, unit, sum(delta) AS delta FROM (
        SELECT kpi, o_unit AS unit, -o_now AS delta FROM stock_pairs WHERE o_unit IS NOT NULL
        UNION ALL
        SELECT kpi, n_unit, n_now FROM stock_pairs WHERE n_unit IS NOT NULL
    ) AS e
    GROUP BY kpi, unit HAVING sum(delta) <> 0
)""",
        ]
        day_parts += [
            """SELECT r.kpi, r.unit, CAST(d AS date), CAST(r.running AS float8),
        CAST(NULL AS float8), true
    FROM stock_runs AS r
    CROSS JOIN LATERAL generate_series(
        CAST(r.day AS timestamp), CAST(r.following - 1 AS timestamp), interval '1 day') AS d
    WHERE r.running <> 0 AND r.following IS NOT NULL""",
            """SELECT kpi, unit, CAST(:today AS date), CAST(delta AS float8),
        CAST(NULL AS float8), true
    FROM stock_now""",
        ]
    if not day_parts:
        raise ValueError(f"no KPI over {record_type} moves by differences")
    periods = ",\n      ".join(
        f"('{kind}', CAST(date_trunc('{kind}', CAST(x.day AS timestamp)) AS date),"
        f" CAST(date_trunc('{kind}', CAST(x.day AS timestamp)) + interval '{length}' AS date))"
        for kind, length in (
            ("month", "1 month - 1 day"),
            ("quarter", "3 months - 1 day"),
            ("year", "1 year - 1 day"),
        )
    )
    days = "\n    UNION ALL\n    ".join(day_parts)
    ctes += [
        f"""day_differences AS (
    {days}
)""",
        f"""commune_cells AS (
    SELECT x.kpi, x.unit, p.kind, p.start, sum(x.n) AS n, sum(x.d) AS d
    FROM day_differences AS x(kpi, unit, day, n, d, stock)
    CROSS JOIN LATERAL (VALUES
      ('day', x.day, x.day),
      {periods}
    ) AS p(kind, start, last_day)
    WHERE NOT x.stock OR p.kind = 'day' OR x.day = least(p.last_day, CAST(:today AS date))
    GROUP BY x.kpi, x.unit, p.kind, p.start
)""",
        """cells AS (
    SELECT kpi, unit, kind, start, n, d FROM commune_cells WHERE n <> 0 OR d <> 0
    UNION ALL
    SELECT kpi, CAST(:province AS text), kind, start, sum(n), sum(d) FROM commune_cells
    GROUP BY kpi, kind, start HAVING sum(n) <> 0 OR sum(d) <> 0
)""",
        f"""upserted AS (
    INSERT INTO kpi_values AS v (kpi, unit_code, period_kind, period_start, numerator,
        denominator, value, computed_at)
    SELECT kpi, unit, kind, start, n, d, {_value("kpi", "n", "d")}, CAST(:now AS timestamptz)
    FROM cells
    ON CONFLICT (kpi, unit_code, period_kind, period_start) DO UPDATE SET
        numerator = v.numerator + excluded.numerator,
        denominator = CASE WHEN excluded.denominator IS NULL THEN v.denominator
            ELSE coalesce(v.denominator, 0) + excluded.denominator END,
        value = {
            _value(
                "v.kpi",
                "(v.numerator + excluded.numerator)",
                "(CASE WHEN excluded.denominator IS NULL THEN v.denominator"
                " ELSE coalesce(v.denominator, 0) + excluded.denominator END)",
            )
        },
        computed_at = excluded.computed_at
    RETURNING v.kpi, v.unit_code, v.period_kind, v.period_start, v.numerator, v.denominator
)""",
    ]
    results = ["SELECT * FROM upserted"]
    for index, composite in enumerate(_composites(record_type, {k.id for k in kpis})):
        more, name = _composite_ctes(composite, index)
        ctes += more
        results.append(f"SELECT * FROM {name}")
    return "WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(results)


SETTINGS = (
    "SET LOCAL jit = off; SET LOCAL plan_cache_mode = force_custom_plan;"
    " SET LOCAL work_mem = '64MB'"
)
"""For the rest of the transaction, before the statement: JIT would compile its large
expressions at every run (seconds, from cost estimates inflated by `generate_series`); a plan
made for the batch's own ids (a generic one guesses 100 ids and was measured slower); sorts and
hashes of a batch in memory."""
"""For this transaction: how the statement is planned."""

_statements: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
"""Statements by (record type, time zone, weights): built once."""


def composites_done(record_type: str) -> set[str]:
    """The composite KPIs `apply` recombines for `record_type`."""
    additive = {
        k.id
        for k in CATALOG
        if k.record_type == record_type and isinstance(k.formula, InPeriod | OpenAt)
    }
    return {k.id for k in _composites(record_type, additive)}


async def apply(
    session: AsyncSession,
    record_type: str,
    *,
    kept: int,
    instance_id: int,
    external_ids: list[str],
    province_code: str,
    now: datetime,
    tz: ZoneInfo,
) -> list[Row]:
    """Add the differences between the kept old versions and the stored new ones to the
    cells, recombine the composites they move; returns every changed cell."""
    weights = repr(list(service_index.current_weights().items()))
    key = (record_type, tz.key, weights)
    prepared = _statements.get(key)
    if prepared is None:
        prepared = _statements[key] = _numbered(statement(record_type, tz))
    sql, names = prepared
    today = local_date(now, tz)
    parameters = {
        "now": UTCDateTime().process_bind_param(now, postgresql.dialect()),
        "since": local_midnight(today - timedelta(days=1), tz),
        "today": today,
        "yesterday": today - timedelta(days=1),
        "first_day": today - timedelta(days=STOCK_HORIZON_DAYS),
        "province": province_code,
        "instance": instance_id,
        "ids": external_ids,
        "kept": kept,
    }
    driver = await driver_connection(session)
    await driver.execute(SETTINGS)
    rows = await driver.fetch(sql, *(parameters[n] for n in names))
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _numbered(sql: str) -> tuple[str, list[str]]:
    """`:name` parameters as asyncpg's `$n`; returns the text and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"(?<![:\w]):([a-z_]+)\b", number, sql), names
