"""The Decision 766 service index weights: defaults, configuration and its validation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from ioc.config import Settings
from ioc.context import build_context
from ioc.kpi import service_index

ALL_FULL = {k: 100.0 for k in service_index.COMPONENTS}
EVEN = {name: 12.5 for name in service_index.DEFAULT_WEIGHTS}  # 8 indicators × 12.5 = 100


@pytest.fixture
def restore_weights() -> Iterator[None]:
    yield
    service_index.use_weights(None)


def test_configured_weights_change_the_score_and_keep_unnamed_full_points_rates() -> None:
    weights = service_index.parse_weights(
        {**EVEN, "onestop.online_rate": [12.5, 100], "onestop.digitised_rate": 12.5}
    )
    rates = {**ALL_FULL, "onestop.online_rate": 50.0, "onestop.digitised_rate": 40.0}
    # online earns half of 12.5 (full at 100 % now); digitised half (full at 80 % by default)
    assert service_index.score(rates, weights) == 87.5


def test_a_context_built_from_settings_scores_with_the_configured_weights(
    monkeypatch: pytest.MonkeyPatch, restore_weights: None
) -> None:
    monkeypatch.setenv(
        "IOC_SERVICE_INDEX_WEIGHTS", '{"onestop.on_time_rate": 60, "onestop.online_rate": 40}'
    )
    ctx = build_context(Settings(database_url="sqlite+aiosqlite:///:memory:"))
    try:
        assert service_index.current_weights() == {
            "onestop.on_time_rate": (60.0, 100.0),
            "onestop.online_rate": (40.0, 50.0),
        }
        # the catalogue's composite reads the deployment's weights
        assert (
            service_index.score({"onestop.on_time_rate": 50.0, "onestop.online_rate": 50.0}) == 70.0
        )
    finally:
        service_index.use_weights(None)
    assert service_index.current_weights() == service_index.DEFAULT_WEIGHTS
    del ctx


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**EVEN, "onestop.online_rate": 20.0}, "must sum to 100, not 107.5"),
        (
            {**EVEN, "onestop.complaints": 0.0},
            "unknown service index indicator 'onestop.complaints'",
        ),
        ({**EVEN, "onestop.online_rate": [12.5, 0]}, "full-points rate must be in (0, 100]"),
        ({"onestop.on_time_rate": 110, "onestop.online_rate": -10}, "must not be negative"),
        ({**EVEN, "onestop.online_rate": [1, 2, 3]}, "at most 2 items"),
    ],
    ids=["sum", "unknown", "rate", "negative", "shape"],
)
def test_bad_weights_in_the_environment_stop_the_settings_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, raw: dict[str, object], message: str
) -> None:
    monkeypatch.setenv("IOC_SERVICE_INDEX_WEIGHTS", json.dumps(raw))
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings()
