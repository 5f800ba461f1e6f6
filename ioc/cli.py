"""The `ioc` command: serve, migrate, simulate, demo."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from ioc.config import Settings
from ioc.context import AppContext
from ioc.kit.clock import utcnow
from ioc.live.api import server_options
from ioc.ops.collector import tune_for_service

app = typer.Typer(help="Intelligent operations center (IOC) backend.", no_args_is_help=True)

SIMULATOR_GROUP = "ioc.simulators"


def _configure_logging(settings: Settings) -> None:
    from ioc.ops.logs import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format)


@app.command()
def migrate() -> None:
    """Upgrade the database (IOC_DATABASE_URL) to the latest schema and load the province's
    administrative units."""
    from ioc.migrations import upgrade
    from ioc.units.service import sync_units

    settings = Settings()
    upgrade(settings.database_url)

    async def load_units(ctx: AppContext) -> None:
        async with ctx.sessionmaker() as session, session.begin():
            count = await sync_units(session, settings.province)
        typer.echo(f"{count} administrative units of province {settings.province} loaded")

    _with_context(load_units)
    typer.echo(f"database at {_redact(settings.database_url)} is up to date")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Defaults to IOC_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to IOC_PORT")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes serving the API (defaults to IOC_WORKERS); more than one needs "
            "PostgreSQL and IOC_SCHEDULER_ENABLED=false, the scheduler running in `ioc worker`",
        ),
    ] = None,
) -> None:
    """Run the API, live hub and wall display, and the scheduler unless
    IOC_SCHEDULER_ENABLED=false."""
    from ioc.app import create_app

    settings = Settings()
    _configure_logging(settings)
    processes = workers or settings.workers
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port or settings.port,
        "log_level": settings.log_level.lower(),
        "log_config": None,  # keep the handlers _configure_logging set (JSON or text)
        **server_options(settings),
    }
    if processes == 1:
        application = create_app(settings)
        tune_for_service(application.state.metrics.gc_pause)
        uvicorn.run(application, **options)
        return
    refusal = several_workers_refusal(settings)
    if refusal is not None:
        typer.secho(f"refused: {refusal}", fg="red", err=True)
        raise typer.Exit(2)
    # Each process builds its own app (own hub, own fan-out listener) from the environment.
    uvicorn.run("ioc.app:create_app_from_environment", factory=True, workers=processes, **options)


def several_workers_refusal(settings: Settings) -> str | None:
    """Why `ioc serve` may not run several processes with these settings, or None."""
    if not settings.is_postgres:
        return (
            "several workers need PostgreSQL: on SQLite a live update would reach only the "
            "clients of the process that made it"
        )
    if settings.scheduler_enabled:
        return (
            "several workers need IOC_SCHEDULER_ENABLED=false, with the scheduler in its own "
            "process (`ioc worker`); otherwise every process would recompute and judge"
        )
    return None


@app.command()
def worker(
    host: Annotated[str | None, typer.Option(help="Defaults to IOC_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to IOC_WORKER_PORT")] = None,
) -> None:
    """Run the scheduler alone: polling, KPI recompute and incident rules, publishing live
    updates to the API processes through PostgreSQL; answers only /healthz, /readyz, /metrics."""
    from ioc.app import WorkerNeedsPostgres, create_worker_app

    settings = Settings()
    _configure_logging(settings)
    try:
        worker_app = create_worker_app(settings)
    except WorkerNeedsPostgres as exc:
        typer.secho(f"refused: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    tune_for_service(worker_app.state.metrics.gc_pause)
    uvicorn.run(
        worker_app,
        host=host or settings.host,
        port=port or settings.worker_port,
        log_level=settings.log_level.lower(),
        log_config=None,
    )


@app.command()
def simulate(
    kind: Annotated[str, typer.Argument(help="Connector kind whose upstream to simulate")],
    host: str = "127.0.0.1",
    port: int = 8101,
    seed: int = 7,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 1.0,
    catch_up: Annotated[
        bool, typer.Option(help="Replay history at --speed, then run live at real time")
    ] = False,
) -> None:
    """Run one upstream simulator as its own HTTP service."""
    simulator = _simulator_app(kind, seed=seed, speed=speed, catch_up=catch_up)
    uvicorn.run(simulator, host=host, port=port, log_level="warning")


@app.command()
def demo(
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second while replaying history")
    ] = 3600.0,
    simulator_port: int = 8101,
) -> None:
    """Run everything in one process: simulators, API, scheduler and wall display.

    The simulators replay their last weeks of history at `--speed`, then run live; the IOC's
    clock follows the one-stop-shop simulator's, so replayed dossiers are judged at their time.
    """
    from ioc.app import create_app

    # Replayed time moves fast: refresh time-driven KPIs and judge incidents as often as it polls.
    settings = Settings(environment="demo", kpi_refresh_seconds=3, incident_evaluate_seconds=3)
    _configure_logging(settings)
    simulators = {
        kind: _simulator_app(kind, seed=7, speed=speed, catch_up=True)
        for kind in sorted(_simulators())
    }
    clock = simulators["onestop"].state.simulator.now if "onestop" in simulators else utcnow
    typer.echo(f"IOC demo: open http://{settings.host}:{settings.port}")
    ports = demo_ports(simulators, first=simulator_port)
    typer.echo(
        f"database {_redact(settings.database_url)}; simulators: "
        + ", ".join(f"{k} :{p}" for k, p in zip(simulators, ports, strict=True))
    )
    typer.secho(
        "DEMO MODE: no authentication, simulated data; do not expose this to a network.",
        fg="yellow",
        bold=True,
    )

    async def run() -> None:
        configs = [
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            for port, app in zip(
                demo_ports(simulators, first=simulator_port), simulators.values(), strict=True
            )
        ]
        configs.append(
            uvicorn.Config(
                create_app(settings, clock=clock),
                host=settings.host,
                port=settings.port,
                log_level="warning",
                log_config=None,
                **server_options(settings),
            )
        )
        await asyncio.gather(*(uvicorn.Server(config).serve() for config in configs))

    asyncio.run(run())


DEMO_ORDER = ("onestop", "fhir", "open311", "education")
"""Built-in simulators take ports in this order from --simulator-port (demo/connectors.toml)."""


def demo_ports(simulators: dict[str, Any], *, first: int) -> list[int]:
    """Ports of the demo's simulators: built-ins in a fixed order, other kinds after them."""
    order = [k for k in DEMO_ORDER if k in simulators] + sorted(set(simulators) - set(DEMO_ORDER))
    port_of = {kind: first + index for index, kind in enumerate(order)}
    return [port_of[kind] for kind in simulators]


connectors_app = typer.Typer(help="Manage connector instances (in IOC_DATABASE_URL).")
app.add_typer(connectors_app, name="connectors")


@connectors_app.command("list")
def connectors_list() -> None:
    """List connector instances with their health (secrets masked)."""
    from ioc.ingest.instances import list_instances, to_read
    from ioc.kit.clock import utcnow

    async def run(ctx: AppContext) -> None:
        async with ctx.sessionmaker() as session:
            instances = await list_instances(session)
        now = utcnow()
        for instance in instances:
            read = to_read(instance, ctx.registry, now=now)
            last = (
                read.last_success_at.isoformat(timespec="seconds") if read.last_success_at else "-"
            )
            typer.echo(
                f"{read.id:>4}  {read.name:<24} {read.kind:<10} {read.health:<9} "
                f"every {read.interval_seconds}s  last success {last}"
                + (f"  error: {read.last_error}" if read.health == "failing" else "")
            )
        if not instances:
            typer.echo("no connector instances")

    _with_context(run)


@connectors_app.command("add")
def connectors_add(
    name: str,
    kind: str,
    config: Annotated[str, typer.Option(help="The connector's config as JSON")] = "{}",
    interval: Annotated[int, typer.Option(help="Seconds between polls")] = 60,
    disabled: bool = False,
) -> None:
    """Add a connector instance; its config is validated against the connector's schema."""
    from ioc.auth.service import record_audit
    from ioc.ingest.instances import InvalidInstance, create_instance, to_read
    from ioc.ingest.schemas import ConnectorInstanceCreate
    from ioc.kit.clock import utcnow

    try:
        data = ConnectorInstanceCreate(
            name=name,
            kind=kind,
            config=json.loads(config),
            interval_seconds=interval,
            enabled=not disabled,
        )
    except (ValueError, ValidationError) as exc:
        raise typer.BadParameter(str(exc)) from None

    async def run(ctx: AppContext) -> None:
        try:
            async with ctx.sessionmaker() as session, session.begin():
                instance = await create_instance(session, ctx.registry, data, now=utcnow())
                await record_audit(
                    session,
                    _cli_principal(),
                    "connector.create",
                    f"connector:{instance.id}",
                    after=to_read(instance, ctx.registry, now=utcnow()),
                    now=utcnow(),
                )
        except InvalidInstance as exc:
            typer.secho(f"refused: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"added connector instance {instance.id} ({instance.name}, {instance.kind})")

    _with_context(run)


@connectors_app.command("test")
def connectors_test(instance: Annotated[str, typer.Argument(help="Instance id or name")]) -> None:
    """Check an instance's config against its live source."""
    from ioc.scheduler.runner import check_instance

    async def run(ctx: AppContext) -> None:
        ok, error = await check_instance(ctx, await _instance_id(ctx, instance))
        if not ok:
            typer.secho(f"failed: {error}", fg="red", err=True)
            raise typer.Exit(1)
        typer.echo("ok: the source answers and the config works")

    _with_context(run)


@connectors_app.command("run")
def connectors_run(instance: Annotated[str, typer.Argument(help="Instance id or name")]) -> None:
    """Poll an instance now and store what it returns."""
    from ioc.scheduler.runner import poll_instance

    async def run(ctx: AppContext) -> None:
        outcome = await poll_instance(ctx, await _instance_id(ctx, instance), force=True)
        typer.echo(
            f"{'ok' if outcome.ok else 'failed'}: pages {outcome.pages}, fetched "
            f"{outcome.fetched}, stored {outcome.stored}, rejected {outcome.rejected}"
            + (f"; {outcome.error or outcome.skipped}" if not outcome.ok else "")
        )
        if not outcome.ok:
            raise typer.Exit(1)

    _with_context(run)


@app.command("secrets-key")
def secrets_key() -> None:
    """Print a new key for IOC_SECRETS_KEY (connector secrets encrypted at rest)."""
    from ioc.auth.secrets import new_key

    typer.echo(new_key())


tokens_app = typer.Typer(help="Manage API tokens (in IOC_DATABASE_URL).")
app.add_typer(tokens_app, name="tokens")


def _cli_principal() -> Any:
    import getpass

    from ioc.auth.permissions import Principal

    user = getpass.getuser()
    return Principal(subject=f"cli:{user}", name=f"{user} (command line)", roles=frozenset())


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what holds it, e.g. wall-display-hall-a")],
    role: Annotated[
        list[str],
        typer.Option(help="viewer, operator, leader, integrator or admin; repeat for several"),
    ],
    expires_days: Annotated[
        float | None, typer.Option(help="Days until it stops working; never by default")
    ] = None,
) -> None:
    """Create a token and print it once: it is stored hashed and cannot be shown again."""
    from datetime import timedelta

    from ioc.auth.schemas import TokenCreate
    from ioc.auth.service import create_token, record_audit, token_snapshot

    now = utcnow()
    try:
        data = TokenCreate(
            name=name,
            roles=role,
            expires_at=now + timedelta(days=expires_days) if expires_days is not None else None,
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    actor = _cli_principal()

    async def run(ctx: AppContext) -> None:
        async with ctx.sessionmaker() as session, session.begin():
            created = await create_token(session, data, created_by=actor.subject, now=now)
            await record_audit(
                session,
                actor,
                "token.create",
                f"token:{created.row.id}",
                after=token_snapshot(created.row),
                now=now,
            )
        typer.echo(
            f"token {created.row.id} ({created.row.name}; {', '.join(created.row.roles)}) "
            "created. Store it now, it is not shown again:",
            err=True,
        )
        typer.echo(created.secret)

    _with_context(run)


@tokens_app.command("list")
def tokens_list() -> None:
    """List tokens: id, name, roles, dates (never the tokens themselves)."""
    from ioc.auth.service import list_tokens

    def when(moment: Any) -> str:
        return moment.isoformat(timespec="seconds") if moment is not None else "-"

    async def run(ctx: AppContext) -> None:
        async with ctx.sessionmaker() as session:
            rows = await list_tokens(session)
        for row in rows:
            state = "revoked" if row.revoked_at is not None else "active"
            typer.echo(
                f"{row.id:>4}  {row.name:<24} {','.join(row.roles):<24} {state:<8} "
                f"{row.prefix}…  created {when(row.created_at)}  last used "
                f"{when(row.last_used_at)}  expires {when(row.expires_at)}"
            )
        if not rows:
            typer.echo("no tokens")

    _with_context(run)


@tokens_app.command("revoke")
def tokens_revoke(token: Annotated[str, typer.Argument(help="Token id or name")]) -> None:
    """Revoke a token for good (running replicas stop accepting it within
    IOC_AUTH_CACHE_SECONDS)."""
    from ioc.auth.service import (
        TokenNotFound,
        get_token,
        record_audit,
        revoke_token,
        token_snapshot,
    )

    actor = _cli_principal()

    async def run(ctx: AppContext) -> None:
        now = utcnow()
        try:
            async with ctx.sessionmaker() as session, session.begin():
                row = await get_token(session, token)
                before = token_snapshot(row)
                await revoke_token(session, row.id, now=now)
                await record_audit(
                    session,
                    actor,
                    "token.revoke",
                    f"token:{row.id}",
                    before=before,
                    after=token_snapshot(row),
                    now=now,
                )
        except TokenNotFound as exc:
            typer.secho(str(exc), fg="red", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"token {row.id} ({row.name}) revoked")

    _with_context(run)


kpi_app = typer.Typer(help="KPI maintenance.")
app.add_typer(kpi_app, name="kpi")


@kpi_app.command("rebuild")
def kpi_rebuild() -> None:
    """Recompute every KPI cell from the stored records (after a catalogue change, say)."""
    import time

    from ioc.kpi.service import rebuild
    from ioc.units.service import province_code_str

    async def run(ctx: AppContext) -> None:
        started = time.perf_counter()
        async with ctx.sessionmaker() as session, session.begin():
            cells = await rebuild(
                session,
                province_code=province_code_str(ctx.settings.province),
                tz=ctx.settings.tz,
                now=ctx.clock(),
            )
        typer.echo(f"rebuilt {cells} KPI cells in {time.perf_counter() - started:.1f}s")

    _with_context(run)


def _with_context(body: Callable[[AppContext], Awaitable[None]]) -> None:
    from ioc.context import build_context

    settings = Settings(scheduler_enabled=False)

    async def run() -> None:
        ctx = build_context(settings)
        try:
            await body(ctx)
        finally:
            await ctx.engine.dispose()

    asyncio.run(run())


async def _instance_id(ctx: AppContext, key: str) -> int:
    from sqlalchemy import select

    from ioc.ingest.models import ConnectorInstance

    column = ConnectorInstance.id if key.isdigit() else ConnectorInstance.name
    async with ctx.sessionmaker() as session:
        found = await session.scalar(
            select(ConnectorInstance.id).where(column == (int(key) if key.isdigit() else key))
        )
    if found is None:
        typer.secho(f"no connector instance {key!r}", fg="red", err=True)
        raise typer.Exit(2)
    return found


def _simulators() -> dict[str, Any]:
    return {entry.name: entry for entry in entry_points(group=SIMULATOR_GROUP)}


def _simulator_app(kind: str, **knobs: Any) -> Any:
    found = _simulators()
    if kind not in found:
        raise typer.BadParameter(
            f"no simulator for {kind!r}; available: {', '.join(sorted(found)) or 'none'}"
        )
    return found[kind].load()(**knobs)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url
