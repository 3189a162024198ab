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


def lip_reach(predicted: np.ndarray, tracked: np.ndarray, landmarks: np.ndarray) -> dict[str, float | None]:
    """Change between renders predicted, tracked [T,H,W,3] (uint8) of the same frames, by distance from the
    mouth of the tracked render's landmarks [T,478,2] (pixels, NaN where no face) -> {far_share: the share of
    the summed absolute change beyond FAR_MOUTH_WIDTHS, far_mean and near_mean: the mean absolute change per
    pixel (0-255) there and within NEAR_MOUTH_WIDTHS, mouth_width_px}; None values when no face was found."""
    if predicted.shape != tracked.shape or predicted.ndim != 4:
        raise ValueError(
            f"renders must be two [T,H,W,3] arrays of one shape: {predicted.shape}, {tracked.shape}"
        )
    if landmarks.shape[0] != predicted.shape[0]:
        raise ValueError(f"{landmarks.shape[0]} landmark frames for {predicted.shape[0]} render frames")
    found = np.isfinite(landmarks[:, li.MOUTH_CORNERS]).all(axis=(1, 2))
    if not found.any():
        return {"far_share": None, "far_mean": None, "near_mean": None, "mouth_width_px": None}
    lms = landmarks[found]
    centre = lms[:, li.LIPS_OUTER].mean(axis=1)  # [F,2]
    width = np.linalg.norm(lms[:, li.MOUTH_CORNERS[0]] - lms[:, li.MOUTH_CORNERS[1]], axis=-1)  # [F]
    change = np.abs(predicted[found].astype(np.float32) - tracked[found].astype(np.float32)).mean(axis=-1)
    height, width_px = change.shape[1:]
    yy, xx = np.mgrid[:height, :width_px]
    dist = (
        np.hypot(xx[None] - centre[:, 0, None, None], yy[None] - centre[:, 1, None, None])
        / width[:, None, None]
    )
    far, near = dist > FAR_MOUTH_WIDTHS, dist < NEAR_MOUTH_WIDTHS
    total = float(change.sum())
    return {
        "far_share": round(float(change[far].sum()) / total, 4) if total > 0 else 0.0,
        "far_mean": round(float(change[far].mean()), 4) if far.any() else None,
        "near_mean": round(float(change[near].mean()), 4) if near.any() else None,
        "mouth_width_px": round(float(width.mean()), 2),
    }


def video_lip_reach(predicted: Path, tracked: Path) -> dict[str, float | None]:
    """lip_reach of two rendered videos of the same frames (render_direct.sh, and the same with
    --tracked_lips), the mouth found by MediaPipe on the tracked one -> lip_reach's dict."""
    pred = np.stack(list(read_video_frames(predicted)))
    track = np.stack(list(read_video_frames(tracked)))
    if pred.shape != track.shape:
        raise ValueError(
            f"'{predicted}' and '{tracked}' differ in size or length: {pred.shape}, {track.shape}"
        )
    return lip_reach(pred, track, video_landmarks(track))
