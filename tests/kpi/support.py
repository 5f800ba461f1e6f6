"""What the KPI tests share: the moment their service's clock is stopped at."""

from __future__ import annotations

from datetime import UTC, datetime

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 10:00 local on 20 November
