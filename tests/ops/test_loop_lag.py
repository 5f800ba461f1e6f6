"""How late the event loop runs what is due, and the part of it spent off the CPU."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI

from ioc.ops.loop_lag import watch_loop_lag
from ioc.ops.metrics import Metrics


def observed(metrics: Metrics, part: str) -> tuple[float, float]:
    """(timers, seconds late in all) observed for `part`."""
    registry, labels = metrics.registry, {"part": part}
    return (
        registry.get_sample_value("ioc_event_loop_lag_seconds_count", labels) or 0.0,
        registry.get_sample_value("ioc_event_loop_lag_seconds_sum", labels) or 0.0,
    )


async def lateness_while(block: float, *, busy: bool) -> Metrics:
    """The lag observed while one callback holds the loop for `block` seconds, computing
    (`busy`) or asleep in a blocking call."""
    metrics = Metrics()
    watch = asyncio.create_task(watch_loop_lag(metrics.loop_lag, tick_seconds=0.005))
    await asyncio.sleep(0.02)
    end = time.perf_counter() + block
    if busy:
        while time.perf_counter() < end:
            pass
    else:
        time.sleep(block)  # noqa: ASYNC251 (the blocking call is the point)
    await asyncio.sleep(0.02)
    watch.cancel()
    return metrics


async def test_a_callback_computing_makes_the_loop_late_on_the_cpu() -> None:
    metrics = await lateness_while(0.1, busy=True)

    timers, late = observed(metrics, "all")
    _, off_cpu = observed(metrics, "off_cpu")
    assert timers >= 3
    assert late >= 0.09
    assert off_cpu < late / 2  # the thread ran all along


async def test_a_callback_blocked_off_the_cpu_is_told_apart() -> None:
    metrics = await lateness_while(0.1, busy=False)

    _, late = observed(metrics, "all")
    _, off_cpu = observed(metrics, "off_cpu")
    assert late >= 0.09
    assert off_cpu >= 0.09  # the thread slept: not a callback's work


async def test_the_service_watches_its_loop_while_it_runs(app: FastAPI) -> None:
    metrics: Metrics = app.state.metrics
    before, _ = observed(metrics, "all")
    await asyncio.sleep(0.1)
    after, _ = observed(metrics, "all")
    assert after >= before + 2
