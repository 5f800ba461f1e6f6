"""The `ioc` command: serve, migrate, simulate, demo."""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import entry_points
from typing import Annotated, Any

import typer
import uvicorn

from ioc.config import Settings
from ioc.kit.clock import utcnow

app = typer.Typer(help="Intelligent operations center (IOC) backend.", no_args_is_help=True)

SIMULATOR_GROUP = "ioc.simulators"


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per upstream request or job run drowns what matters; poll runs are recorded.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    # "skipped: maximum number of running instances": a poll overran its interval, by design.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


@app.command()
def migrate() -> None:
    """Upgrade the database (IOC_DATABASE_URL) to the latest schema."""
    from ioc.migrations import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    typer.echo(f"database at {_redact(settings.database_url)} is up to date")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Defaults to IOC_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to IOC_PORT")] = None,
) -> None:
    """Run the API, scheduler, live hub and wall display."""
    from ioc.app import create_app

    settings = Settings()
    _configure_logging(settings)
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
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

    # Replayed time moves fast: refresh time-driven KPIs as often as the demo polls.
    settings = Settings(demo=True, kpi_refresh_seconds=3)
    _configure_logging(settings)
    simulators = {
        kind: _simulator_app(kind, seed=7, speed=speed, catch_up=True)
        for kind in sorted(_simulators())
    }
    clock = simulators["onestop"].state.simulator.now if "onestop" in simulators else utcnow
    typer.echo(f"IOC demo: open http://{settings.host}:{settings.port}")
    typer.echo(f"database {_redact(settings.database_url)}; simulators from :{simulator_port}")
    typer.secho(
        "DEMO MODE: no authentication, simulated data; do not expose this to a network.",
        fg="yellow",
        bold=True,
    )

    async def run() -> None:
        configs = [
            uvicorn.Config(app, host="127.0.0.1", port=simulator_port + offset, log_level="warning")
            for offset, app in enumerate(simulators.values())
        ]
        configs.append(
            uvicorn.Config(
                create_app(settings, clock=clock),
                host=settings.host,
                port=settings.port,
                log_level="warning",
            )
        )
        await asyncio.gather(*(uvicorn.Server(config).serve() for config in configs))

    asyncio.run(run())


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
