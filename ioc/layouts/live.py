"""The `layout:<id>` topics: every tile of a layout, re-rendered when what it shows changes.

Layout topics are derived, never relayed between replicas: each replica hears the KPI,
incident and connector updates (its own and, through LISTEN/NOTIFY, the others') and renders
the layouts its own clients follow. A change is debounced, so a burst of KPI updates costs one
render; every `refresh_seconds` followed layouts are rendered again for what moves with time
alone (sparklines, sources turning stale), and sent only if something changed. While changes
keep coming (a catch-up), a layout is rendered at most once a second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Set
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from ioc.context import AppContext
from ioc.layouts.models import WallLayout
from ioc.layouts.service import Renderer, SampleCache, list_layouts, to_read
from ioc.live.hub import Hub, UnknownTopic
from ioc.live.topics import CONNECTORS_TOPIC

log = logging.getLogger(__name__)

LAYOUT_FAMILY = "layout"
LAYOUTS_TOPIC = "layouts"
"""Every layout's id and names, and which one changed last (so every replica re-renders it)."""
INCIDENTS_TOPIC = "incidents"


def layout_id_of(topic: str) -> str:
    """The layout id of a `layout:<id>` topic, or `UnknownTopic`."""
    family, _, layout_id = topic.partition(":")
    if family != LAYOUT_FAMILY or not layout_id:
        raise UnknownTopic(f"unknown topic {topic!r}; expected layout:<layout id>")
    return layout_id


def incident_items(state: Any) -> list[dict[str, Any]]:
    """The incidents in the `incidents` topic's state: a list, or `{"items": [...]}`."""
    items = state.get("items", []) if isinstance(state, dict) else state
    return [i for i in items or [] if isinstance(i, dict)]


async def layouts_state(
    session: AsyncSession, *, changed: str | None = None, deleted: bool = False
) -> dict[str, Any]:
    """The `layouts` topic's state: every layout's summary, and the one that just changed."""
    fields = {"id", "name_vi", "name_en", "is_default", "updated_at"}
    return {
        "changed": changed,
        "deleted": deleted,
        "layouts": [
            to_read(x).model_dump(mode="json", include=fields) for x in await list_layouts(session)
        ],
    }


class LayoutFeed:
    """Serves and refreshes the `layout:<id>` topics of one process."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        debounce_seconds: float = 0.3,
        min_interval_seconds: float = 1.0,
        refresh_seconds: float = 30.0,
    ) -> None:
        self.ctx = ctx
        self.debounce_seconds = debounce_seconds
        self.min_interval_seconds = min_interval_seconds
        self.refresh_seconds = refresh_seconds
        self.samples = SampleCache()
        self.dirty: set[str] = set()
        self.kpis_of: dict[str, set[str]] = {}
        self.kinds_of: dict[str, set[str]] = {}
        self.last_sent: dict[str, bytes] = {}
        self.renders = 0
        self._followed: tuple[int, frozenset[str]] = (-1, frozenset())
        """The layouts followed, as of the hub's `followed_version`."""
        self._flush: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def hub(self) -> Hub:
        """The context's hub."""
        assert self.ctx.hub is not None
        return self.ctx.hub

    def install(self) -> None:
        """Register the topic families and listen to the updates layouts depend on."""
        self.hub.topics.register(LAYOUT_FAMILY, self.snapshot)
        self.hub.topics.register(LAYOUTS_TOPIC, self.layouts_snapshot)
        self.hub.watchers.append(self.on_update)

    def start(self) -> None:
        """Start the periodic refresh."""

        async def tick() -> None:
            while True:
                await asyncio.sleep(self.refresh_seconds)
                self.mark(self.followed())

        self._ticker = asyncio.create_task(tick())

    async def stop(self) -> None:
        """Stop refreshing."""
        for task in (self._ticker, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------ reading

    async def snapshot(self, topic: str) -> Any:
        """Render a layout topic now."""
        layout_id = layout_id_of(topic)
        async with self.ctx.sessionmaker() as session:
            layout = await session.get(WallLayout, layout_id)
            if layout is None:
                raise UnknownTopic(f"no layout {layout_id!r}")
            return await self._render(session, layout)

    async def layouts_snapshot(self, topic: str) -> Any:
        """The `layouts` topic: every layout's id, names and last change."""
        if topic != LAYOUTS_TOPIC:
            raise UnknownTopic(f"unknown topic {topic!r}; expected layouts")
        async with self.ctx.sessionmaker() as session:
            return await layouts_state(session)

    async def _render(self, session: Any, layout: WallLayout) -> dict[str, Any]:
        kinds = {t["visualisation"] for t in layout.tiles}
        incidents = connectors = None
        if "incidents" in kinds and self.hub.topics.knows(INCIDENTS_TOPIC):
            incidents = incident_items(await self.hub.topics(INCIDENTS_TOPIC))
        if "freshness" in kinds:
            connectors = await self.hub.topics(CONNECTORS_TOPIC)
        renderer = Renderer(
            session,
            now=self.ctx.clock(),
            tz=self.ctx.settings.tz,
            samples=self.samples,
            incidents=incidents,
            connectors=connectors,
        )
        data = await renderer.layout(layout)
        self.kpis_of[layout.id] = {t["kpi"] for t in layout.tiles if t.get("kpi")}
        self.kinds_of[layout.id] = kinds
        self.renders += 1
        return data

    # ------------------------------------------------------------ updating

    def followed(self) -> frozenset[str]:
        """Layouts some client of this process follows (looked for again only when the topics
        followed change: this runs for every update delivered)."""
        version, layouts = self._followed
        if version != self.hub.followed_version:
            prefix = f"{LAYOUT_FAMILY}:"
            subscribed = self.hub.subscribers
            layouts = frozenset(t[len(prefix) :] for t in subscribed if t.startswith(prefix))
            self._followed = (self.hub.followed_version, layouts)
        return layouts

    def on_update(self, topic: str, data: Any) -> None:
        """A watcher of every delivered update: mark the followed layouts it touches."""
        if topic.startswith(f"{LAYOUT_FAMILY}:"):
            return
        followed = self.followed()
        if not followed:
            return
        if topic.startswith("kpi:"):
            kpi = topic.split(":")[1]
            self.mark({i for i in followed if kpi in self.kpis_of.get(i, {kpi})})
        elif topic == INCIDENTS_TOPIC:
            self.mark({i for i in followed if "incidents" in self.kinds_of.get(i, {"incidents"})})
        elif topic == CONNECTORS_TOPIC:
            self.mark({i for i in followed if "freshness" in self.kinds_of.get(i, {"freshness"})})
        elif topic == LAYOUTS_TOPIC and isinstance(data, dict) and data.get("changed") in followed:
            self.mark({data["changed"]})

    def mark(self, layout_ids: Set[str]) -> None:
        """Render these layouts again shortly."""
        if not layout_ids:
            return
        self.dirty |= layout_ids
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.debounce_seconds)
        while self.dirty:
            started = loop.time()
            ids, self.dirty = self.dirty, set()
            for layout_id in sorted(ids):
                try:
                    await self.refresh(layout_id)
                except Exception:  # one broken layout must not stop the others
                    log.exception("rendering layout %s failed", layout_id)
            if self.dirty:  # changes keep coming (a catch-up): render at most once a second
                spent = loop.time() - started
                await asyncio.sleep(max(self.debounce_seconds, self.min_interval_seconds - spent))

    async def refresh(self, layout_id: str) -> bool:
        """Render a followed layout and deliver it if it changed; True if delivered."""
        topic = f"{LAYOUT_FAMILY}:{layout_id}"
        if topic not in self.hub.subscribers:
            return False
        async with self.ctx.sessionmaker() as session:
            layout = await session.get(WallLayout, layout_id)
            if layout is None:
                data: dict[str, Any] = {"id": layout_id, "deleted": True, "tiles": []}
            else:
                data = await self._render(session, layout)
        encoded = orjson.dumps(data)
        if self.last_sent.get(layout_id) == _without_time(encoded, data):
            return False
        self.last_sent[layout_id] = _without_time(encoded, data)
        self.hub.deliver(topic, data)
        return True


def _without_time(encoded: bytes, data: dict[str, Any]) -> bytes:
    """The rendering without its `rendered_at`, to tell whether anything shown changed."""
    stamp = data.get("rendered_at")
    return encoded.replace(orjson.dumps(stamp), b"") if stamp else encoded
