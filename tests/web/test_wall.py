"""The wall display in a real browser against a running system: simulator → connector → IOC →
WebSocket → headless Chromium. Tiles show the values the API serves, change when the upstream
gets new data, fit the screen without scrolling, and say "mất kết nối" when the server goes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.onestop.simulator import create_app as create_simulator
from ioc.app import create_app
from ioc.config import Settings
from ioc.db import create_engine, create_sessionmaker
from ioc.migrations import upgrade
from ioc.records.models import DossierRow
from tests.support.browser import CHROMIUM_ARGS, chromium_path
from tests.support.databases import empty_database
from tests.support.servers import serve_app
from tests.support.settings import OPEN_ACCESS

START = datetime(2026, 11, 10, 3, 0, tzinfo=UTC)  # 10:00 local, Tuesday 10 November 2026
BACKLOG = '.tile[data-visualisation="sparkline"][data-kpi="onestop.backlog"]'
OVERDUE = '.tile[data-visualisation="number"][data-kpi="onestop.overdue_open"]'
ON_TIME = '.tile[data-visualisation="gauge"][data-kpi="onestop.on_time_rate"]'
BARS = '.tile[data-visualisation="bars"]'


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)


async def kpi(http: httpx.AsyncClient, kpi_id: str) -> dict[str, Any]:
    return (await http.get("/api/v1/kpis", params={"kpi": kpi_id})).json()[0]


async def shown_value(page: Any, selector: str) -> str:
    return await page.get_attribute(f"{selector} .tile-value", "data-value")


async def fits_without_scrolling(page: Any) -> bool:
    return await page.evaluate(
        """() => {
          const root = document.documentElement;
          const inside = [...document.querySelectorAll('.tile')].every((t) => {
            const r = t.getBoundingClientRect();
            return r.bottom <= innerHeight + 1 && r.right <= innerWidth + 1 && r.height > 80;
          });
          return root.scrollHeight <= innerHeight && root.scrollWidth <= innerWidth && inside;
        }"""
    )


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database of its own: the browser test runs once, not per backend."""
    with empty_database("sqlite", tmp_path) as url:
        upgrade(url)
        yield url


async def test_the_wall_shows_live_tiles_that_follow_upstream_data(
    tmp_path: Path, database_url: str
) -> None:
    executable = chromium_path()
    from playwright.async_api import async_playwright

    shots = Path(os.environ.get("IOC_SCREENSHOT_DIR", tmp_path))
    simulator_app = create_simulator(
        seed=11, rate_per_day=80, history_days=25, start=START, speed=0
    )
    simulator = simulator_app.state.simulator
    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)

    async def all_stored() -> bool:
        async with sessions() as session:
            stored = await session.scalar(select(func.count()).select_from(DossierRow))
        return stored == len(simulator.dossiers_as_of(simulator.now()))

    async with (
        serve_app(simulator_app) as simulator_url,
        async_playwright() as playwright,
    ):
        seed = tmp_path / "connectors.toml"
        seed.write_text(
            '[[connector]]\nname = "onestop-wall"\nkind = "onestop"\ninterval_seconds = 1\n'
            f'[connector.config]\nbase_url = "{simulator_url}"\npage_size = 500\n'
        )
        settings = Settings(
            database_url=database_url,
            province=75,
            connectors_file=seed,
            kpi_refresh_seconds=1,
            **OPEN_ACCESS,
        )
        app = create_app(settings, clock=simulator.now)
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        try:
            async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as http:
                await eventually(all_stored)
                await page.goto(f"{url}/?layout=default")
                backlog = await kpi(http, "onestop.backlog")
                await eventually(lambda: _shows(page, BACKLOG, backlog["value"]), within=15)
                overdue = await kpi(http, "onestop.overdue_open")
                on_time = await kpi(http, "onestop.on_time_rate")
                assert await shown_value(page, OVERDUE) == str(int(overdue["value"]))
                assert float(await shown_value(page, ON_TIME)) == on_time["value"]
                assert await page.inner_text(f"{OVERDUE} .tile-name") == "Hồ sơ đang quá hạn"
                assert await page.locator(f"{BARS} .bar").count() == 10
                source = page.locator('.sources .source[data-connector="onestop-wall"]')
                assert await source.get_attribute("data-health") == "ok"
                assert "dữ liệu lúc" in await source.inner_text()
                assert await fits_without_scrolling(page)
                await page.screenshot(path=str(shots / "wall-1920x1080.png"))

                # New upstream data: eight hours pass at the one-stop shop.
                before = await shown_value(page, BACKLOG)
                async with httpx.AsyncClient() as client:
                    advanced = await client.post(
                        f"{simulator_url}/_sim/advance", json={"seconds": 8 * 3600}
                    )
                    advanced.raise_for_status()
                await eventually(all_stored)
                after = await kpi(http, "onestop.backlog")
                assert str(after["value"]) != before
                await eventually(lambda: _shows(page, BACKLOG, after["value"]), within=15)

                await page.set_viewport_size({"width": 3840, "height": 2160})
                await page.wait_for_timeout(300)
                assert await fits_without_scrolling(page)
                await page.screenshot(path=str(shots / "wall-3840x2160.png"))

                english = await browser.new_page(viewport={"width": 1920, "height": 1080})
                await english.goto(f"{url}/?layout=default&lang=en")
                await english.wait_for_selector(f"{OVERDUE} .tile-value")
                assert await english.inner_text(f"{OVERDUE} .tile-name") == (
                    "Open overdue dossiers"
                )
                await english.close()
                assert not await page.is_visible("#banner")
            # The server is gone: the wall says so instead of showing stale tiles silently.
            await page.wait_for_selector("#banner", state="visible", timeout=10_000)
            assert "Mất kết nối" in await page.inner_text("#banner")
            await page.screenshot(path=str(shots / "wall-disconnected.png"))
        finally:
            await browser.close()
            await engine.dispose()


async def _shows(page: Any, selector: str, value: float | None) -> bool:
    shown = await page.get_attribute(f"{selector} .tile-value", "data-value")
    return shown is not None and shown != "" and float(shown) == value
