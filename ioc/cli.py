"""The `ioc` command: serve, migrate, simulate, demo."""

from __future__ import annotations

import asyncio
import logging
from importlib.metadata import entry_points
from typing import Annotated, Any

import typer
import uvicorn

from ioc.config import Settings

app = typer.Typer(help="Intelligent operations center (IOC) backend.", no_args_is_help=True)

SIMULATOR_GROUP = "ioc.simulators"


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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
    speed: Annotated[float, typer.Option(help="Replay speed of the simulators' history")] = 3600.0,
    simulator_port: int = 8101,
) -> None:
    """Run everything in one process: simulators, API, scheduler and wall display."""
    from ioc.app import create_app

    settings = Settings()
    _configure_logging(settings)
    typer.echo(
        f"IOC demo on http://{settings.host}:{settings.port}  (database {settings.database_url})"
    )
    typer.secho(
        "DEMO MODE: no authentication; do not expose this to a network.", fg="yellow", bold=True
    )

    async def run() -> None:
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    _simulator_app(kind, seed=7, speed=speed, catch_up=True),
                    host="127.0.0.1",
                    port=simulator_port + offset,
                    log_level="warning",
                )
            )
            for offset, kind in enumerate(sorted(_simulators()))
        ]
        servers.append(
            uvicorn.Server(
                uvicorn.Config(
                    create_app(settings),
                    host=settings.host,
                    port=settings.port,
                    log_level="warning",
                )
            )
        )
        await asyncio.gather(*(server.serve() for server in servers))

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
