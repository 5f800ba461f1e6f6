"""Routes for incidents and their rules: list, detail, records, actions, counts, response times.

Reads need `read` (set where the routers are included), the records behind an incident
`records`; acknowledging and notes need `acknowledge`, assigning, resolving and judging now
`resolve`, editing rules `admin`. The timeline names the caller (a body's `actor` counts only in
open mode), and every mutation is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.auth.deps import AuditDep, require
from ioc.auth.permissions import OPEN_PRINCIPAL, Permission, Principal
from ioc.context import AppContext
from ioc.deps import ContextDep, SessionDep
from ioc.incidents import actions, common, queries, response_times, ruleset
from ioc.incidents.models import Incident
from ioc.incidents.schemas import (
    AcknowledgeRequest,
    AssignRequest,
    CountsRead,
    EvaluationRead,
    IncidentDetail,
    IncidentPage,
    IncidentRecordsPage,
    NoteRequest,
    ResolveRequest,
    RuleCreate,
    RuleRead,
    RuleUpdate,
    StatsRead,
)
from ioc.incidents.tasks import evaluate_now
from ioc.kit.params import MAX_ROW_ID, IncidentIdPath, Offset, RuleIdPath
from ioc.kpi.reads import InvalidKpiRead
from ioc.records.api import QUERY_PARAMETERS, masked_page
from ioc.records.service import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InvalidRecordQuery,
    UnknownRecordType,
    UnknownUnit,
)
from ioc.units.service import province_code_str

router = APIRouter(prefix="/api/v1/incidents", tags=["incidents"])
rules_router = APIRouter(prefix="/api/v1/incident-rules", tags=["incidents"])

T = TypeVar("T")

Acknowledger = Annotated[Principal, require(Permission.ACKNOWLEDGE)]
Resolver = Annotated[Principal, require(Permission.RESOLVE)]
RecordReader = Annotated[Principal, require(Permission.RECORDS)]
RuleEditor = Annotated[Principal, require(Permission.ADMIN)]


def _actor(principal: Principal, given: str | None) -> str:
    """Who the timeline names: the caller's identity; in open mode, the name the body gives."""
    if principal == OPEN_PRINCIPAL:
        return given or principal.name
    return principal.name


ListParam = Annotated[list[str] | None, Query()]


@contextmanager
def _answering_errors() -> Iterator[None]:
    """Unknown things are 404, impossible actions 409, bad questions 422."""
    try:
        yield
    except (common.IncidentNotFound, UnknownRecordType) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except common.Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except (common.InvalidRule, InvalidRecordQuery, InvalidKpiRead, UnknownUnit) as exc:
        raise HTTPException(422, str(exc)) from None


# ---------------------------------------------------------------- incidents


@router.get("", response_model=IncidentPage)
async def get_incidents(
    session: SessionDep,
    incident_status: Annotated[
        list[str] | None,
        Query(alias="status", description="open, acknowledged, resolved or active (both first)"),
    ] = None,
    severity: Annotated[list[str] | None, Query(description="warn or critical")] = None,
    domain: Annotated[
        list[str] | None, Query(description="onestop, feedback, health, education, system")
    ] = None,
    unit: Annotated[str | None, Query(description="A unit code: it and every unit below")] = None,
    agency: Annotated[list[str] | None, Query(description="Responsible agency code")] = None,
    kpi: Annotated[list[str] | None, Query(description="KPI id")] = None,
    rule_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    date_from: Annotated[
        datetime | None, Query(alias="from", description="Active at or after this moment")
    ] = None,
    date_to: Annotated[
        datetime | None, Query(alias="to", description="Opened at or before this moment")
    ] = None,
    sort: Annotated[
        str, Query(description="opened_at, last_seen_at, resolved_at or id; - first to descend")
    ] = "-last_seen_at",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> IncidentPage:
    """Incidents matching every filter given, one page at a time, with the total."""
    with _answering_errors():
        return await queries.list_incidents(
            session,
            queries.IncidentFilter(
                status=incident_status or (),
                severity=severity or (),
                domain=domain or (),
                unit=unit,
                agency=agency or (),
                kpi=kpi or (),
                rule_id=rule_id,
                active_from=_aware(date_from),
                active_to=_aware(date_to),
            ),
            sort=sort,
            limit=limit,
            offset=offset,
        )


@router.get("/counts", response_model=CountsRead)
async def get_counts(
    session: SessionDep,
    incident_status: Annotated[
        list[str] | None, Query(alias="status", description="active by default")
    ] = None,
) -> CountsRead:
    """Incidents by unit and severity (the active ones by default)."""
    with _answering_errors():
        return await queries.counts(session, statuses=incident_status or ["active"])


@router.get("/stats", response_model=StatsRead)
async def get_stats(
    session: SessionDep,
    by: Annotated[str, Query(description="unit or agency")] = "unit",
    date_from: Annotated[datetime | None, Query(alias="from", description="Opened from")] = None,
    date_to: Annotated[datetime | None, Query(alias="to", description="Opened until")] = None,
) -> StatsRead:
    """Mean time to acknowledge (MTTA) and to resolve (MTTR) by unit or agency."""
    with _answering_errors():
        return await response_times.stats(
            session, by=by, date_from=_aware(date_from), date_to=_aware(date_to)
        )


@router.post("/evaluate", response_model=EvaluationRead)
async def evaluate(ctx: ContextDep, _: Resolver) -> EvaluationRead:
    """Judge every enabled rule now (what the periodic refresh does) and publish the changes."""
    changes = await evaluate_now(ctx)
    return EvaluationRead(changed=len(changes.incidents), open=len(changes.active))


@router.get("/{incident_id}", response_model=IncidentDetail)
async def get_incident(incident_id: IncidentIdPath, session: SessionDep) -> IncidentDetail:
    """An incident with its subject, evidence and timeline."""
    with _answering_errors():
        return await queries.detail(session, await queries.get_incident(session, incident_id))


@router.get(
    "/{incident_id}/records",
    response_model=IncidentRecordsPage,
    description=(
        "The records behind the incident, paged, sorted and filtered like "
        "`/api/v1/records/{record_type}` (any other query parameter filters a column): the "
        "records its last breach found, or for a KPI incident the records behind its cell."
    ),
)
async def get_incident_records(
    incident_id: IncidentIdPath,
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    principal: RecordReader,
    q: Annotated[str | None, Query(description="Text searched in the names, any case")] = None,
    sort: Annotated[str | None, Query(description="Columns separated by commas")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Offset = 0,
) -> IncidentRecordsPage:
    """One page of the records behind an incident, with the total."""
    params = request.query_params
    filters = {name: params.getlist(name) for name in params if name not in QUERY_PARAMETERS}
    with _answering_errors():
        incident = await queries.get_incident(session, incident_id)
        page = await queries.incident_records(
            session,
            incident,
            now=ctx.clock(),
            tz=ctx.settings.tz,
            filters=filters,
            q=q,
            sort=sort or (),
            limit=limit,
            offset=offset,
        )
    return masked_page(page, page.record_type, principal) if page.record_type else page


async def _act(
    ctx: AppContext,
    session: AsyncSession,
    audit: AuditDep,
    incident_id: IncidentIdPath,
    action: Callable[[datetime, str], Awaitable[Incident]],
    *,
    name: str,
    principal: Principal,
    given_actor: str | None,
) -> IncidentDetail:
    """Run an action as the caller, audit it (the incident's own fields before and after),
    commit, then publish the incident and the response times it moved."""
    now = ctx.clock()
    with _answering_errors():
        before = queries.item(await queries.get_incident(session, incident_id))
        before_state = before.model_dump(mode="json")  # dumped now: the action changes the row
        incident = await action(now, _actor(principal, given_actor))
        changes = await actions.action_changes(
            session,
            incident,
            province=province_code_str(ctx.settings.province),
            tz=ctx.settings.tz,
            now=now,
        )
        read = await queries.detail(session, incident)
    await audit(name, f"incident:{incident_id}", before=before_state, after=queries.item(incident))
    await session.commit()
    queries.publish(ctx.hub, changes)
    return read


@router.post("/{incident_id}/acknowledge", response_model=IncidentDetail)
async def acknowledge(
    incident_id: IncidentIdPath,
    body: AcknowledgeRequest,
    session: SessionDep,
    ctx: ContextDep,
    principal: Acknowledger,
    audit: AuditDep,
) -> IncidentDetail:
    """Acknowledge an open incident (someone is on it)."""
    return await _act(
        ctx,
        session,
        audit,
        incident_id,
        lambda now, actor: actions.acknowledge(
            session, incident_id, actor=actor, note=body.note, now=now
        ),
        name="incident.acknowledge",
        principal=principal,
        given_actor=body.actor,
    )


@router.post("/{incident_id}/assign", response_model=IncidentDetail)
async def assign(
    incident_id: IncidentIdPath,
    body: AssignRequest,
    session: SessionDep,
    ctx: ContextDep,
    principal: Resolver,
    audit: AuditDep,
) -> IncidentDetail:
    """Assign an active incident to a person or an agency."""
    return await _act(
        ctx,
        session,
        audit,
        incident_id,
        lambda now, actor: actions.assign(
            session,
            incident_id,
            actor=actor,
            assignee=body.assignee,
            agency_code=body.agency_code,
            now=now,
        ),
        name="incident.assign",
        principal=principal,
        given_actor=body.actor,
    )


@router.post("/{incident_id}/notes", response_model=IncidentDetail)
async def add_note(
    incident_id: IncidentIdPath,
    body: NoteRequest,
    session: SessionDep,
    ctx: ContextDep,
    principal: Acknowledger,
    audit: AuditDep,
) -> IncidentDetail:
    """Add a note to an incident's timeline."""
    return await _act(
        ctx,
        session,
        audit,
        incident_id,
        lambda now, actor: actions.add_note(
            session, incident_id, actor=actor, text=body.text, now=now
        ),
        name="incident.note",
        principal=principal,
        given_actor=body.actor,
    )


@router.post("/{incident_id}/resolve", response_model=IncidentDetail)
async def resolve(
    incident_id: IncidentIdPath,
    body: ResolveRequest,
    session: SessionDep,
    ctx: ContextDep,
    principal: Resolver,
    audit: AuditDep,
) -> IncidentDetail:
    """Resolve an incident by hand."""
    return await _act(
        ctx,
        session,
        audit,
        incident_id,
        lambda now, actor: actions.resolve(
            session, incident_id, actor=actor, note=body.note, now=now
        ),
        name="incident.resolve",
        principal=principal,
        given_actor=body.actor,
    )


# ---------------------------------------------------------------- rules


@rules_router.get("", response_model=list[RuleRead])
async def get_rules(session: SessionDep) -> list[RuleRead]:
    """Every rule with its effective thresholds."""
    return [ruleset.rule_read(r) for r in await ruleset.list_rules(session)]


@rules_router.post("", response_model=RuleRead, status_code=status.HTTP_201_CREATED)
async def create_rule(
    body: RuleCreate, session: SessionDep, ctx: ContextDep, _: RuleEditor, audit: AuditDep
) -> RuleRead:
    """Add a rule; it is judged from the next evaluation on."""
    with _answering_errors():
        read = ruleset.rule_read(await ruleset.create_rule(session, body, now=ctx.clock()))
    await audit("incident_rule.create", f"incident_rule:{read.id}", after=read)
    return read


@rules_router.get("/{rule_id}", response_model=RuleRead)
async def get_rule(rule_id: RuleIdPath, session: SessionDep) -> RuleRead:
    """One rule."""
    with _answering_errors():
        return ruleset.rule_read(await ruleset.get_rule(session, rule_id))


@rules_router.patch("/{rule_id}", response_model=RuleRead)
async def update_rule(
    rule_id: RuleIdPath,
    body: RuleUpdate,
    session: SessionDep,
    ctx: ContextDep,
    _: RuleEditor,
    audit: AuditDep,
) -> RuleRead:
    """Change a rule (fields left out keep their value); disabling it resolves its incidents."""
    now = ctx.clock()
    with _answering_errors():
        before = ruleset.rule_read(await ruleset.get_rule(session, rule_id)).model_dump(
            mode="json"
        )  # dumped now: the update changes the same object
        rule, closed = await ruleset.update_rule(session, rule_id, body, now=now)
        read = ruleset.rule_read(rule)
        changes = await _closed(ctx, session, closed, now)
    await audit("incident_rule.update", f"incident_rule:{rule_id}", before=before, after=read)
    await session.commit()
    queries.publish(ctx.hub, changes)
    return read


@rules_router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(
    rule_id: RuleIdPath, session: SessionDep, ctx: ContextDep, _: RuleEditor, audit: AuditDep
) -> Response:
    """Delete a rule (its incidents stay, resolved); default rules can only be disabled."""
    now = ctx.clock()
    with _answering_errors():
        before = ruleset.rule_read(await ruleset.get_rule(session, rule_id))
        closed = await ruleset.delete_rule(session, rule_id, now=now)
        changes = await _closed(ctx, session, closed, now)
    await audit("incident_rule.delete", f"incident_rule:{rule_id}", before=before)
    await session.commit()
    queries.publish(ctx.hub, changes)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _closed(
    ctx: AppContext, session: AsyncSession, closed: list[Incident], now: datetime
) -> common.IncidentChanges:
    """What to publish after a rule change resolved `closed`."""
    if not closed:
        return common.IncidentChanges()
    cells = await response_times.update_response_kpis(
        session,
        incidents=closed,
        province=province_code_str(ctx.settings.province),
        tz=ctx.settings.tz,
        now=now,
    )
    return common.IncidentChanges(
        incidents=[queries.item(i) for i in closed],
        active=await queries.active_items(session),
        response_cells=cells,
    )


def _aware(moment: datetime | None) -> datetime | None:
    """A query moment without an offset is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
