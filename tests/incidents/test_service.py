"""The incident lifecycle as the rules drive it: pending breaches, hysteresis, escalation, quiet
auto-resolve, relapse re-open, and record rules whose evidence is exactly the records behind."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from ioc.context import AppContext
from ioc.incidents import common, lifecycle, queries, ruleset
from ioc.incidents.models import Incident, IncidentEvent, IncidentRecord
from ioc.incidents.schemas import RuleCreate
from ioc.kit.upsert import upsert
from ioc.kpi.models import KpiValue
from ioc.scheduler.runner import store_batch, write_transaction
from ioc.sdk import Batch, DossierStatus
from tests.support.factories import BIEN_HOA, TRAN_BIEN, make_dossier, make_instance

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 local on 20 November
NOVEMBER = date(2026, 11, 1)


def env(ctx: AppContext, now: datetime) -> lifecycle.Evaluation:
    return lifecycle.Evaluation(
        now=now, real_now=now, tz=ctx.settings.tz, calendar=ctx.settings.calendar, province="75"
    )


async def on_time_rule(ctx: AppContext, **fields: Any) -> int:
    """A province rule on the on-time rate: warn below 95 (the catalogue), critical below 90."""
    spec = {"name": "on-time", "kind": "kpi_threshold", "kpi": "onestop.on_time_rate"} | fields
    async with ctx.sessionmaker() as session, session.begin():
        return (await ruleset.create_rule(session, RuleCreate(**spec), now=T0)).id


async def judge_rate(ctx: AppContext, value: float, at: datetime) -> None:
    """The province's on-time rate this month becomes `value`, then every rule is judged."""
    async with write_transaction(ctx) as session:
        row = {
            "kpi": "onestop.on_time_rate",
            "unit_code": "75",
            "period_kind": "month",
            "period_start": NOVEMBER,
            "numerator": value,
            "denominator": 100.0,
            "value": value,
            "computed_at": at,
        }
        await upsert(
            session, KpiValue, [row], keys=("kpi", "unit_code", "period_kind", "period_start")
        )
        await lifecycle.evaluate_all(session, env=env(ctx, at))


async def incidents(ctx: AppContext) -> list[Incident]:
    async with ctx.sessionmaker() as session:
        return list((await session.scalars(select(Incident).order_by(Incident.id))).all())


async def timeline(ctx: AppContext, incident_id: int) -> list[str]:
    async with ctx.sessionmaker() as session:
        events = await session.scalars(
            select(IncidentEvent.kind)
            .where(IncidentEvent.incident_id == incident_id)
            .order_by(IncidentEvent.id)
        )
        return list(events.all())


async def test_a_flapping_kpi_opens_at_most_one_incident(ctx: AppContext) -> None:
    await on_time_rule(ctx, recovery=97, pending_evaluations=2)
    values = [94, 96, 94, 94, 96, 94, 96, 93, 96, 94]  # never two clear readings in a row
    for minute, value in enumerate(values):
        await judge_rate(ctx, value, T0 + timedelta(minutes=minute))
    (incident,) = await incidents(ctx)
    assert incident.status == "open"
    assert incident.opened_at == T0 + timedelta(minutes=3)  # the second breach in a row
    assert incident.breach_count == 4  # the opening 94, then 94, 93, 94
    assert incident.peak_value == 93
    # 96 is above the threshold but below the recovery level: never counted as cleared
    assert await timeline(ctx, incident.id) == ["opened"]


async def test_breaches_that_are_not_consecutive_open_nothing(ctx: AppContext) -> None:
    await on_time_rule(ctx, pending_evaluations=2)
    for minute, value in enumerate([94, 96, 94, 96, 94]):
        await judge_rate(ctx, value, T0 + timedelta(minutes=minute))
    assert await incidents(ctx) == []


async def test_a_worse_value_escalates_the_same_incident_to_critical(ctx: AppContext) -> None:
    await on_time_rule(ctx)
    await judge_rate(ctx, 94, T0)
    await judge_rate(ctx, 85, T0 + timedelta(minutes=1))
    await judge_rate(ctx, 92, T0 + timedelta(minutes=2))
    (incident,) = await incidents(ctx)
    assert (incident.severity, incident.threshold, incident.peak_value) == ("critical", 90, 85)
    assert incident.value == 92 and incident.breach_count == 3
    assert await timeline(ctx, incident.id) == ["opened", "escalated"]


async def test_a_cleared_condition_resolves_after_the_quiet_period_only(ctx: AppContext) -> None:
    await on_time_rule(ctx, quiet_minutes=30)
    await judge_rate(ctx, 94, T0)
    await judge_rate(ctx, 99, T0 + timedelta(minutes=1))
    await judge_rate(ctx, 99, T0 + timedelta(minutes=30))
    assert [i.status for i in await incidents(ctx)] == ["open"]
    await judge_rate(ctx, 99, T0 + timedelta(minutes=31))
    (incident,) = await incidents(ctx)
    assert (incident.status, incident.resolved_by) == ("resolved", "system")
    assert incident.resolved_at == T0 + timedelta(minutes=31)
    assert await timeline(ctx, incident.id) == ["opened", "cleared", "resolved"]


async def test_a_breach_during_the_quiet_period_keeps_the_incident_open(ctx: AppContext) -> None:
    await on_time_rule(ctx, quiet_minutes=30)
    await judge_rate(ctx, 94, T0)
    await judge_rate(ctx, 99, T0 + timedelta(minutes=1))
    await judge_rate(ctx, 94, T0 + timedelta(minutes=20))
    await judge_rate(ctx, 99, T0 + timedelta(minutes=40))
    (incident,) = await incidents(ctx)
    assert incident.status == "open"  # the quiet period restarted at minute 40
    assert await timeline(ctx, incident.id) == [
        "opened",
        "cleared",
        "condition_returned",
        "cleared",
    ]


async def test_a_relapse_within_the_window_reopens_the_same_incident(ctx: AppContext) -> None:
    await on_time_rule(ctx, quiet_minutes=0, relapse_minutes=60)
    await judge_rate(ctx, 94, T0)
    await judge_rate(ctx, 99, T0 + timedelta(minutes=1))
    await judge_rate(ctx, 93, T0 + timedelta(minutes=30))
    (incident,) = await incidents(ctx)
    assert (incident.status, incident.reopen_count, incident.value) == ("open", 1, 93)
    assert await timeline(ctx, incident.id) == ["opened", "cleared", "resolved", "reopened"]
    await judge_rate(ctx, 99, T0 + timedelta(minutes=31))
    await judge_rate(ctx, 94, T0 + timedelta(minutes=200))  # long after: a new incident
    assert [(i.status, i.reopen_count) for i in await incidents(ctx)] == [
        ("resolved", 1),
        ("open", 0),
    ]


async def test_overdue_dossiers_open_one_incident_per_commune_and_field_with_their_records(
    ctx: AppContext,
) -> None:
    async with ctx.sessionmaker() as session, session.begin():
        await ruleset.create_rule(
            session, RuleCreate(name="overdue", kind="dossier_overdue", warn=1), now=T0
        )
    due = T0 - timedelta(days=2)
    late = [
        make_dossier(external_id=f"late-{n}", due_at=due, received_at=due - timedelta(days=5))
        for n in range(3)
    ]
    others = [
        make_dossier(
            external_id="late-other-field",
            due_at=due,
            field_code="TP",
            received_at=due - timedelta(days=5),
        ),
        make_dossier(
            external_id="late-other-commune",
            unit_code=TRAN_BIEN,
            due_at=due,
            received_at=due - timedelta(days=5),
        ),
        make_dossier(external_id="not-yet-due", due_at=T0 + timedelta(days=1)),
        make_dossier(
            external_id="withdrawn",
            due_at=due,
            received_at=due - timedelta(days=5),
            status=DossierStatus.WITHDRAWN,
        ),
    ]
    instance_id = await make_instance(ctx)
    ctx.clock = lambda: T0

    async def ingest(records: list[Any]) -> None:
        async with write_transaction(ctx) as session:
            await store_batch(
                ctx,
                session,
                instance_id=instance_id,
                batch=Batch(records=records),
                record_type="dossier",
            )

    await ingest(late + others)
    (incident,) = await incidents(ctx)  # TP has one overdue dossier (not above 1), Trấn Biên too
    assert incident.subject == {"unit_code": BIEN_HOA, "field_code": "DD"}
    assert incident.value == 3

    async def evidence() -> set[str]:
        async with ctx.sessionmaker() as session:
            page = await queries.incident_records(
                session,
                incident,
                now=T0,
                tz=ctx.settings.tz,
                filters={},
                q=None,
                sort=(),
                limit=50,
                offset=0,
            )
        return {r["external_id"] for r in page.items}

    assert await evidence() == {"late-0", "late-1", "late-2"}
    # One of them is dealt with: the evidence follows the next breach.
    done = late[0].model_copy(
        update={"resolved_at": T0, "status": DossierStatus.PROCESSED, "source_updated_at": T0}
    )
    await ingest([done])
    assert await evidence() == {"late-1", "late-2"}
    async with ctx.sessionmaker() as session:
        kept = (await session.scalars(select(IncidentRecord.record_id))).all()
    assert len(kept) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "kpi_threshold"}, "needs 'kpi'"),
        ({"kind": "kpi_threshold", "kpi": "no.such"}, "unknown KPI"),
        ({"kind": "kpi_threshold", "kpi": "onestop.backlog"}, "no default thresholds"),
        ({"kind": "kpi_threshold", "kpi": "onestop.on_time_rate", "recovery": 90}, "ordered"),
        ({"kind": "dossier_overdue", "params": {"days": 2}}, "params of dossier_overdue"),
        ({"kind": "dossier_overdue", "group_by": ["field_code"]}, "must list unit_code"),
        ({"kind": "er_wait", "group_by": ["unit_code", "field_code"]}, "group_by of er_wait"),
        ({"kind": "dossier_overdue", "unit_code": "99999"}, "unknown unit code"),
        ({"kind": "connector_health", "warn": 5, "critical": 1}, "critical ≥ warn"),
    ],
    ids=[
        "kpi-missing",
        "kpi-unknown",
        "kpi-without-thresholds",
        "hysteresis-on-the-wrong-side",
        "unknown-param",
        "group-without-unit",
        "axis-of-another-kind",
        "unknown-unit",
        "thresholds-out-of-order",
    ],
)
async def test_a_rule_that_cannot_be_evaluated_is_refused_with_the_reason(
    ctx: AppContext, fields: dict[str, Any], message: str
) -> None:
    async with ctx.sessionmaker() as session:
        with pytest.raises(common.InvalidRule, match=message):
            await ruleset.create_rule(session, RuleCreate(name="bad", **fields), now=T0)
