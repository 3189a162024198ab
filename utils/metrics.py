"""Speech loudness per video frame and best-lag correlation of time series (frame scores: evaluation)."""

from __future__ import annotations

import numpy as np


def speech_envelope(
    wav: np.ndarray, sr: int, fps: float, n_frames: int, smooth_frames: int = 3, floor_db: float = 40.0
) -> np.ndarray:
    """Loudness per video frame of mono `wav` [n] -> [n_frames] in dB relative to the loudest frame.

    Frame t uses the samples of [t/fps, (t+1)/fps) (zero past the end); its RMS is averaged over
    `smooth_frames` neighbouring frames, converted to dB and floored at -floor_db.
    """
    wav = np.asarray(wav, np.float64).reshape(-1)
    edges = np.round(np.arange(n_frames + 1) * sr / fps).astype(np.int64)
    padded = np.concatenate([wav, np.zeros(max(0, int(edges[-1]) - wav.size))])
    bounds = zip(edges[:-1], edges[1:], strict=True)
    power = np.array([np.mean(padded[s:e] ** 2) if e > s else 0.0 for s, e in bounds])
    if smooth_frames > 1:
        power = np.convolve(np.pad(power, smooth_frames // 2, mode="edge"), np.ones(smooth_frames), "valid")
        power = power[:n_frames] / smooth_frames
    rms = np.sqrt(power)
    peak = rms.max(initial=0.0)
    if peak <= 0:
        return np.full(n_frames, -floor_db)
    return np.maximum(20.0 * np.log10(np.maximum(rms / peak, 1e-12)), -floor_db)


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
