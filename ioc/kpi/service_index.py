"""The Decision 766/QĐ-TTg service index (Bộ chỉ số phục vụ người dân, doanh nghiệp), estimated
from dossiers.

The official index has 100 points in five groups: publicity and transparency 18, progress and
results 20, digitisation 22, online service 22, satisfaction 18. The IOC estimates the parts it
can compute from dossiers; each indicator earns its points in proportion to its rate, up to the
rate that earns full points. DOMAIN.md marks the per-indicator points "(check)": the defaults
are `DEFAULT_WEIGHTS` below, one line each; a deployment overrides them with
`IOC_SERVICE_INDEX_WEIGHTS` (JSON, validated by `parse_weights`: the points sum to 100).

| group | indicator (KPI) | points | full points at |
|---|---|---:|---:|
| publicity 18 | synced to the national portal (`onestop.portal_sync_rate`) | 18 | 100 % |
| progress 20 | on time (`onestop.on_time_rate`) | 14 | 100 % |
| progress 20 | electronic results (`onestop.electronic_result_rate`) | 6 | 100 % |
| digitisation 22 | digitised (`onestop.digitised_rate`) | 11 | 80 % |
| digitisation 22 | reused from the national data store (`onestop.data_reuse_rate`) | 11 | 80 % |
| online 22 | submitted online (`onestop.online_rate`) | 12 | 50 % |
| online 22 | paid online (`onestop.online_payment_rate`) | 10 | 100 % |
| satisfaction 18 | 100 % − late % (− complaint %, not yet available) | 18 | 90 % |

An indicator with no data (e.g. no fee-bearing dossier) earns its share of the points the
others earned, so a missing indicator neither rewards nor punishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ioc.kpi.sql_round import python_round

SATISFACTION = "satisfaction"
TOTAL_POINTS = 100.0

DEFAULT_WEIGHTS: dict[str, tuple[float, float]] = {
    "onestop.portal_sync_rate": (18.0, 100.0),
    "onestop.on_time_rate": (14.0, 100.0),
    "onestop.electronic_result_rate": (6.0, 100.0),
    "onestop.digitised_rate": (11.0, 80.0),
    "onestop.data_reuse_rate": (11.0, 80.0),
    "onestop.online_rate": (12.0, 50.0),
    "onestop.online_payment_rate": (10.0, 100.0),
    SATISFACTION: (18.0, 90.0),
}
"""indicator → (points, rate in % that earns full points)."""

COMPONENTS = tuple(k for k in DEFAULT_WEIGHTS if k != SATISFACTION)
"""The KPIs the index reads."""

Weights = dict[str, tuple[float, float]]

_weights: Weights = dict(DEFAULT_WEIGHTS)
"""The deployment's weights: set once at start from the settings (`use_weights`)."""


def parse_weights(raw: Mapping[str, Any]) -> Weights:
    """Weights from configuration: indicator → points, or → [points, rate in % that earns
    full points] (the default rate when only points are given). Every indicator must be one
    of `DEFAULT_WEIGHTS`; points are ≥ 0 and sum to 100; a rate is in (0, 100]. An indicator
    left out earns no points. Raises ValueError with what is wrong."""
    weights: Weights = {}
    for name, given in raw.items():
        if name not in DEFAULT_WEIGHTS:
            known = ", ".join(DEFAULT_WEIGHTS)
            raise ValueError(f"unknown service index indicator {name!r}; known: {known}")
        if isinstance(given, int | float):
            points, full_at = float(given), DEFAULT_WEIGHTS[name][1]
        elif isinstance(given, list | tuple) and len(given) == 2:
            points, full_at = float(given[0]), float(given[1])
        else:
            raise ValueError(f"{name}: give points, or [points, full-points rate in %]")
        if points < 0:
            raise ValueError(f"{name}: points must not be negative, not {points:g}")
        if not 0 < full_at <= 100:
            raise ValueError(f"{name}: the full-points rate must be in (0, 100] %, not {full_at:g}")
        weights[name] = (points, full_at)
    total = sum(points for points, _ in weights.values())
    if abs(total - TOTAL_POINTS) > 1e-6:
        raise ValueError(f"service index points must sum to {TOTAL_POINTS:g}, not {total:g}")
    return weights


def use_weights(weights: Mapping[str, tuple[float, float]] | None) -> None:
    """Make `weights` (validated by `parse_weights`) the deployment's; None: the defaults."""
    _weights.clear()
    _weights.update(weights if weights is not None else DEFAULT_WEIGHTS)


def current_weights() -> Weights:
    """The weights scores are computed with."""
    return dict(_weights)


def score(
    rates: Mapping[str, float | None],
    weights: Mapping[str, tuple[float, float]] | None = None,
) -> float | None:
    """The index in points from the component rates (in %); None when no rate is known.
    With no `weights`, the deployment's (see `use_weights`)."""
    weights = _weights if weights is None else weights
    values = dict(rates)
    # satisfaction = 100 % − (late % + complaint %); late % = 100 % − on-time %
    values[SATISFACTION] = rates.get("onestop.on_time_rate")
    earned = possible = 0.0
    for name, (points, full_at) in weights.items():
        rate = values.get(name)
        if rate is None:
            continue
        earned += points * min(1.0, max(rate, 0.0) / full_at)
        possible += points
    if possible == 0:
        return None
    total = sum(points for points, _ in weights.values())
    return round(earned * total / possible, 2)


def score_sql(rates: Mapping[str, str]) -> str:
    """`score` in SQL with the deployment's weights: `rates` maps each component KPI to a SQL
    float8 expression of its value in % (NULL when unknown). The same operations in the same
    order as `score`, so the same double (rounded as Python rounds)."""
    weights = _weights
    values = dict(rates)
    values[SATISFACTION] = rates["onestop.on_time_rate"]
    earned, possible = ["0.0::float8"], ["0.0::float8"]
    for name, (points, full_at) in weights.items():
        rate = values.get(name)
        if rate is None:
            continue
        p, f = f"{points!r}::float8", f"{full_at!r}::float8"
        earned.append(
            f"coalesce({p} * least(1.0::float8, greatest({rate}, 0.0::float8) / {f}), 0.0)"
        )
        possible.append(f"CASE WHEN {rate} IS NULL THEN 0.0::float8 ELSE {p} END")
    total = sum(points for points, _ in weights.values())
    earned_sql, possible_sql = " + ".join(earned), " + ".join(possible)
    score = f"(({earned_sql}) * {float(total)!r}::float8 / nullif({possible_sql}, 0.0))"
    # computed once (OFFSET 0 keeps PostgreSQL from copying it into every use), then rounded
    return f"(SELECT {python_round('t.x', 2)} FROM (SELECT {score} AS x OFFSET 0) AS t)"
