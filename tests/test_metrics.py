"""Tests for utils.metrics, evaluation.landmarks, utils.plots and the bench/evaluate.py command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from data_utils import landmark_indices as li
from data_utils.sample import generate_sample
from evaluation.landmarks import (
    MOUTH_LANDMARKS,
    landmark_distance,
    landmark_distances,
    mouth_opening,
    read_video_frames,
    video_landmarks,
)
from utils.metrics import best_lag_correlation
from utils.plots import plot_mouth_opening, plot_training_curves

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _image(seed: int = 0, size: int = 32) -> np.ndarray:
    """A random uint8 RGB image [size,size,3]."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_landmark_distance_of_shifted_set_and_nan_frames() -> None:
    a = np.random.default_rng(4).uniform(0, 100, (5, 10, 2))
    b = a + np.array([3.0, 4.0])
    assert landmark_distance(a, b) == pytest.approx(5.0)
    b[2] = np.nan
    assert landmark_distance(a, b) == pytest.approx(5.0)
    assert np.isnan(landmark_distance(a, np.full_like(a, np.nan)))


def test_mouth_distance_splits_into_shape_and_offset() -> None:
    gt = np.random.default_rng(6).uniform(100, 400, (4, 478, 2))
    moved = gt.copy()
    moved[:, MOUTH_LANDMARKS] += np.array([3.0, 4.0])  # the same lips 5 px away: placement only
    d = landmark_distances(moved, gt)
    assert d["mouth"] == pytest.approx(5.0) and d["mouth_offset"] == pytest.approx(5.0)
    assert d["mouth_shape"] == pytest.approx(0.0, abs=1e-9)
    reshaped = gt.copy()
    lips = gt[:, MOUTH_LANDMARKS]
    centre = lips.mean(axis=1, keepdims=True)
    reshaped[:, MOUTH_LANDMARKS] = centre + 1.5 * (lips - centre)  # wider lips in place: shape only
    d = landmark_distances(reshaped, gt)
    assert d["mouth_offset"] == pytest.approx(0.0, abs=1e-9)
    assert d["mouth_shape"] == pytest.approx(d["mouth"]) and d["mouth"] > 1.0
    assert d["face"] < d["mouth"]  # the other landmarks did not move
    reshaped[1] = np.nan  # a frame without a face is left out, as in landmark_distance
    assert landmark_distances(reshaped, gt)["mouth_shape"] == pytest.approx(d["mouth_shape"], rel=0.5)


@pytest.mark.parametrize("shift", [3, -2, 0])
def test_best_lag_correlation_recovers_known_lag_with_sign(shift: int) -> None:
    x = np.convolve(np.random.default_rng(5).normal(size=220), np.ones(5) / 5, "valid")
    y = np.roll(x, shift)  # y[t] = x[t - shift]: y lags x by `shift` frames
    corr, lag = best_lag_correlation(x[10:-10], y[10:-10], max_lag=6)
    assert lag == shift
    assert corr == pytest.approx(1.0, abs=1e-9)


def test_best_lag_correlation_skips_nan_and_handles_constant() -> None:
    x = np.sin(np.linspace(0, 12, 100))
    y = x.copy()
    y[::7] = np.nan
    corr, lag = best_lag_correlation(x, y, max_lag=3)
    assert (lag, corr) == (0, pytest.approx(1.0))
    corr, lag = best_lag_correlation(x, np.ones_like(x), max_lag=3)
    assert np.isnan(corr) and lag == 0


def _face_landmarks(gap: float) -> np.ndarray:
    """Synthetic landmarks [478,2]: eye corners 100 px apart, inner lips `gap` px apart."""
    lms = np.zeros((li.NUM_LANDMARKS, 2))
    lms[li.RIGHT_EYE_CORNERS[0]] = [100.0, 100.0]
    lms[li.LEFT_EYE_CORNERS[0]] = [200.0, 100.0]
    lms[li.UPPER_LIP_INNER_MID] = [150.0, 200.0]
    lms[li.LOWER_LIP_INNER_MID] = [150.0, 200.0 + gap]
    return lms


def test_mouth_opening_responds_to_opening_lips_and_scale() -> None:
    lms = np.stack([_face_landmarks(0.0), _face_landmarks(10.0), _face_landmarks(25.0)])
    np.testing.assert_allclose(mouth_opening(lms), [0.0, 0.1, 0.25])
    np.testing.assert_allclose(mouth_opening(lms * 3.0), [0.0, 0.1, 0.25])
    lms[1] = np.nan
    assert np.isnan(mouth_opening(lms)[1])


def test_read_video_frames_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    frames = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(4)]
    writer = imageio_ffmpeg.write_frames(str(path), (48, 32), fps=25, macro_block_size=16)
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    decoded = list(read_video_frames(path))
    assert len(decoded) == 4 and decoded[0].shape == (32, 48, 3)
    assert abs(float(decoded[3].mean()) - 120.0) < 4.0


def test_landmarks_follow_the_mouth_of_a_generated_talking_face(tmp_path: Path) -> None:
    clip = generate_sample(tmp_path / "face.mp4", seconds=2.0, fps=25, size=256)
    lms = video_landmarks(read_video_frames(clip))
    assert lms.shape == (50, li.NUM_LANDMARKS, 2) and np.isfinite(lms).all()
    opening = mouth_opening(lms)
    assert opening.max() - opening.min() > 0.05  # the generated mouth opens and closes with its speech
    blank = np.isnan(video_landmarks([np.zeros((64, 64, 3), np.uint8)] * 2))
    assert blank.all()


def test_plots_write_png_files(tmp_path: Path) -> None:
    rows = [
        {"iteration": i, "loss": 1.0 / i, "psnr": 10 + i, "num_gaussians": 1000 + 10 * i, "it_per_s": 5.0}
        for i in range(1, 6)
    ]
    rows[-1].update(val_psnr=14.0, val_ssim=0.5)
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves, mouth = tmp_path / "out" / "curves.png", tmp_path / "mouth.png"
    plot_training_curves(jsonl, curves)
    plot_mouth_opening({"render": np.random.rand(30), "gt": np.random.rand(30)}, 25.0, mouth)
    for png in (curves, mouth):
        assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_evaluate_training_speed_and_model_size(tmp_path: Path) -> None:
    from bench.evaluate import StageRun, model_files, training_speed

    logged = [
        {"iteration": 10 * k, "loss": 0.1, "it_per_s": rate} for k, rate in ((1, 1.0), (2, 4.0), (3, 6.0))
    ]
    rows = [{"iteration": 0, "val_psnr": 10.0}, *logged]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "train_summary.json").write_text(json.dumps({"peak_gpu_memory_mb": 123.0}))
    for name, size in (("chkpnt10.pth", 100), ("chkpnt30.pth", 2**20)):
        (tmp_path / name).write_bytes(b"x" * size)
    (tmp_path / "point_cloud" / "iteration_30").mkdir(parents=True)
    (tmp_path / "point_cloud" / "iteration_30" / "point_cloud.ply").write_bytes(b"x" * 2**19)
    speed = training_speed(tmp_path, StageRun(seconds=15.0, peak_rss_mb=1.0), iterations=30)
    assert speed["it_per_s"] == pytest.approx(5.0)  # median of the logs after the first (warm-up) one
    assert speed["seconds_to_10000_iterations"] == pytest.approx(2000.0)
    assert speed["it_per_s_wall"] == pytest.approx(2.0)
    assert (speed["peak_gpu_mb"], speed["peak_gpu_mb_source"]) == (123.0, "train_summary.peak_gpu_memory_mb")
    sizes = model_files(tmp_path)
    assert sizes["checkpoint"] == "chkpnt30.pth" and sizes["total_mb"] == pytest.approx(1.5)


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    """Run bench/evaluate.py with `args` from the repository root."""
    return subprocess.run(
        [sys.executable, "bench/evaluate.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_evaluate_help() -> None:
    result = _evaluate("--help")
    assert result.returncode == 0
    assert "--video" in result.stdout and "--iterations" in result.stdout


def test_evaluate_missing_video_is_one_line_error(tmp_path: Path) -> None:
    result = _evaluate("--video", str(tmp_path / "missing.mp4"), "--audio", str(tmp_path / "a.wav"))
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert "missing.mp4" in result.stderr


def test_evaluate_lpips_needs_local_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.evaluate import load_lpips_metric
    from evaluation.frames import score_frame
    from tests.test_lpips import write_lpips_weights

    monkeypatch.setenv("EGSTALKER_CACHE", str(tmp_path))
    net, note = load_lpips_metric()
    assert net is None and note.startswith("not measured")
    write_lpips_weights(tmp_path / "lpips")
    net, note = load_lpips_metric()
    assert net is not None and note == "alex"
    a, b = _image(0, 64), _image(1, 64)
    box = [0, 0, 64, 64]
    assert score_frame(a, a, box, lpips=net).lpips == pytest.approx(0.0, abs=1e-7)
    assert score_frame(a, b, box, lpips=net).lpips > 0
