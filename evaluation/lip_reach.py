"""How far the lip code reaches: where the held-out render driven by the predicted lips differs from the one
driven by the tracked lips. Both share every other condition, so any difference away from the mouth is the lip
code moving what it should not (hair, glasses, head pose): the audio serving as a frame index."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_utils import landmark_indices as li
from evaluation.landmarks import read_video_frames, video_landmarks

FAR_MOUTH_WIDTHS = 2.5  # beyond this many mouth widths from the mouth centre: hair, eyes, torso, background
NEAR_MOUTH_WIDTHS = 1.0  # within it: lips, teeth and the jaw's near side


def mouth_distance(landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's distance from the outer-lip centre, in mouth widths (corner to corner), of landmarks
    [T,478,2] (pixels) on frames of height x width -> (distance [T,H,W], mouth width [T] in pixels); both NaN
    in frames without a face."""
    centre = landmarks[:, li.LIPS_OUTER].mean(axis=1)  # [T,2]
    corners = landmarks[:, li.MOUTH_CORNERS]
    mouth_width = np.linalg.norm(corners[:, 0] - corners[:, 1], axis=-1)  # [T]
    yy, xx = np.mgrid[:height, :width]
    dx, dy = xx[None] - centre[:, 0, None, None], yy[None] - centre[:, 1, None, None]
    return np.hypot(dx, dy) / mouth_width[:, None, None], mouth_width


def _check_renders(predicted: np.ndarray, tracked: np.ndarray, landmarks: np.ndarray) -> None:
    """ValueError unless predicted, tracked are [T,H,W,3] of one shape with landmarks [T,478,2]."""
    if predicted.shape != tracked.shape or predicted.ndim != 4:
        raise ValueError(
            f"renders must be two [T,H,W,3] arrays of one shape: {predicted.shape}, {tracked.shape}"
        )
    if landmarks.shape[0] != predicted.shape[0]:
        raise ValueError(f"{landmarks.shape[0]} landmark frames for {predicted.shape[0]} render frames")


def lip_reach(predicted: np.ndarray, tracked: np.ndarray, landmarks: np.ndarray) -> dict[str, float | None]:
    """Change between renders predicted, tracked [T,H,W,3] (uint8) of the same frames, by distance from the
    mouth of the tracked render's landmarks [T,478,2] (pixels, NaN where no face) -> {far_share: the share of
    the summed absolute change beyond FAR_MOUTH_WIDTHS, far_mean and near_mean: the mean absolute change per
    pixel (0-255) there and within NEAR_MOUTH_WIDTHS, mouth_width_px}; None values when no face was found."""
    _check_renders(predicted, tracked, landmarks)
    dist, mouth_width = mouth_distance(landmarks, *predicted.shape[1:3])
    found = np.isfinite(mouth_width)
    if not found.any():
        return {"far_share": None, "far_mean": None, "near_mean": None, "mouth_width_px": None}
    change = np.abs(predicted[found].astype(np.float32) - tracked[found].astype(np.float32)).mean(axis=-1)
    far, near = dist[found] > FAR_MOUTH_WIDTHS, dist[found] < NEAR_MOUTH_WIDTHS
    total = float(change.sum())
    return {
        "far_share": round(float(change[far].sum()) / total, 4) if total > 0 else 0.0,
        "far_mean": round(float(change[far].mean()), 4) if far.any() else None,
        "near_mean": round(float(change[near].mean()), 4) if near.any() else None,
        "mouth_width_px": round(float(mouth_width[found].mean()), 2),
    }


def mouth_only_composite(predicted: np.ndarray, tracked: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """What a perfect mouth gate would render: predicted [T,H,W,3] (uint8) within NEAR_MOUTH_WIDTHS of the
    mouth of landmarks [T,478,2], tracked [T,H,W,3] beyond FAR_MOUTH_WIDTHS, blended linearly between ->
    [T,H,W,3] uint8 (frames without a face: predicted as it is)."""
    _check_renders(predicted, tracked, landmarks)
    dist, _ = mouth_distance(landmarks, *predicted.shape[1:3])
    weight = np.clip((FAR_MOUTH_WIDTHS - dist) / (FAR_MOUTH_WIDTHS - NEAR_MOUTH_WIDTHS), 0.0, 1.0)
    weight = np.where(np.isfinite(weight), weight, 1.0)[..., None]  # [T,H,W,1]
    blend = tracked + weight * (predicted.astype(np.float32) - tracked.astype(np.float32))
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def read_render_pair(predicted: Path, tracked: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of two rendered videos of the same frames (render_direct.sh, and the same with --tracked_lips)
    and MediaPipe landmarks of the tracked one -> (predicted [T,H,W,3], tracked [T,H,W,3], landmarks
    [T,478,2]); ValueError when the videos differ in size or length."""
    pred = np.stack(list(read_video_frames(predicted)))
    track = np.stack(list(read_video_frames(tracked)))
    if pred.shape != track.shape:
        raise ValueError(
            f"'{predicted}' and '{tracked}' differ in size or length: {pred.shape}, {track.shape}"
        )
    return pred, track, video_landmarks(track)


def video_lip_reach(predicted: Path, tracked: Path) -> dict[str, float | None]:
    """lip_reach of two rendered videos (read_render_pair) -> lip_reach's dict."""
    return lip_reach(*read_render_pair(predicted, tracked))
