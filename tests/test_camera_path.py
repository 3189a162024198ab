"""Camera paths (cycle, static, orbit) and synthetic blink tracks for predict.py."""

from __future__ import annotations

import numpy as np
import pytest

from utils.blink import default_blink_template, detect_blinks, synth_eye_track
from utils.camera_path import axis_angle_matrix, camera_path, ping_pong_indices
from utils.cli import UserError


def look_at_c2w(position: np.ndarray) -> np.ndarray:
    """Return an OpenCV camera-to-world [4,4] at `position` looking at the origin (y down)."""
    z = -position
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = position
    return c2w


@pytest.fixture
def train_poses() -> np.ndarray:
    """Return 10 training cameras [10,4,4] swaying slightly in front of the head at distance ~6."""
    return np.stack([look_at_c2w(np.array([0.1 * np.sin(i), 0.05 * i, -6.0])) for i in range(10)])


def test_ping_pong_has_no_jumps() -> None:
    idx = ping_pong_indices(5, 20)
    assert idx.tolist()[:10] == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
    assert np.abs(np.diff(idx)).max() == 1
    assert ping_pong_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("mode", ["cycle", "static", "orbit"])
def test_shapes_and_valid_rotations(mode: str, train_poses: np.ndarray) -> None:
    c2w, torso = camera_path(mode, train_poses, 37, 25.0)
    assert c2w.shape == (37, 4, 4) and c2w.dtype == np.float32
    assert torso.shape == (37,) and torso.dtype == np.int64
    assert torso.min() >= 0 and torso.max() < len(train_poses)
    rot = c2w[:, :3, :3].astype(np.float64)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    np.testing.assert_allclose(c2w[:, 3], np.broadcast_to([0, 0, 0, 1], (37, 4)))


def test_cycle_follows_training_poses_and_torso(train_poses: np.ndarray) -> None:
    c2w, torso = camera_path("cycle", train_poses, 25, 25.0)
    np.testing.assert_allclose(c2w, train_poses[torso], atol=1e-6)
    assert torso[9] == 9 and torso[10] == 8 and torso[18] == 0 and torso[19] == 1
    step = np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1)
    train_step = np.linalg.norm(np.diff(train_poses[:, :3, 3], axis=0), axis=1)
    assert step.max() <= train_step.max() + 1e-6


def test_static_is_constant_first_pose(train_poses: np.ndarray) -> None:
    c2w, torso = camera_path("static", train_poses, 12, 25.0)
    np.testing.assert_allclose(c2w, np.broadcast_to(train_poses[0], c2w.shape), atol=1e-6)
    assert (torso == 0).all()


def test_orbit_is_smooth_centred_and_keeps_distance(train_poses: np.ndarray) -> None:
    n = 150
    c2w, torso = camera_path("orbit", train_poses, n, 25.0)
    c2w = c2w.astype(np.float64)
    np.testing.assert_allclose(c2w[0], train_poses[0], atol=1e-6)
    dist = np.linalg.norm(c2w[:, :3, 3], axis=1)
    np.testing.assert_allclose(dist, np.linalg.norm(train_poses[0, :3, 3]), rtol=1e-5)
    centre_in_cam = np.einsum("nji,nj->ni", c2w[:, :3, :3], -c2w[:, :3, 3])
    np.testing.assert_allclose(
        centre_in_cam, np.broadcast_to(centre_in_cam[0], centre_in_cam.shape), atol=1e-4
    )
    forward = c2w[:, :3, 2]
    angle = np.degrees(np.arccos(np.clip(forward @ forward[0], -1, 1)))
    assert 12.0 < angle.max() <= 16.5
    step = np.degrees(np.arccos(np.clip(np.sum(forward[1:] * forward[:-1], axis=1), -1, 1)))
    assert step.max() < 1.0
    assert (torso == 0).all()


def test_unknown_mode_is_a_user_error(train_poses: np.ndarray) -> None:
    with pytest.raises(UserError, match="unknown camera mode"):
        camera_path("spin", train_poses, 3, 25.0)


def test_axis_angle_matrix_rotates_about_axis() -> None:
    rot = axis_angle_matrix(np.array([0.0, 0.0, 2.0]), np.pi / 2)
    np.testing.assert_allclose(rot @ np.array([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-12)


def training_eye_series(fps: float, seconds: float, every_s: float) -> np.ndarray:
    """Return an eye series [T] open at ~0.8 with a blink every `every_s` seconds."""
    rng = np.random.default_rng(1)
    eye = 0.8 + 0.01 * rng.standard_normal(round(seconds * fps))
    blink = default_blink_template(0.8, fps, closed=0.05)
    for start in np.arange(1.0, seconds - 1.0, every_s):
        s = round(start * fps)
        eye[s : s + len(blink)] = blink
    return eye


def test_detect_blinks_finds_rate_and_open_value() -> None:
    stats = detect_blinks(training_eye_series(25.0, 30.0, 3.0), 25.0)
    assert len(stats.templates) == 10
    assert stats.rate == pytest.approx(10 / 30.0)
    assert stats.open_value == pytest.approx(0.8, abs=0.02)
    assert min(t.min() for t in stats.templates) < 0.1
    assert stats.starts[0] == pytest.approx(25, abs=2)


def test_synth_eye_track_blinks_like_training() -> None:
    fps = 25.0
    track = synth_eye_track(training_eye_series(fps, 30.0, 3.0), 1500, fps, seed=3)
    assert track.shape == (1500,) and track.dtype == np.float32
    assert track.min() >= 0.0 and track.max() <= 1.0
    assert np.median(track) == pytest.approx(0.8, abs=0.02)
    synth = detect_blinks(track, fps)
    assert 12 <= len(synth.templates) <= 30
    assert track.min() < 0.15


def test_synth_eye_track_without_training_blinks_blinks_every_few_seconds() -> None:
    track = synth_eye_track(np.full(100, 0.9), 500, 25.0, seed=0)
    blinks = detect_blinks(track, 25.0)
    assert 3 <= len(blinks.templates) <= 8
    assert np.median(track) == pytest.approx(0.9)
    assert track.min() < 0.2


def test_synth_eye_track_is_deterministic_per_seed() -> None:
    eye = training_eye_series(25.0, 20.0, 2.5)
    np.testing.assert_array_equal(
        synth_eye_track(eye, 300, 25.0, seed=7), synth_eye_track(eye, 300, 25.0, seed=7)
    )
    assert not np.array_equal(
        synth_eye_track(eye, 300, 25.0, seed=7), synth_eye_track(eye, 300, 25.0, seed=8)
    )
