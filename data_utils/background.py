"""Background plate: per-pixel median over frames where the person leaves the pixel free, holes inpainted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

MAX_FRAMES = 60
ROWS_PER_CHUNK = 64


def sample_indices(num_frames: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Return at most `max_frames` evenly spaced frame indices [K] in 0..num_frames-1."""
    return np.unique(np.linspace(0, num_frames - 1, min(num_frames, max_frames)).round().astype(int))


def _load_frames(frames_dir: Path, count: int) -> list[np.ndarray]:
    """Read `<i>.jpg` for the evenly sampled indices of a frames folder; return RGB uint8 images."""
    paths = sorted(frames_dir.glob("*.jpg"), key=lambda p: int(p.stem))
    picked = [paths[i] for i in sample_indices(len(paths), count)]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in picked]


def estimate_background(
    frames: Sequence[np.ndarray] | Path,
    person_masks: Sequence[np.ndarray],
    max_frames: int = MAX_FRAMES,
    dilate_frac: float = 0.03,
) -> np.ndarray:
    """Take frames (RGB [H,W,3] or a folder of <i>.jpg), bool person masks [H,W]; return a plate [H,W,3].

    Each pixel is the median over the frames where the dilated person mask leaves it uncovered; pixels that
    are never uncovered are inpainted (Telea). Folder input and long sequences are subsampled to `max_frames`.
    """
    if isinstance(frames, Path):
        frames = _load_frames(frames, len(person_masks))
    if len(frames) != len(person_masks):
        raise ValueError(f"{len(frames)} frames but {len(person_masks)} person masks")
    keep = sample_indices(len(frames), max_frames)
    frames = [frames[i] for i in keep]
    h, w = frames[0].shape[:2]
    radius = max(1, round(dilate_frac * max(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
    covered = np.stack([cv2.dilate(person_masks[i].astype(np.uint8), kernel) > 0 for i in keep])
    plate = np.zeros((h, w, 3), np.uint8)
    hole = np.zeros((h, w), bool)
    for r0 in range(0, h, ROWS_PER_CHUNK):
        r1 = min(h, r0 + ROWS_PER_CHUNK)
        # Covered samples become 255 and sort last, so the k-th smallest of the first `valid` samples is
        # the k-th smallest uncovered value (ties at 255 are equal values either way).
        stack = np.stack([f[r0:r1] for f in frames])
        stack[covered[:, r0:r1]] = 255
        valid = (~covered[:, r0:r1]).sum(axis=0)
        mid = np.maximum((valid - 1) // 2, 0)[None, :, :, None].repeat(3, axis=-1)
        plate[r0:r1] = np.take_along_axis(np.sort(stack, axis=0), mid, axis=0)[0]
        hole[r0:r1] = valid == 0
    if hole.any():
        plate = _inpaint(plate, hole)
    return plate


def _inpaint(plate: np.ndarray, hole: np.ndarray, work_side: int = 128) -> np.ndarray:
    """Fill the `hole` [H,W] pixels of `plate` [H,W,3] by Telea inpainting at a reduced size (smooth fill)."""
    h, w = hole.shape
    scale = min(1.0, work_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(plate, size, interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
    filled = cv2.resize(
        cv2.inpaint(small, small_hole, 3, cv2.INPAINT_TELEA), (w, h), interpolation=cv2.INTER_LINEAR
    )
    out = plate.copy()
    out[hole] = filled[hole]
    return out
