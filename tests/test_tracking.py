"""Tests of landmark indices, gap filling, smoothing, cropping, eye openness, tracking and face detection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data_utils import landmark_indices as li
from data_utils.crop import stable_square_crop, to_crop_coords
from data_utils.eyes import eye_openness
from data_utils.face_mesh import detect_sequence
from data_utils.smoothing import fill_gaps, smooth_sequence
from data_utils.trackers import get_tracker
from data_utils.tracking import LandmarkFitTracker, TrackResult
from data_utils.video_io import read_frames
from utils.cli import UserError

SIZE = 512
FOCAL = 600.0


def _face_shape(rng: np.random.Generator) -> np.ndarray:
    """A face-like head-space point cloud [478,3]: points on the front of an ellipsoid plus a nose."""
    x = rng.uniform(-0.7, 0.7, li.NUM_LANDMARKS)
    y = rng.uniform(-0.9, 0.9, li.NUM_LANDMARKS)
    r2 = np.clip((x / 0.75) ** 2 + (y / 0.95) ** 2, 0.0, 0.95)
    z = -0.6 * np.sqrt(1.0 - r2)
    shape = np.stack([x, y, z], axis=1)
    shape[li.RIGHT_CHEEK], shape[li.LEFT_CHEEK] = (-0.75, 0.0, -0.05), (0.75, 0.0, -0.05)
    shape[li.NOSE_TIP] = (0.0, 0.15, -0.85)
    shape[li.FOREHEAD_TOP], shape[li.CHIN] = (0.0, -0.9, -0.3), (0.0, 0.9, -0.3)
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16)), np.sin(np.linspace(0, 2 * np.pi, 16))], axis=1)
    for eye, cx in ((li.RIGHT_EYE, -0.3), (li.LEFT_EYE, 0.3)):
        shape[eye] = np.concatenate([ring * (0.12, 0.05) + (cx, -0.2), np.full((16, 1), -0.5)], axis=1)
    return shape


def _project(shape: np.ndarray, rots: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Pinhole projection [T,478,3] of a shape [478,3] or shapes [T,478,3] (x,y pixels, relative depth)."""
    shapes = np.broadcast_to(shape, (len(rots), *shape.shape[-2:]))
    cam = np.einsum("tij,tnj->tni", rots, shapes) + trans[:, None]
    xy = FOCAL * cam[..., :2] / cam[..., 2:3] + SIZE / 2
    z = FOCAL * (cam[..., 2] - trans[:, None, 2]) / trans[:, None, 2]
    return np.concatenate([xy, z[..., None]], axis=-1)


@pytest.fixture(scope="module")
def synthetic_track() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known shape seen over 60 frames with varying pose: (lms [T,478,3], rotations [T,3,3], shape)."""
    rng = np.random.default_rng(0)
    shape = _face_shape(rng)
    t = np.arange(60) / 25.0
    angles = np.stack([0.15 * np.sin(2.1 * t), 0.35 * np.sin(1.3 * t + 0.5), 0.08 * np.sin(3.0 * t)], axis=1)
    rots = Rotation.from_euler("xyz", angles).as_matrix()
    return _project(shape, rots, _translations(60)), rots, shape


def _translations(T: int) -> np.ndarray:
    """Head translations [T,3] of the synthetic clip (about 5 units in front of the camera)."""
    t = np.arange(T) / 25.0
    return np.stack([0.1 * np.sin(t), 0.05 * np.cos(t), 5.0 + 0.2 * np.sin(0.7 * t)], axis=1)


def _talking(shape: np.ndarray, T: int) -> np.ndarray:
    """Shapes [T,478,3]: the lower face opens and closes (jaw drop) and widens, out of the pose rhythm."""
    t = np.arange(T) / 25.0
    lower = (shape[:, 1] > 0.25) & (np.abs(shape[:, 0]) < 0.45)
    jaw = np.zeros_like(shape)
    jaw[lower, 1] = 0.2 * (shape[lower, 1] - 0.25) / 0.65 + 0.02
    widen = np.zeros_like(shape)
    widen[lower, 0] = 0.1 * shape[lower, 0]
    open_t, wide_t = 0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t), np.sin(2 * np.pi * 0.9 * t + 1.0)
    return shape + open_t[:, None, None] * jaw + wide_t[:, None, None] * widen


def _max_relative_angle_deg(fit: np.ndarray, true: np.ndarray) -> float:
    """Largest angle (degrees) between fitted and true rotations [T,3,3], each relative to its first frame."""
    rel_fit = fit @ fit[:1].transpose(0, 2, 1)
    rel_true = true @ true[:1].transpose(0, 2, 1)
    return float(np.degrees(Rotation.from_matrix(rel_fit @ rel_true.transpose(0, 2, 1)).magnitude()).max())


def test_landmark_indices_match_mediapipe_connections() -> None:
    from mediapipe.python.solutions import face_mesh_connections as conn

    def ids(edges: frozenset) -> set[int]:
        return {i for edge in edges for i in edge}

    assert set(li.FACE_OVAL.tolist()) == ids(conn.FACEMESH_FACE_OVAL)
    assert set(li.LIPS_OUTER.tolist()) | set(li.LIPS_INNER.tolist()) == ids(conn.FACEMESH_LIPS)
    assert set(li.RIGHT_EYE.tolist()) == ids(conn.FACEMESH_RIGHT_EYE)
    assert set(li.LEFT_EYE.tolist()) == ids(conn.FACEMESH_LEFT_EYE)
    assert ids(conn.FACEMESH_RIGHT_IRIS) < set(li.RIGHT_IRIS.tolist())
    assert ids(conn.FACEMESH_LEFT_IRIS) < set(li.LEFT_IRIS.tolist())
    assert set(li.RIGHT_EYELID_PAIRS.ravel().tolist()) < set(li.RIGHT_EYE.tolist())
    assert set(li.LEFT_EYELID_PAIRS.ravel().tolist()) < set(li.LEFT_EYE.tolist())
    assert li.MP_TO_IBUG68.shape == (68,) and len(set(li.MP_TO_IBUG68.tolist())) == 68
    assert li.MP_TO_IBUG68.max() < 468


def test_fill_gaps_interpolates_short_gaps_and_keeps_long_ones() -> None:
    x = np.arange(20, dtype=float)[:, None, None] * np.ones((1, 2, 2))
    x[0] = np.nan
    x[5:7] = np.nan
    x[10:15] = np.nan
    out, filled = fill_gaps(x, max_gap=3)
    np.testing.assert_allclose(out[5:7, 0, 0], [5.0, 6.0])
    np.testing.assert_allclose(out[0], x[1])
    assert np.isnan(out[10:15]).all()
    assert filled.tolist() == [i in (0, 5, 6) for i in range(20)]
    all_missing, none_filled = fill_gaps(np.full((4, 3, 2), np.nan), max_gap=10)
    assert np.isnan(all_missing).all() and not none_filled.any()


def test_smooth_sequence_removes_noise_without_lag() -> None:
    fps = 25.0
    t = np.arange(250) / fps
    clean = np.sin(2 * np.pi * 0.8 * t)[:, None] * np.array([1.0, -2.0])
    noisy = clean + np.random.default_rng(1).normal(0, 0.1, clean.shape)
    smooth = smooth_sequence(noisy, fps, cutoff_hz=2.0)
    assert smooth.shape == noisy.shape
    assert np.abs(smooth - clean).mean() < 0.6 * np.abs(noisy - clean).mean()
    assert np.abs(smooth - clean)[10:-10].max() < 0.15
    lag = np.argmax(np.correlate(smooth[:, 0], clean[:, 0], "full")) - (len(t) - 1)
    assert lag == 0
    with_gap = noisy.copy()
    with_gap[100:103] = np.nan
    out = smooth_sequence(with_gap, fps, cutoff_hz=4.0)
    assert np.isnan(out[100:103]).all() and not np.isnan(out[:100]).any()


def test_stable_square_crop_contains_every_face_box() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, (li.NUM_LANDMARKS, 2)) * np.array([120.0, 150.0])
    offsets = np.stack([np.linspace(300, 360, 30), np.linspace(200, 220, 30)], axis=1)
    lms = base[None] + offsets[:, None]
    lms[5] = np.nan
    x0, y0, side = stable_square_crop(lms, 1280, 720)
    assert isinstance(side, int) and side >= 2.2 * 150
    ok = lms[~np.isnan(lms).any(axis=(1, 2))]
    assert ok[..., 0].min() >= x0 and ok[..., 0].max() <= x0 + side
    assert ok[..., 1].min() >= y0 and ok[..., 1].max() <= y0 + side
    face_cy = np.nanmean(lms[..., 1])
    assert face_cy < y0 + side / 2
    mapped = to_crop_coords(lms, (x0, y0, side), 512)
    assert np.nanmin(mapped) >= 0 and np.nanmax(mapped) <= 512
    corner = to_crop_coords(np.array([[x0, y0, 10.0]]), (x0, y0, side), side * 2)
    np.testing.assert_allclose(corner, [[0, 0, 20]])
    with pytest.raises(UserError):
        stable_square_crop(np.full((3, li.NUM_LANDMARKS, 2), np.nan), 640, 480)


def test_stable_square_crop_stays_inside_the_frame_for_a_big_face() -> None:
    rng = np.random.default_rng(3)
    face = rng.uniform(0, 1, (4, li.NUM_LANDMARKS, 2)) * 300.0 + np.array([150.0, 60.0])
    x0, y0, side = stable_square_crop(face, 512, 512)
    assert (x0, y0, side) == (0, 0, 512)
    x0, y0, side = stable_square_crop(face + np.array([300.0, 0.0]), 1280, 512)
    assert side == 512 and y0 == 0 and 0 <= x0 <= 1280 - 512
    assert abs((x0 + side / 2) - (300 + 300)) <= 1  # horizontally centred on the face where room allows
    x0, y0, side = stable_square_crop(face * 0.3, 640, 480)
    assert side < 480 and x0 == 0 and y0 == 0  # face near the corner: shifted in, not padded


def test_eye_openness_follows_a_blink() -> None:
    T = 40
    lms = np.zeros((T, li.NUM_LANDMARKS, 2))
    gap = np.ones(T) * 8.0
    gap[18:22] = [4.0, 0.5, 0.5, 4.0]
    for pairs, corners, cx in (
        (li.RIGHT_EYELID_PAIRS, li.RIGHT_EYE_CORNERS, 100.0),
        (li.LEFT_EYELID_PAIRS, li.LEFT_EYE_CORNERS, 200.0),
    ):
        lms[:, corners[0]] = (cx - 15, 100)
        lms[:, corners[1]] = (cx + 15, 100)
        for k, (upper, lower) in enumerate(pairs):
            lms[:, upper] = np.stack([np.full(T, cx - 5 + 5 * k), 100 - gap / 2], axis=1)
            lms[:, lower] = np.stack([np.full(T, cx - 5 + 5 * k), 100 + gap / 2], axis=1)
    eye = eye_openness(lms)
    assert eye.shape == (T,) and eye.min() >= 0 and eye.max() <= 1
    np.testing.assert_allclose(eye[:18], 1.0)
    assert eye[19] < 0.1 and eye[20] < 0.1 and 0.3 < eye[18] < 0.7


def test_tracker_recovers_known_poses(synthetic_track) -> None:
    lms, rots, _ = synthetic_track
    result = get_tracker("mediapipe").fit(lms[..., :2], lms[..., 2], SIZE, 25.0, progress=False)
    assert isinstance(result, TrackResult)
    T = lms.shape[0]
    assert result.R.shape == (T, 3, 3) and result.t.shape == (T, 3) and result.shape.shape == (478, 3)
    assert result.reproj_err.mean() < 0.5
    assert _max_relative_angle_deg(result.R, rots) < 2.0
    assert abs(result.focal / FOCAL - 1.0) < 0.3
    assert np.abs(result.shape.mean(axis=0)).max() < 1e-3
    assert 1.3 < np.ptp(result.shape[:, 0]) < 1.7
    frontal = Rotation.from_matrix(result.R @ rots.transpose(0, 2, 1)).magnitude()
    assert np.degrees(frontal).max() < 2.0  # head axes are upright: same gauge as the generating shape
    saved = result.to_dict()
    assert saved["R"].shape == (T, 3, 3) and saved["trans"].shape == (T, 3)
    assert saved["tracker"] == "mediapipe" and isinstance(saved["focal"], float)


def test_tracker_handles_missing_frames_and_missing_depth(synthetic_track) -> None:
    lms, rots, _ = synthetic_track
    lms2d = lms[..., :2].copy()
    lms2d[10:13] = np.nan
    result = LandmarkFitTracker(steps=150).fit(lms2d, None, SIZE, 25.0, progress=False)
    assert np.isnan(result.reproj_err[10:13]).all()
    assert np.nanmean(result.reproj_err) < 1.0
    assert _max_relative_angle_deg(result.R, rots) < 4.0


def test_tracker_expressions_explain_a_talking_mouth_without_taking_the_pose(synthetic_track) -> None:
    _, rots, shape = synthetic_track
    T = len(rots)
    lms = _project(_talking(shape, T), rots, _translations(T))
    rigid = LandmarkFitTracker(num_expr=0).fit(lms[..., :2], lms[..., 2], SIZE, 25.0, progress=False)
    full = LandmarkFitTracker().fit(lms[..., :2], lms[..., 2], SIZE, 25.0, progress=False)
    assert rigid.reproj_err.mean() > 1.0
    assert full.reproj_err.mean() < 0.3
    assert full.reproj_err_rigid.mean() > full.reproj_err.mean()
    assert _max_relative_angle_deg(full.R, rots) < 2.0
    assert abs(full.focal / FOCAL - 1.0) < 0.3
    K = full.expr_basis.shape[0]
    assert full.expr_basis.shape == (K, 478, 3) and full.expr_coeffs.shape == (T, K) and K > 0
    frames = full.shape + np.einsum("tk,knc->tnc", full.expr_coeffs, full.expr_basis)
    cam = np.einsum("tij,tnj->tni", full.R, frames) + full.t[:, None]
    reproj = full.focal * cam[..., :2] / cam[..., 2:3] + SIZE / 2
    err = np.linalg.norm(reproj - lms[..., :2], axis=-1).mean(axis=1)
    np.testing.assert_allclose(err, full.reproj_err, atol=0.05)
    saved = full.to_dict()
    assert saved["expr_basis"].shape == (K, 478, 3) and saved["expr_coeffs"].shape == (T, K)
    assert saved["reproj_err_rigid"].shape == (T,) and saved["shape"].shape == (478, 3)


def test_get_tracker_rejects_unknown_names() -> None:
    with pytest.raises(UserError, match="unknown tracker"):
        get_tracker("nope")


def test_detect_sequence_finds_the_face_in_every_frame(sample_video) -> None:
    lms, counts = detect_sequence(read_frames(sample_video, 25.0), progress=False)
    assert lms.shape[1:] == (478, 3) and lms.shape[0] == counts.shape[0] >= 70
    assert (counts == 1).all() and not np.isnan(lms).any()
    assert lms[..., 0].min() >= -5 and lms[..., 0].max() <= 197
    blank = [np.full((96, 96, 3), 128, np.uint8)] * 2
    none, zero = detect_sequence(blank, progress=False)
    assert none.shape == (2, 478, 3) and np.isnan(none).all() and (zero == 0).all()
