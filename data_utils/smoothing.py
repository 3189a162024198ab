"""Gap filling and zero-phase temporal smoothing of per-frame signals such as landmark tracks."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, filtfilt


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return [start, end) index pairs of the runs of True in a bool [T] array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def fill_gaps(lms: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill missing frames (any NaN) of `lms` [T,...] up to `max_gap` long; return (filled, bool [T] filled).

    Inner gaps are interpolated linearly between their neighbours; gaps at the start or end hold the nearest
    valid frame. Longer gaps (and an all-missing input) stay NaN, so the caller decides what to do with them.
    """
    out = np.array(lms, dtype=np.float64, copy=True)
    T = out.shape[0]
    missing = np.isnan(out.reshape(T, -1)).any(axis=1)
    filled = np.zeros(T, dtype=bool)
    if missing.all():
        return out, filled
    for start, end in _runs(missing):
        if end - start > max_gap:
            continue
        if start == 0:
            out[start:end] = out[end]
        elif end == T:
            out[start:end] = out[start - 1]
        else:
            w = (np.arange(start, end) - (start - 1)) / (end - (start - 1))
            w = w.reshape((-1,) + (1,) * (out.ndim - 1))
            out[start:end] = (1 - w) * out[start - 1] + w * out[end]
        filled[start:end] = True
    return out, filled


def smooth_sequence(x: np.ndarray, fps: float, cutoff_hz: float = 8.0, order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth low-pass of `x` [T,...] along time (no lag); returns the same shape and dtype.

    Frames containing NaN are left as they are and split the signal into runs that are filtered separately.
    """
    x = np.asarray(x)
    out = x.copy()
    nyquist = fps / 2.0
    if cutoff_hz >= nyquist or x.shape[0] < 2:
        return out
    b, a = butter(order, cutoff_hz / nyquist)
    valid = ~np.isnan(x.reshape(x.shape[0], -1)).any(axis=1)
    for start, end in _runs(valid):
        if end - start < 2:
            continue
        padlen = min(3 * max(len(a), len(b)), end - start - 1)
        out[start:end] = filtfilt(b, a, x[start:end], axis=0, padlen=padlen, padtype="odd")
    return out
