"""Python's `round` in PostgreSQL (`ioc.kpi.sql_round`): the same double as Python gives, for
ties in binary, decimal halves that are not ties in binary, their neighbours, negatives and
ordinary values."""

from __future__ import annotations

import random
import struct

import pytest
from sqlalchemy import text

from ioc.context import AppContext
from ioc.kpi.sql_round import python_round

# Halves in binary (0.125, 0.78125 …), values whose 15-digit text is a half but whose binary
# value is not (1.00005, 2.675), negatives, zeros and ordinary values.
SAMPLES = [
    0.0,
    -0.0,
    0.125,
    0.375,
    0.625,
    87.125,
    0.78125,
    94.53125,
    91.40625,
    1.48295,
    1.00005,
    2.675,
    -2.675,
    -0.125,
    100.0,
    1e-9,
    123456.78125,
    *(random.Random(7).uniform(0, 100) for _ in range(200)),
    *(100.0 * n / d for d in (128, 256, 640, 3) for n in range(0, d + 1, 7)),
]

TIES = [0.125, 0.375, 1.125, 2.675, 1.005, 0.78125, 3.14155, 12.34565, 99.995, 87.125, 0.5]
"""Halves in binary (ties: half to even) and decimal halves that are not exact in binary."""


def _samples() -> list[float]:
    rng = random.Random(766)
    values = list(TIES)
    values += [round(rng.uniform(0, 100), rng.choice([3, 5, 6])) for _ in range(300)]
    values += [100.0 * n / d for d in range(1, 130) for n in range(0, d + 1, 7)]
    values += [rng.uniform(0, 100) for _ in range(300)]
    values += [rng.uniform(-1000, 1000) for _ in range(100)]
    # neighbours of the ties, one ulp either side
    for tie in TIES:
        bits = struct.unpack("<q", struct.pack("<d", tie))[0]
        values += [struct.unpack("<d", struct.pack("<q", bits + step))[0] for step in (-1, 1)]
    values += [
        0.0,
        1e-300,
        2.0**-60,
        0.00005,
        0.00015,
        127.99995,
        128.125,
        250.0,
        1048575.5,
        -0.125,
        -2.675,
    ]
    return values


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("digits", [2, 4])
async def test_python_round_in_sql_rounds_every_float_as_python_does(
    ctx: AppContext, digits: int
) -> None:
    values = SAMPLES + _samples()
    query = text(
        f"SELECT v, {python_round('v', digits)} FROM unnest(CAST(:values AS float8[])) AS t(v)"
    )
    async with ctx.sessionmaker() as session:
        rows = (await session.execute(query, {"values": values})).all()
    wrong = [(v, r, round(v, digits)) for v, r in rows if r != round(v, digits)]
    assert len(rows) == len(values)
    assert not wrong, wrong[:10]
