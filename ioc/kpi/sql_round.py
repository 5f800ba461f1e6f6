"""Python's `round` in PostgreSQL: the rates and scores the engine stores in SQL must be the very
doubles Python's `KpiDefinition.value` and `service_index.score` give."""

from __future__ import annotations


def _exact_power_of_two(exponent: int) -> str:
    """2^-exponent as an exact decimal literal."""
    digits = str(5**exponent).rjust(exponent, "0")
    return f"0.{digits}"


def python_round(expression: str, digits: int) -> str:
    """SQL rounding `expression` (a float8) to `digits` (≤ 4) decimals exactly as Python's
    `round(x, digits)` does: half to even, on the exact binary value of x (not on its 15-digit
    decimal form, as a cast to numeric would), for |x| < 2^20 (a rate, a score); beyond, as
    numeric rounds.

    Away from a tie (|x|·10^digits more than 1e-4 from a half, far beyond the float error
    below 2^20) rounding to nearest in floats is exact. Near one, |x| is split into two
    integers (|x|·2^43 = hi + lo, lo·2^52 whole) that numeric holds exactly, and rounded half
    to even; the sign is put back (Python rounds symmetrically)."""
    x = f"CAST({expression} AS float8)"
    scale = f"CAST(1e{digits} AS float8)"
    scaled = f"(abs({x}) * {scale})"
    two_43 = "8796093022208.0"
    exact = (
        f"(CAST(floor(x.a * {two_43}) AS int8)::numeric * {_exact_power_of_two(43)}"
        f" + CAST((x.a * {two_43} - floor(x.a * {two_43}))"
        f" * 4503599627370496.0 AS int8)::numeric * {_exact_power_of_two(95)})"
    )
    near_tie = (
        f"(SELECT sign(x.v) * CAST((CASE WHEN y.frac > 0.5 OR (y.frac = 0.5 AND mod(y.f, 2) = 1)"
        f" THEN y.f + 1 ELSE y.f END) * 1e-{digits} AS float8)"
        f" FROM (SELECT {x} AS v, abs({x}) AS a) AS x"
        f" CROSS JOIN LATERAL (SELECT floor(z.e) AS f, z.e - floor(z.e) AS frac"
        f" FROM (SELECT {exact} * 1e{digits} AS e) AS z) AS y)"
    )
    return (
        f"CASE WHEN {x} IS NULL THEN NULL"
        f" WHEN abs({x}) >= 1048576 THEN CAST(round(CAST({x} AS numeric), {digits}) AS float8)"
        f" WHEN abs({scaled} - floor({scaled}) - 0.5) > 1e-4"
        f" THEN sign({x}) * (floor({scaled} + 0.5) / {scale})"
        f" ELSE {near_tie} END"
    )
