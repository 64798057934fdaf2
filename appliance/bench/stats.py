"""Summaries that survive a noisy machine: medians with min and max, not means."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no data."""
    xs = sorted(values)
    if not xs:
        return None
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Median, min, max and count of the values that were measured (None skipped)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def gaps(times: list[float]) -> list[float]:
    """Differences between consecutive arrival times (inter-token latencies)."""
    return [b - a for a, b in itertools.pairwise(times)]
