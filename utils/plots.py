"""PNG plots for benchmarks: training curves from metrics.jsonl and mouth-opening time series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_jsonl(path: str | Path) -> list[dict]:
    """Read one JSON object per non-empty line of `path` -> list of dicts."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations [n], values [n]) of the rows that carry a finite numeric `key`."""
    pairs = [
        (r["iteration"], float(r[key]))
        for r in rows
        if "iteration" in r and isinstance(r.get(key), int | float) and np.isfinite(float(r[key]))
    ]
    return np.array([p[0] for p in pairs], np.float64), np.array([p[1] for p in pairs], np.float64)


def _figure(width: float, height: float) -> Figure:
    """A new Agg-backed figure (no pyplot, so no global figure registry or backend switch)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | Path) -> None:
    """Write `fig` as PNG to `out_png`, creating parent folders."""
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)


def plot_training_curves(metrics_jsonl: str | Path, out_png: str | Path) -> None:
    """Plot loss, train/val PSNR and number of Gaussians against iteration from a metrics.jsonl -> PNG."""
    rows = read_jsonl(metrics_jsonl)
    fig = _figure(15, 4)
    axes = fig.subplots(1, 3)
    panels = [
        ("loss", [("loss", "train")], True),
        ("PSNR (dB)", [("psnr", "train"), ("val_psnr", "val")], False),
        ("Gaussians", [("num_gaussians", "count")], False),
    ]
    for ax, (title, keys, log_y) in zip(axes, panels, strict=True):
        for key, label in keys:
            its, values = _series(rows, key)
            if its.size:
                ax.plot(its, values, marker="o" if its.size < 20 else None, label=label)
        values = np.concatenate([line.get_ydata() for line in ax.get_lines()] or [np.zeros(0)])
        if log_y and values.size and values.min() > 0 and values.max() > 10 * values.min():
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1:
            ax.legend()
    _save(fig, out_png)


def plot_mouth_opening(
    series: dict[str, np.ndarray], fps: float, out_png: str | Path, ylabel: str = "mouth opening"
) -> None:
    """Plot named per-frame series [T] (e.g. mouth opening of render and GT) against time (s) -> PNG."""
    fig = _figure(10, 3.5)
    ax = fig.subplots()
    for name, values in series.items():
        values = np.asarray(values, np.float64)
        ax.plot(np.arange(values.size) / fps, values, label=name)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out_png)


def plot_image_strip(images: list[np.ndarray], captions: list[str], title: str, out_png: str | Path) -> None:
    """Write RGB uint8 images [h,w,3] side by side, each with its caption below, under `title`, as a PNG."""
    if not images or len(images) != len(captions):
        raise ValueError(
            f"need as many captions as images, got {len(images)} images, {len(captions)} captions"
        )
    fig = _figure(1.6 * len(images), 2.5)
    for k, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = fig.add_subplot(1, len(images), k + 1)
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(caption, fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, out_png)
