"""How late the process's event loop runs what is due: every request, delivery and poll of the
process waits that long on top of its own work.

A timer is set every `TICK_SECONDS`; its lateness is observed as `part="all"`. The part of it
during which the loop's thread did not run (it was waiting for a core, or a callback blocked in
a system call) is observed as `part="off_cpu"`: the lateness less the thread's CPU time over
the tick, a lower bound (CPU spent before the timer was due counts against it). A process whose
lateness is mostly off-CPU needs a core, not less work per callback.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

TICK_SECONDS = 0.02
"""How often the loop's lateness is sampled (50 timers a second: a few µs of CPU each)."""


class LagObserver(Protocol):
    """A histogram with a `part` label (`Metrics.loop_lag`)."""

    def labels(self, part: str) -> Any: ...


async def watch_loop_lag(lag: LagObserver, *, tick_seconds: float = TICK_SECONDS) -> None:
    """Observe the loop's lateness every `tick_seconds`, until cancelled."""
    every, off_cpu = lag.labels("all"), lag.labels("off_cpu")
    while True:
        due = time.perf_counter() + tick_seconds
        cpu_before = time.thread_time()
        await asyncio.sleep(tick_seconds)
        late = max(0.0, time.perf_counter() - due)
        ran = time.thread_time() - cpu_before
        every.observe(late)
        off_cpu.observe(max(0.0, late - ran))
