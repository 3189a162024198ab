"""Face landmarks of videos and frames, and the mouth and distance measures built on them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from data_utils import landmark_indices as li
from data_utils.video_io import probe_video, read_frames
from utils.cli import UserError

MOUTH_LANDMARKS = np.concatenate([li.LIPS_OUTER, li.LIPS_INNER])  # outer then inner lip contour


def landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Euclidean distance (pixels) between landmark tracks a, b [T,K,2]; NaN points are skipped."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"landmark shapes differ: {a.shape} vs {b.shape}")
    dist = np.linalg.norm(a - b, axis=-1)
    return float(np.nanmean(dist)) if np.isfinite(dist).any() else float("nan")


def landmark_distances(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean distances (px) between MediaPipe tracks pred, gt [T,478,2] -> {mouth, mouth_shape, mouth_offset,
    face}.

    mouth: the lip landmarks as they lie (the field's mouth LMD); mouth_shape: the same after moving each
    frame's lips onto their own centroid, so only their shape counts (open, wide, rounded); mouth_offset: the
    distance between the two centroids, where the mouth is (head pose and placement); face: all landmarks.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    pm, gm = pred[:, MOUTH_LANDMARKS], gt[:, MOUTH_LANDMARKS]
    pc, gc = pm.mean(axis=1, keepdims=True), gm.mean(axis=1, keepdims=True)
    return {
        "mouth": landmark_distance(pm, gm),
        "mouth_shape": landmark_distance(pm - pc, gm - gc),
        "mouth_offset": landmark_distance(pc, gc),
        "face": landmark_distance(pred, gt),
    }


def mouth_opening(lms: np.ndarray) -> np.ndarray:
    """Inner-lip gap of MediaPipe landmarks [T,478,2] over the outer eye-corner distance -> [T] (NaN kept).

    The eye-corner distance is the scale because, unlike mouth width or face height, it does not change
    when the mouth opens or the lips round.
    """
    lms = np.asarray(lms, np.float64)
    gap = np.linalg.norm(lms[:, li.UPPER_LIP_INNER_MID] - lms[:, li.LOWER_LIP_INNER_MID], axis=-1)
    scale = np.linalg.norm(lms[:, li.RIGHT_EYE_CORNERS[0]] - lms[:, li.LEFT_EYE_CORNERS[0]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, gap / scale, np.nan)


def read_video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames of the video at `path` at its own frame rate as RGB uint8 arrays [H,W,3]."""
    if not Path(path).is_file():
        raise UserError(f"video '{path}' not found; check the path")
    return read_frames(path, probe_video(path).fps)


def video_landmarks(frames: Iterable[np.ndarray], min_side: int = 256) -> np.ndarray:
    """Track MediaPipe face-mesh landmarks over RGB frames [H,W,3] -> [T,478,2] pixels (NaN where no face).

    Frames whose shorter side is below `min_side` are upscaled by an integer factor for detection (MediaPipe
    misses small faces); the landmarks are returned in the original frame's pixels.
    """
    from data_utils.face_mesh import detect_sequence

    factors: list[int] = []

    def upscaled() -> Iterator[np.ndarray]:
        """Yield the frames enlarged by their integer factor, recording each factor."""
        for frame in frames:
            factors.append(max(1, math.ceil(min_side / min(frame.shape[:2]))))
            k = factors[-1]
            yield frame if k == 1 else cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)

    lms = detect_sequence(upscaled(), progress=False)[0][..., :2]
    return lms / np.asarray(factors, np.float64).reshape(-1, 1, 1)
