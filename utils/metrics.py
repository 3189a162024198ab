"""Best-lag correlation of time series (frame and lip-sync scores live in evaluation/)."""

from __future__ import annotations

import numpy as np


def _pearson(x: np.ndarray, y: np.ndarray, min_overlap: int) -> float:
    """Pearson correlation of x, y [n] over the pairs where both are finite; NaN if too few or constant."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < min_overlap:
        return float("nan")
    xs, ys = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denom = np.sqrt((xs**2).sum() * (ys**2).sum())
    return float((xs * ys).sum() / denom) if denom > 0 else float("nan")


def best_lag_correlation(
    x: np.ndarray, y: np.ndarray, max_lag: int, min_overlap: int = 3
) -> tuple[float, int]:
    """Highest Pearson correlation of x, y [T] over integer lags in [-max_lag, max_lag] -> (corr, lag).

    Positive lag means y lags x: y[t + lag] is paired with x[t]. NaN samples are skipped; ties go to the
    smallest |lag|. Returns (nan, 0) when no lag has `min_overlap` finite, non-constant pairs.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two series of the same length, got {x.shape} and {y.shape}")
    n = x.size
    best_corr, best_lag = float("nan"), 0
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        if abs(lag) >= n:
            continue
        xs, ys = (x[: n - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: n + lag])
        corr = _pearson(xs, ys, min_overlap)
        if np.isfinite(corr) and (np.isnan(best_corr) or corr > best_corr):
            best_corr, best_lag = corr, lag
    return best_corr, best_lag
