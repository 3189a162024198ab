"""Scores of one rendered frame against its ground truth: PSNR and SSIM of the full frame and of the face box,
and LPIPS when a network is given. Every caller (training validation, render_direct's metrics.json,
bench/evaluate.py, bench/diagnostics/error_regions.py) scores frames with `score_frame`, so their figures
agree.

Policies, defined here once:
- images are [H,W,3], float in [0,1] or uint8 (divided by 255), torch tensors or numpy arrays;
- the render and the ground truth must have the same size (ValueError otherwise); a caller whose ground
  truth is stored at another size brings it to the render's size with `resize_ground_truth` /
  `load_ground_truth`, the resampling that the dataset uses to load the training targets;
- the face box [x0,y0,x1,y1] is in pixels of the scored image, x1/y1 exclusive, rounded to whole pixels
  (half to even) and clipped to the image; a box with nothing left inside the image is a ValueError;
- `mean_scores` averages each score over the frames where it is finite (identical frames, with infinite
  PSNR, are left out of the PSNR means).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from utils.cli import UserError
from utils.losses import psnr, ssim

if TYPE_CHECKING:
    from utils.lpips import LPIPS

GT_RESAMPLE = Image.Resampling.BILINEAR  # ground truth brought to another size (antialiased on downscale)


@dataclass(frozen=True)
class FrameScores:
    """Scores of one frame: PSNR (dB) and SSIM of the full frame and of the face box; LPIPS or None."""

    psnr: float
    ssim: float
    face_psnr: float
    face_ssim: float
    lpips: float | None = None


def as_image(img: Tensor | np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """[H,W,3] image (uint8 0..255 or float 0..1; tensor or numpy) -> float32 tensor [H,W,3] in [0,1]."""
    t = img if isinstance(img, Tensor) else torch.from_numpy(np.ascontiguousarray(img))
    if t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {tuple(t.shape)}")
    t = t.to(device) if device is not None else t
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


def face_slices(box: Iterable[float], height: int, width: int) -> tuple[slice, slice]:
    """(rows, columns) slices of box [x0,y0,x1,y1] (pixels, x1/y1 exclusive) in a height x width image:
    rounded half to even and clipped to the image; ValueError if nothing is left inside."""
    values = [float(v) for v in box]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"face box must be 4 finite numbers [x0,y0,x1,y1], got {values}")
    x0, y0, x1, y1 = (round(v) for v in values)
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {values} is empty inside a {width}x{height} image")
    return slice(y0, y1), slice(x0, x1)


def score_frame(
    pred: Tensor | np.ndarray,
    gt: Tensor | np.ndarray,
    face_box: Iterable[float],
    lpips: LPIPS | None = None,
) -> FrameScores:
    """Score render `pred` against ground truth `gt` (same-size [H,W,3] images, see as_image; computed on
    gt's device) inside and outside `face_box` [x0,y0,x1,y1] (pixels of these images), with LPIPS when
    `lpips` (on gt's device) is given -> FrameScores. ValueError if the sizes differ or the box is empty."""
    gt_t = as_image(gt)
    pred_t = as_image(pred, gt_t.device)
    if pred_t.shape != gt_t.shape:
        raise ValueError(
            f"render {tuple(pred_t.shape)} and ground truth {tuple(gt_t.shape)} differ in size; "
            "bring the ground truth to the render's size with resize_ground_truth"
        )
    rows, cols = face_slices(face_box, gt_t.shape[0], gt_t.shape[1])
    p, g = pred_t[None], gt_t[None]
    fp, fg = p[:, rows, cols], g[:, rows, cols]
    distance = None
    if lpips is not None:
        with torch.no_grad():
            distance = float(lpips(p, g)[0])
    return FrameScores(
        psnr=float(psnr(p, g)),
        ssim=float(ssim(p, g)),
        face_psnr=float(psnr(fp, fg)),
        face_ssim=float(ssim(fp, fg)),
        lpips=distance,
    )


def score_frames(
    preds: Tensor | np.ndarray,
    gts: Tensor | np.ndarray,
    face_boxes: Tensor | np.ndarray | Sequence[Iterable[float]],
    lpips: LPIPS | None = None,
) -> list[FrameScores]:
    """score_frame of each frame of batches preds, gts [B,H,W,3] with face_boxes [B,4] -> [B] FrameScores."""
    if not len(preds) == len(gts) == len(face_boxes):
        counts = f"{len(preds)} renders, {len(gts)} truths, {len(face_boxes)} boxes"
        raise ValueError(f"batch sizes differ: {counts}")
    boxes = face_boxes.tolist() if isinstance(face_boxes, Tensor | np.ndarray) else face_boxes
    return [score_frame(p, g, b, lpips) for p, g, b in zip(preds, gts, boxes, strict=True)]


def mean_scores(scores: Iterable[FrameScores]) -> dict[str, float]:
    """Mean of each score over the frames where it is finite (NaN where none is) -> {psnr, ssim, face_psnr,
    face_ssim} plus lpips when any frame has it."""
    rows = [asdict(s) for s in scores]
    keys = ["psnr", "ssim", "face_psnr", "face_ssim"]
    if any(r["lpips"] is not None for r in rows):
        keys.append("lpips")
    means = {}
    for key in keys:
        finite = [r[key] for r in rows if r[key] is not None and math.isfinite(r[key])]
        means[key] = float(np.mean(finite)) if finite else float("nan")
    return means


def resize_ground_truth(gt: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 ground truth [h,w,3] -> [height,width,3] with GT_RESAMPLE (unchanged when already that size)."""
    arr = np.asarray(gt)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {arr.dtype} {arr.shape}")
    if arr.shape[:2] == (height, width):
        return arr
    return np.array(Image.fromarray(arr).resize((width, height), GT_RESAMPLE))


def load_ground_truth(path: Path, height: int, width: int) -> np.ndarray:
    """Image file (gt_imgs/<id>.jpg) as RGB uint8 [height,width,3] via resize_ground_truth; UserError if it
    cannot be read."""
    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except OSError as exc:
        raise UserError(f"cannot read image '{path}' ({exc}); rerun ./preprocess.sh") from exc
    return resize_ground_truth(rgb, height, width)
