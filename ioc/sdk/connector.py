"""The `Connector` base class every plugin derives from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ioc.sdk.batch import Batch, Cursor
from ioc.sdk.records import Record


class Connector:
    """Base class of every connector plugin, built-in or third-party.

    Subclasses set `kind`, a pydantic `Config`, and implement `poll`. They never touch the
    database: the runtime stores what `poll` returns and persists the cursor afterwards.
    """

    kind: ClassVar[str]
    title: ClassVar[str] = ""
    record_types: ClassVar[tuple[type[Record], ...]] = ()

    class Config(BaseModel):
        """Instance configuration; subclasses replace it with their own model."""

        model_config = ConfigDict(extra="forbid")

    def __init__(self, config: Config, *, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.clock: Callable[[], datetime] = clock or _utcnow
        """The runtime's clock: real time, or a demo's replayed time; use it for "now"."""

    async def poll(self, cursor: Cursor) -> Batch:
        """Fetch what changed since `cursor` (empty on the first poll).

        Depend on `cursor` alone: the runtime asks for the next page with this page's cursor
        while this page is still being stored, stores consecutive pages in one transaction
        with the last one's cursor, and after a failure asks again from the committed cursor.
        """
        raise NotImplementedError

    async def check(self) -> None:
        """Prove the config works against the live source; raise a typed error if not.

        The default fetches the first page and discards it; override with something cheaper.
        """
        await self.poll({})

    def parse(self, payload: Mapping[str, Any]) -> Record:
        """Map one raw upstream payload to a record (used to re-ingest rejected records)."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-map a raw payload")

    async def aclose(self) -> None:
        """Release network resources; called by the runtime when a poll is over."""


def _utcnow() -> datetime:
    return datetime.now(UTC)
