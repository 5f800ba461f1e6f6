"""The Decision 766/QĐ-TTg service index (Bộ chỉ số phục vụ người dân, doanh nghiệp), estimated
from dossiers.

The official index has 100 points in five groups: publicity and transparency 18, progress and
results 20, digitisation 22, online service 22, satisfaction 18. The IOC estimates the parts it
can compute from dossiers; each indicator earns its points in proportion to its rate, up to the
rate that earns full points. DOMAIN.md marks the per-indicator points "(check)": they live in
`DEFAULT_WEIGHTS` below, one line each (an override from the environment is still to come).

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

SATISFACTION = "satisfaction"

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


def score(
    rates: Mapping[str, float | None],
    weights: Mapping[str, tuple[float, float]] = DEFAULT_WEIGHTS,
) -> float | None:
    """The index in points from the component rates (in %); None when no rate is known."""
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
