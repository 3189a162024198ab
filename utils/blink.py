"""Synthetic eye-openness tracks for new audio: blinks at the training rate and shape, else the open value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_BLINK_INTERVAL_S = 4.0
MIN_BLINK_DEPTH = 0.08


@dataclass
class BlinkStats:
    """Blinks found in a training eye series: open value, blink shapes, start frames, blinks per second."""

    open_value: float
    templates: list[np.ndarray]
    starts: list[int]
    rate: float


def default_blink_template(open_value: float, fps: float, closed: float | None = None) -> np.ndarray:
    """Return one blink [k] at `fps`: ~0.1 s closing, ~0.15 s opening, from `open_value` down to `closed`."""
    closed = 0.1 * open_value if closed is None else closed
    n_close, n_open = max(2, round(0.1 * fps)), max(2, round(0.15 * fps))
    down = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_close + 1))[1:]
    up = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n_open + 1))[1:]
    depth = np.concatenate([down, up])
    return (open_value - (open_value - closed) * depth).astype(np.float64)


def detect_blinks(eye: np.ndarray, fps: float) -> BlinkStats:
    """Find blinks in an eye-openness series [T] (1 = open): dips well below the median, with their shapes."""
    eye = np.asarray(eye, dtype=np.float64)
    open_value = float(np.median(eye)) if len(eye) else 1.0
    if len(eye) < 3:
        return BlinkStats(open_value, [], [], 0.0)
    low = float(np.percentile(eye, 2))
    depth = open_value - low
    if depth < MIN_BLINK_DEPTH:
        return BlinkStats(open_value, [], [], 0.0)
    below = eye < open_value - 0.5 * depth
    edges = np.diff(np.concatenate([[0], below.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pad = max(1, round(0.04 * fps))
    templates, kept = [], []
    for s, e in zip(starts, ends, strict=True):
        if e - s > 0.6 * fps or open_value - eye[s:e].min() < MIN_BLINK_DEPTH:
            continue
        a, b = max(0, s - pad), min(len(eye), e + pad)
        templates.append(np.minimum(eye[a:b], open_value))
        kept.append(int(a))
    rate = len(kept) / (len(eye) / fps)
    return BlinkStats(open_value, templates, kept, rate)


def synth_eye_track(
    train_eye: np.ndarray, n_frames: int, fps: float, seed: int = 0, train_fps: float | None = None
) -> np.ndarray:
    """Return eye openness [n_frames] in [0,1]: training median with blinks shaped and timed as in training.

    Blinks come at the training rate (one every ~4 s when the training series has none), with intervals
    drawn around the mean interval, so the eyes are never frozen open. `train_fps` defaults to `fps`.
    """
    train_fps = fps if train_fps is None else train_fps
    stats = detect_blinks(np.asarray(train_eye, dtype=np.float64), train_fps)
    templates = [_resample(t, train_fps, fps) for t in stats.templates]
    if not templates:
        templates = [default_blink_template(stats.open_value, fps)]
    interval = 1.0 / stats.rate if stats.rate > 0 else DEFAULT_BLINK_INTERVAL_S
    rng = np.random.default_rng(seed)
    out = np.full(n_frames, stats.open_value, dtype=np.float64)
    t = rng.uniform(0.25, 0.75) * interval
    while True:
        start = round(t * fps)
        if start >= n_frames:
            break
        tpl = templates[rng.integers(len(templates))]
        seg = out[start : start + len(tpl)]
        out[start : start + len(tpl)] = np.minimum(seg, tpl[: len(seg)])
        t += max(len(tpl) / fps + 0.3, rng.gamma(8.0, interval / 8.0))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _resample(values: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Return `values` sampled at `src_fps` resampled linearly to `dst_fps`."""
    if src_fps == dst_fps or len(values) < 2:
        return values
    n = max(2, round(len(values) * dst_fps / src_fps))
    return np.interp(np.linspace(0, len(values) - 1, n), np.arange(len(values)), values)
