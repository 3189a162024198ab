"""Camera paths for rendering N output frames from the training cameras: cycle, static, orbit."""

from __future__ import annotations

import numpy as np

from utils.cli import UserError

CAMERA_MODES = ("cycle", "static", "orbit")


def ping_pong_indices(num_train: int, n_frames: int) -> np.ndarray:
    """Return [n_frames] int64 indices 0,1,..,T-1,T-2,..,1,0,1,.. over `num_train` training frames."""
    if num_train <= 1:
        return np.zeros(n_frames, dtype=np.int64)
    period = 2 * (num_train - 1)
    k = np.arange(n_frames) % period
    return np.where(k < num_train, k, period - k).astype(np.int64)


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Return the 3x3 rotation by `angle` (rad) about the unit vector `axis` [3] (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def orbit_path(
    c2w: np.ndarray,
    n_frames: int,
    fps: float,
    center: np.ndarray | None = None,
    yaw_deg: float = 15.0,
    pitch_deg: float = 4.0,
    period_s: float = 6.0,
) -> np.ndarray:
    """Return [n_frames,4,4] camera-to-world poses orbiting `center` (default origin), from `c2w` [4,4].

    Yaw swings ±yaw_deg about the camera's up axis and pitch ±pitch_deg about its right axis (twice as fast),
    both through `center`, so the camera keeps its distance and its view of the centre; frame 0 equals `c2w`.
    """
    center = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64)
    base = np.asarray(c2w, dtype=np.float64)
    right, down = base[:3, 0], base[:3, 1]
    phase = 2.0 * np.pi * np.arange(n_frames) / (fps * period_s)
    out = np.empty((n_frames, 4, 4))
    for i, p in enumerate(phase):
        rot = axis_angle_matrix(down, np.radians(yaw_deg) * np.sin(p))
        rot = axis_angle_matrix(right, np.radians(pitch_deg) * np.sin(2.0 * p)) @ rot
        out[i] = np.eye(4)
        out[i, :3, :3] = rot @ base[:3, :3]
        out[i, :3, 3] = rot @ (base[:3, 3] - center) + center
    return out


def camera_path(
    mode: str, c2w_train: np.ndarray, n_frames: int, fps: float, center: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return camera-to-world poses [n,4,4] float32 and the training frame index [n] int64 of the torso.

    `c2w_train` [T,4,4] are the training cameras. cycle: training poses back and forth (torso follows);
    static: the first pose; orbit: a smooth orbit about `center` from the first pose (fixed torso frame 0).
    """
    c2w_train = np.asarray(c2w_train, dtype=np.float64)
    if c2w_train.ndim != 3 or c2w_train.shape[1:] != (4, 4) or len(c2w_train) == 0:
        raise ValueError(f"c2w_train must be [T,4,4] with T >= 1, got {c2w_train.shape}")
    if mode == "cycle":
        idx = ping_pong_indices(len(c2w_train), n_frames)
        return c2w_train[idx].astype(np.float32), idx
    fixed = np.zeros(n_frames, dtype=np.int64)
    if mode == "static":
        return np.repeat(c2w_train[:1], n_frames, axis=0).astype(np.float32), fixed
    if mode == "orbit":
        return orbit_path(c2w_train[0], n_frames, fps, center).astype(np.float32), fixed
    raise UserError(f"unknown camera mode '{mode}'; choose one of {', '.join(CAMERA_MODES)}")
