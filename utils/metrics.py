"""Quality metrics on numpy images and on speech loudness and correlation of time series."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from utils.losses import psnr, ssim


def _image_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 (0..255) or float (0..1) image -> float32 tensor [1,H,W,3] in [0,1]."""
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


def _image_pair(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Two same-shape HxWx3 images -> two tensors [1,H,W,3] in [0,1]."""
    ta, tb = _image_tensor(a), _image_tensor(b)
    if ta.shape != tb.shape:
        raise ValueError(f"image shapes differ: {tuple(ta.shape[1:])} vs {tuple(tb.shape[1:])}")
    return ta, tb


def image_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two HxWx3 images (uint8 or float in [0,1]); inf when identical."""
    return float(psnr(*_image_pair(a, b)))


def image_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (11x11 gaussian window) of two HxWx3 images (uint8 or float in [0,1]); 1.0 when identical."""
    return float(ssim(*_image_pair(a, b)))


def crop_box(img: np.ndarray, box: Iterable[float]) -> np.ndarray:
    """Crop HxWx... `img` to box [x0,y0,x1,y1] (pixels, x1/y1 exclusive), rounded and clipped to the image."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    h, w = img.shape[:2]
    x0, x1 = max(0, min(x0, w)), max(0, min(x1, w))
    y0, y1 = max(0, min(y0, h)), max(0, min(y1, h))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} is empty inside a {w}x{h} image")
    return img[y0:y1, x0:x1]


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
