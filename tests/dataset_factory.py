"""Writes a tiny synthetic dataset that follows the preprocess data contract (for tests): an ellipsoid
head with eyes, hair and a mouth whose opening follows a synthetic audio envelope, seen by moving cameras."""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_utils import landmark_indices as li
from data_utils.schema import FORMAT_VERSION, FORMAT_VERSION_KEY

RADII = np.array(
    [0.75, 0.95, 0.8]
)  # head ellipsoid semi-axes in head space (x right, y down, z away from camera)
CAM_DIST = 4.0
MOUTH_CENTRE = (0.0, 0.4)  # (x, y) of the mouth on the front of the head
SKIN, HAIR, EYE, LIPS = (0.85, 0.62, 0.5), (0.25, 0.15, 0.1), (0.1, 0.1, 0.15), (0.55, 0.1, 0.15)


def _euler_to_matrix(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rotation matrix [3,3] Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    cx, sx, cy, sy, cz, sz = (
        math.cos(pitch),
        math.sin(pitch),
        math.cos(yaw),
        math.sin(yaw),
        math.cos(roll),
        math.sin(roll),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _front_point(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points [...,3] on the camera-facing half of the head ellipsoid above (x, y)."""
    s = np.clip(1 - (x / RADII[0]) ** 2 - (y / RADII[1]) ** 2, 0, None)
    return np.stack([x, y, -RADII[2] * np.sqrt(s)], axis=-1)


def _landmark_shape() -> np.ndarray:
    """Fake 478 landmarks [478,3] on the face; 1 = nose tip, 10 = forehead, 152 = chin (MediaPipe roles)."""
    g = np.linspace(-0.55, 0.55, 22)
    xs, ys = np.meshgrid(g, g * 1.2)
    pts = _front_point(xs.ravel(), ys.ravel())[:478]
    pts[1], pts[10], pts[152] = _front_point(np.zeros(3), np.array([0.0, -0.7, 0.75]))
    return pts


def _albedo(p: np.ndarray, mouth_open: float) -> np.ndarray:
    """Surface colour [...,3] at head points p [...,3] for a mouth opening in [0,1]."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    col = np.broadcast_to(np.array(SKIN), p.shape).copy()
    hair = (y < -0.5) | (z > 0.1)
    eyes = ((np.abs(x) - 0.28) ** 2 / 0.12**2 + (y + 0.15) ** 2 / 0.07**2 < 1) & (z < 0)
    mouth_h = 0.03 + 0.12 * mouth_open
    mouth = ((x - MOUTH_CENTRE[0]) ** 2 / 0.25**2 + (y - MOUTH_CENTRE[1]) ** 2 / mouth_h**2 < 1) & (z < 0)
    col[hair], col[eyes], col[mouth] = HAIR, EYE, LIPS
    return col


def _raycast(c2w: np.ndarray, focal: float, size: int, mouth_open: float) -> tuple[np.ndarray, np.ndarray]:
    """Head colour [S,S,3] and hit mask [S,S] seen by camera c2w [4,4] (OpenCV)."""
    u, v = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    d = np.stack([(u - size / 2) / focal, (v - size / 2) / focal, np.ones_like(u)], axis=-1) @ c2w[:3, :3].T
    o = c2w[:3, 3]
    od, dd = o / RADII, d / RADII
    a, b, c = (dd * dd).sum(-1), 2 * (dd * od).sum(-1), (od * od).sum() - 1
    disc = b * b - 4 * a * c
    hit = disc > 0
    t = (-b - np.sqrt(np.clip(disc, 0, None))) / (2 * a)
    return _albedo(o + t[..., None] * d, mouth_open), hit


def _project(points: np.ndarray, rot: np.ndarray, trans: np.ndarray, focal: float, size: int) -> np.ndarray:
    """Pixel coordinates [K,2] of head-space points [K,3] under head->camera (rot, trans)."""
    cam = points @ rot.T + trans
    return cam[:, :2] / cam[:, 2:3] * focal + size / 2


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write float RGB(A) [H,W,C] in [0,1] as an image file."""
    Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path, quality=95)


def make_dataset(root: Path, frames: int = 40, size: int = 64, fps: int = 8, seed: int = 0) -> Path:
    """Write a contract-conformant synthetic subject into root (created) and return root."""
    root = Path(root)
    for sub in ("ori_imgs", "gt_imgs", "torso_imgs", "parsing"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    focal = size * 1.7
    t_axis = np.arange(frames)
    mouth = 0.5 + 0.5 * np.sin(t_axis * 0.9) * np.abs(np.sin(t_axis * 0.23 + 0.5))
    uu, vv = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size))
    bc = np.stack([0.3 + 0.4 * uu, 0.5 + 0.2 * vv, 0.7 - 0.3 * uu], axis=-1)
    torso_mask = (vv > 0.82) & (np.abs(uu - 0.5) < 0.4)
    shape = _landmark_shape()
    mouth_pt = _front_point(np.array([MOUTH_CENTRE[0]]), np.array([MOUTH_CENTRE[1]]))
    records, euler, rots, transs, lms_all = [], [], [], [], []
    for i in range(frames):
        angles = rng.normal(0, 0.04, 3)
        rot = _euler_to_matrix(*angles)
        trans = np.array([0.0, 0.0, CAM_DIST]) + rng.normal(0, 0.02, 3)
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = rot.T, -rot.T @ trans
        head, hit = _raycast(c2w, focal, size, mouth[i])
        torso = torso_mask & ~hit
        frame = np.where(hit[..., None], head, np.where(torso[..., None], (0.2, 0.25, 0.6), bc))
        frame = frame + rng.normal(0, 0.005, frame.shape)
        parsing = np.ones((size, size, 3))
        parsing[hit], parsing[torso] = (1, 0, 0), (0, 0, 1)
        torso_rgba = np.concatenate(
            [np.where(torso[..., None], (0.2, 0.25, 0.6), 0), torso[..., None]], axis=-1
        )
        for name in ("ori_imgs", "gt_imgs"):
            _save_rgb(root / name / f"{i}.jpg", frame)
        _save_rgb(root / "parsing" / f"{i}.png", parsing)
        _save_rgb(root / "torso_imgs" / f"{i}.png", torso_rgba)
        lms = _project(shape, rot, trans, focal, size)
        lms[[li.LOWER_LIP_OUTER_MID, li.LOWER_LIP_INNER_MID], 1] += 0.08 * size * mouth[i]  # the jaw opens
        np.savetxt(root / "ori_imgs" / f"{i}.lms", lms, "%f")
        mc = _project(mouth_pt, rot, trans, focal, size)[0]
        half = 0.3 * focal / CAM_DIST
        records.append(
            {
                "img_id": i,
                "aud_id": i,
                "transform_matrix": c2w.tolist(),
                "eye": 1.0,
                "face_rect": [*lms.min(0).tolist(), *lms.max(0).tolist()],
                "mouth_rect": [mc[0] - half, mc[1] - half / 2, mc[0] + half, mc[1] + half / 2],
            }
        )
        euler.append(angles), rots.append(rot), transs.append(trans), lms_all.append(lms)
    _save_rgb(root / "bc.jpg", bc)
    n_val = max(math.ceil(frames / 11), fps)
    for split, recs in (("train", records[:-n_val]), ("val", records[-n_val:])):
        meta = {"focal_len": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size, "fps": fps}
        meta.update(camera_convention="opencv", frames=recs)
        (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    window = 4
    padded = np.pad(mouth, (window // 2, window // 2), mode="edge")
    env = np.stack([padded[t : t + window] for t in range(frames)])  # [T,W]
    channels = np.linspace(0.5, 1.5, 8)[None, :, None]
    feats = (env[:, None, :] * channels + rng.normal(0, 0.01, (frames, 8, window))).astype(np.float32)
    np.save(root / "aud_logmel.npy", feats)
    sr = 16000
    ts = np.arange(int(frames / fps * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * 220 * ts) * np.interp(ts * fps, t_axis, mouth)
    with wave.open(str(root / "aud.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
        w.writeframes((wav * 32767).astype("<i2").tobytes())
    torch.save(
        {
            "euler": torch.tensor(np.array(euler), dtype=torch.float32),
            "trans": torch.tensor(np.array(transs), dtype=torch.float32),
            "R": torch.tensor(np.array(rots), dtype=torch.float32),
            "t": torch.tensor(np.array(transs), dtype=torch.float32),
            "focal": float(focal),
            "shape": torch.tensor(shape, dtype=torch.float32),
            "lms2d": torch.tensor(np.array(lms_all), dtype=torch.float32),
            "tracker": "synthetic",
            "tracker_version": "1",
            "reproj_err": torch.zeros(frames),
        },
        root / "track_params.pt",
    )
    preprocess = {
        FORMAT_VERSION_KEY: FORMAT_VERSION,
        "frames": frames,
        "fps": fps,
        "size": size,
        "audio_extractor": {"name": "logmel", "settings": {"n_mels": 8, "window": window}},
        "timings": {},
        "quality": {"frames_with_face": 1.0, "landmark_jitter_px": 0.0, "reproj_err_px": 0.0, "warnings": []},
    }
    (root / "preprocess.json").write_text(json.dumps(preprocess, indent=2))
    return root
