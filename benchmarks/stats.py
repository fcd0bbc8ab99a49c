"""Latency statistics as trtexec reports them: min/mean/median/percentiles, throughput, CV warning.

Percentiles use numpy's default (linear interpolation between closest ranks), so a test can
check them against ``np.percentile``. The coefficient of variation (std / mean, population
std) flags a noisy run: trtexec warns above 1 %, which a shared CPU never meets, so the
default threshold here is 10 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

PERCENTILES = (90, 95, 99)
# Coefficient of variation (std/mean) above which a run is flagged as noisy.
CV_WARN_THRESHOLD = 0.10
# Stable key order of a summary in JSON (documented in docs/benchmarks.md).
SUMMARY_KEYS = ("count", "min", "mean", "median", "p90", "p95", "p99", "max", "std", "cv")


@dataclass(frozen=True)
class Summary:
    """Statistics of one series of timings, in milliseconds (cv is a fraction)."""

    count: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float

    def to_dict(self) -> Dict[str, float]:
        return {k: getattr(self, k) for k in SUMMARY_KEYS}


def summarize(samples_ms: Sequence[float]) -> Summary:
    """Summarize a non-empty series of timings (ms)."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings to summarize")
    if not np.all(np.isfinite(a)):
        raise ValueError("timings contain NaN or infinity")
    p90, p95, p99 = (float(v) for v in np.percentile(a, PERCENTILES))
    mean = float(a.mean())
    std = float(a.std())
    return Summary(
        count=int(a.size),
        min=float(a.min()),
        mean=mean,
        median=float(np.median(a)),
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(a.max()),
        std=std,
        cv=(std / mean) if mean > 0 else 0.0,
    )


def summarize_optional(samples_ms: Sequence[Optional[float]]) -> Optional[Summary]:
    """Summary of the non-None values, or None when the backend reported none."""
    vals = [v for v in samples_ms if v is not None]
    return summarize(vals) if vals else None


def throughput(samples_ms: Sequence[float], batch: int) -> float:
    """Images per second over the timed iterations: batch * count / total time."""
    total_s = float(np.sum(np.asarray(list(samples_ms), dtype=np.float64))) / 1000.0
    if total_s <= 0:
        return math.inf
    return batch * len(samples_ms) / total_s


def cv_warning(summary: Summary, *, label: str = "", threshold: float = CV_WARN_THRESHOLD) -> Optional[str]:
    """A warning line when the coefficient of variation exceeds ``threshold``, else None."""
    if summary.count < 2 or summary.cv <= threshold:
        return None
    who = f"{label}: " if label else ""
    return (
        f"{who}latency varies a lot (coefficient of variation {100 * summary.cv:.1f}% > "
        f"{100 * threshold:.0f}%); other processes may be competing for the CPU/GPU "
        "(check `uptime`), or clocks are not locked. Trust the median and the ratios from "
        "--compare more than the mean."
    )


def speedup(reference_median: float, median: float) -> Optional[float]:
    """How many times faster than the reference (reference median / this median)."""
    if not (reference_median and median) or median <= 0:
        return None
    return reference_median / median


def paired_speedup(reference: Sequence[float], samples: Sequence[float]) -> Optional[float]:
    """Median over interleaved rounds of reference_i / sample_i: robust to bursts of load.

    Both series come from the same rounds of an interleaved run (round i of one target ran
    next to round i of the other), so a burst of load slows both and cancels in the ratio.
    """
    n = min(len(reference), len(samples))
    if n == 0:
        return None
    r = np.asarray(reference[:n], dtype=np.float64)
    s = np.asarray(samples[:n], dtype=np.float64)
    ok = s > 0
    if not ok.any():
        return None
    return float(np.median(r[ok] / s[ok]))
