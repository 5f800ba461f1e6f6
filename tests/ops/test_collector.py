"""The garbage collector of a service process: rarer collections, start-up objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ioc.app import create_app_from_environment
from ioc.ops.collector import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_for_service
from ioc.ops.metrics import Metrics


def pauses(metrics: Metrics, generation: int) -> tuple[float, float]:
    """(collections, seconds) observed for `generation`."""
    labels = {"generation": str(generation)}
    registry = metrics.registry
    return (
        registry.get_sample_value("ioc_gc_pause_seconds_count", labels) or 0.0,
        registry.get_sample_value("ioc_gc_pause_seconds_sum", labels) or 0.0,
    )


@pytest.fixture
def restored_collector() -> Iterator[None]:
    """Put the test process's collector back as it was."""
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


@pytest.mark.usefixtures("restored_collector")
def test_tuning_makes_young_collections_rarer_and_freezes_what_is_alive() -> None:
    gc.unfreeze()
    alive = [{"kept": n} for n in range(10)]

    tune_for_service()

    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert gc.get_freeze_count() >= len(alive)
    # thousands of new containers no longer trigger a young collection
    young_before = gc.get_stats()[0]["collections"]
    more = [{"new": n} for n in range(5_000)]
    assert gc.get_stats()[0]["collections"] == young_before
    assert len(more) == 5_000


@pytest.mark.usefixtures("restored_collector")
def test_each_process_of_serve_workers_tunes_its_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IOC_DATABASE_URL", "sqlite+aiosqlite:///:memory:")
    gc.set_threshold(700, 10, 10)

    create_app_from_environment()

    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


@pytest.mark.usefixtures("restored_collector")
def test_every_collection_after_tuning_is_timed_by_generation() -> None:
    metrics = Metrics()
    tune_for_service(metrics.gc_pause)
    assert pauses(metrics, 2) == (0, 0)

    gc.collect(2)
    gc.collect(0)

    collections, seconds = pauses(metrics, 2)
    assert collections == 1 and seconds > 0
    assert pauses(metrics, 0)[0] >= 1


@pytest.mark.usefixtures("restored_collector")
def test_a_serve_workers_process_reports_its_pauses_in_its_own_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IOC_DATABASE_URL", "sqlite+aiosqlite:///:memory:")

    application = create_app_from_environment()
    gc.collect(2)

    assert pauses(application.state.metrics, 2)[0] >= 1
