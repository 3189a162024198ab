"""One stable square crop around the face for a whole clip, and landmark mapping into the cropped image."""

from __future__ import annotations

import numpy as np

from utils.cli import UserError

FACE_CENTER_FROM_TOP = 0.42  # face centre at this fraction of the side from the top: neck and shoulders show


def stable_square_crop(
    lms2d: np.ndarray, width: int, height: int, scale: float = 2.2
) -> tuple[int, int, int]:
    """Return one square (x0, y0, side) in source pixels covering the face of every frame with a margin.

    `lms2d` [T,K,2] are source-pixel landmarks (NaN rows = no face). The side is `scale` times the typical
    face size plus the range of head motion, at most min(width, height); the face centre sits above the
    square's centre, and the square is shifted (as little as possible) to lie inside the frame.
    """
    pts = np.asarray(lms2d, dtype=np.float64)
    valid = ~np.isnan(pts).any(axis=(1, 2))
    if not valid.any():
        raise UserError("no face found in the video; use a clip where one face is clearly visible")
    pts = pts[valid]
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # [T,2] per-frame boxes
    face_size = float(np.median((hi - lo).max(axis=1)))
    union_lo, union_hi = np.percentile(lo, 1, axis=0), np.percentile(hi, 99, axis=0)
    motion = float(((union_hi - union_lo) - np.median(hi - lo, axis=0)).max())
    side = int(round(scale * face_size + max(motion, 0.0)))
    side = max(2, min(side, width, height))
    cx, cy = (union_lo + union_hi) / 2.0
    x0 = int(np.clip(round(cx - side / 2.0), 0, width - side))
    y0 = int(np.clip(round(cy - FACE_CENTER_FROM_TOP * side), 0, height - side))
    return x0, y0, side


def to_crop_coords(lms: np.ndarray, crop: tuple[int, int, int], size: int) -> np.ndarray:
    """Map source-pixel landmarks [...,2|3] into the `size` x `size` image of square `crop` (x0,y0,side).

    x and y are shifted and scaled; a third (depth) column is scaled by the same factor.
    """
    x0, y0, side = crop
    out = np.array(lms, dtype=np.float64, copy=True) * (size / side)
    out[..., 0] -= x0 * size / side
    out[..., 1] -= y0 * size / side
    return out
