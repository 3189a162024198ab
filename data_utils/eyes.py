"""Blink signal: per-frame eye openness from 2D face-mesh landmarks."""

from __future__ import annotations

import numpy as np

from data_utils import landmark_indices as li


def _eye_ratio(lms2d: np.ndarray, pairs: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Mean eyelid gap over eye width for one eye; lms2d [T,478,2] -> [T]."""
    gaps = np.linalg.norm(lms2d[:, pairs[:, 0]] - lms2d[:, pairs[:, 1]], axis=-1).mean(axis=1)
    width = np.linalg.norm(lms2d[:, corners[0]] - lms2d[:, corners[1]], axis=-1)
    return gaps / np.maximum(width, 1e-6)


def eye_openness(lms2d: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """Return eye openness [T] in [0,1] (1 = open) from landmarks [T,478,2]; NaN frames stay NaN.

    Both eyes' gap/width ratios are averaged and divided by the clip's `percentile`-th value.
    """
    lms2d = np.asarray(lms2d, dtype=np.float64)
    ratio = 0.5 * (
        _eye_ratio(lms2d, li.RIGHT_EYELID_PAIRS, li.RIGHT_EYE_CORNERS)
        + _eye_ratio(lms2d, li.LEFT_EYELID_PAIRS, li.LEFT_EYE_CORNERS)
    )
    if np.isnan(ratio).all():
        return ratio
    ref = np.nanpercentile(ratio, percentile)
    return np.clip(ratio / max(ref, 1e-6), 0.0, 1.0)
