"""Shared parts of the built-in upstream simulators: a controllable clock, fault knobs and the
`/_sim/*` control routes, so every simulator offers the same scenarios to tests and demos.

Scenarios: a steady realistic baseline (no faults), `surge` (a multiplier on new records),
outage (`mode="error"`: HTTP 500, or `mode="timeout"`: answer after `timeout_seconds`),
`slow` responses (`slow_seconds` added to every answer), `mode="rate_limited"` (HTTP 429 with
Retry-After) and `malformed` (the next N records served broken).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
UTC_OFFSET = timedelta(hours=7)
"""Asia/Ho_Chi_Minh has had no daylight saving since 1975: plain arithmetic is exact and fast."""


def local_date(moment: datetime) -> date:
    """The Asia/Ho_Chi_Minh calendar day of an aware datetime."""
    return (moment.astimezone(UTC) + UTC_OFFSET).date()


def isoformat_local(moment: datetime) -> str:
    """An aware datetime as ISO 8601 in local time with its +07:00 offset."""
    return moment.astimezone(LOCAL).isoformat()


def at_local(day: date, hour: float, minute: float = 0) -> datetime:
    """The UTC instant of a local wall-clock time on `day` (hours may be fractional)."""
    midnight = datetime.combine(day, clock_time.min, UTC) - UTC_OFFSET
    return midnight + timedelta(hours=hour, minutes=minute)


def whole(moment: datetime) -> datetime:
    """`moment` without its microseconds."""
    return moment.replace(microsecond=0)


def clock_start(start: datetime | None, *, history_days: int, catch_up: bool) -> datetime:
    """Where a simulator's clock starts: as given, or now (history_days back when catching up)."""
    if start is None:
        real_now = datetime.now(UTC)
        return real_now - timedelta(days=history_days) if catch_up else real_now
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return start


class SimClock:
    """Simulated time: start + real elapsed × speed + manual offset, capped in catch-up mode."""

    def __init__(self, *, start: datetime, speed: float, catch_up: bool) -> None:
        self.start = start
        self.speed = speed
        self.catch_up = catch_up
        self.offset = timedelta()
        self._origin = time.monotonic()

    def now(self) -> datetime:
        """The simulated time, never ahead of real time in catch-up mode."""
        elapsed = (time.monotonic() - self._origin) * self.speed
        if self.catch_up:  # compare before adding, so a huge speed cannot overflow datetime
            real_now = datetime.now(UTC)
            if elapsed >= (real_now - self.start - self.offset).total_seconds():
                return real_now
        return self.start + timedelta(seconds=elapsed) + self.offset

    def advance(self, seconds: float) -> None:
        """Jump forward by `seconds` of simulated time."""
        self.offset += timedelta(seconds=seconds)

    def state(self) -> dict[str, Any]:
        """The clock as the control API shows it."""
        return {
            "now": self.now().isoformat(),
            "start": self.start.isoformat(),
            "speed": self.speed,
            "catch_up": self.catch_up,
            "offset_seconds": self.offset.total_seconds(),
        }


class Faults(BaseModel):
    """Fault knobs of one simulator; a POST to /_sim/faults changes only the keys it sends."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    mode: Literal["error", "timeout", "rate_limited"] | None = None
    timeout_seconds: float = Field(default=30, ge=0, le=3600)
    slow_seconds: float = Field(default=0, ge=0, le=600)
    retry_after_seconds: int = Field(default=30, ge=0, le=86_400)
    malformed: int = Field(default=0, ge=0)
    surge: float = Field(default=1.0, ge=0, le=100, description="Multiplier on new records")


class Advance(BaseModel):
    """A forward jump of the simulated clock."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=366 * 86400)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer in the common `{"detail": …}` shape."""
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def sleep_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client hangs up."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(remaining, 0.05))
        if await request.is_disconnected():
            return False
    return True


async def apply_faults(request: Request, faults: Faults) -> JSONResponse | None:
    """The failure to answer with instead of data, if the knobs say so (after any slowness)."""
    if faults.slow_seconds and not await sleep_unless_gone(request, faults.slow_seconds):
        return error_response(499, "client closed the request")
    if faults.mode == "error":
        return error_response(500, "simulated upstream failure")
    if faults.mode == "rate_limited":
        return error_response(
            429, "too many requests", headers={"Retry-After": str(faults.retry_after_seconds)}
        )
    if faults.mode == "timeout" and not await sleep_unless_gone(request, faults.timeout_seconds):
        return error_response(499, "client closed the request")
    return None


def control_router(clock: SimClock, faults: Faults) -> APIRouter:
    """`/healthz` and the `/_sim/faults`, `/_sim/clock`, `/_sim/advance` control routes."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "now": clock.now().isoformat()}

    @router.get("/_sim/faults")
    async def read_faults() -> Faults:
        return faults

    @router.post("/_sim/faults")
    async def set_faults(update: Faults) -> Faults:
        for name in update.model_fields_set:  # keys left out keep their value
            setattr(faults, name, getattr(update, name))
        return faults

    @router.get("/_sim/clock")
    async def read_clock() -> dict[str, Any]:
        return clock.state()

    @router.post("/_sim/advance")
    async def advance(jump: Advance) -> dict[str, Any]:
        clock.advance(jump.seconds)
        return clock.state()

    return router
