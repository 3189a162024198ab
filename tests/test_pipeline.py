"""End to end through the user-facing wrappers: preprocess.sh -> train.sh -> predict.sh / render_direct.sh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str | Path]) -> subprocess.CompletedProcess:
    """Run a wrapper from the repository root; return the finished process (output captured)."""
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=900)


def predict(trained: tuple[Path, Path], audio: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run predict.sh with the trained model and its dataset on `audio` into `out`; return the process."""
    data, model = trained
    cmd = ["./predict.sh", "--model_path", model, "--reference_path", data, "--audio_path", audio]
    return run([*cmd, "--output_dir", out, *extra])


@pytest.fixture(scope="module")
def trained(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Preprocess the generated sample at 128 px and train a tiny model on it; returns (data, model)."""
    root = tmp_path_factory.mktemp("pipeline")
    data, model = root / "data", root / "model"
    proc = run(["./preprocess.sh", sample_video, data, "--size", "128"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(
        [
            "./train.sh",
            "-s",
            data,
            "--model_path",
            model,
            "--iterations",
            "80",
            "--resolution",
            "64",
            "--init_points",
            "1500",
            "--eval_every",
            "40",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, model


def test_training_writes_model_files(trained: tuple[Path, Path]) -> None:
    _, model = trained
    assert (model / "cfg_args").is_file()
    assert (model / "chkpnt80.pth").is_file()
    assert (model / "point_cloud" / "iteration_80" / "point_cloud.ply").is_file()
    lines = [json.loads(x) for x in (model / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert lines and lines[-1]["iteration"] <= 80


@pytest.mark.parametrize("mode", ["cycle", "static", "orbit"])
def test_predict_video_matches_audio(
    trained: tuple[Path, Path], speech_wav: Path, tmp_path: Path, mode: str
) -> None:
    from data_utils.audio_io import load_audio
    from evaluation.landmarks import read_video_frames

    data, _ = trained
    out = tmp_path / "res"
    proc = predict(trained, speech_wav, out, "--camera_mode", mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    video = out / "output_custom_80iter_renders.mov"
    assert video.is_file() and (out / "output_custom_80iter_renders.mp4").is_file()
    fps = json.loads((data / "transforms_train.json").read_text())["fps"]
    expected = round(len(load_audio(speech_wav)) / 16000 * fps)
    frames = list(read_video_frames(video))
    assert abs(len(frames) - expected) <= 1
    assert np.asarray(frames[0]).std() > 1.0, "rendered frames are blank"
    assert len(load_audio(video)) / 16000 == pytest.approx(expected / fps, abs=0.1)


def test_render_direct_reports_metrics(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, model = trained
    out = tmp_path / "direct"
    proc = run(["./render_direct.sh", "--model_path", model, "--reference_path", data, "--output_dir", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr"] > 10.0


def test_predict_refuses_existing_output(
    trained: tuple[Path, Path], speech_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    (out / "summary.json").write_text("{}")  # an earlier result of predict.sh: --force would replace it
    proc = predict(trained, speech_wav, out)
    assert proc.returncode != 0
    assert "--force" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "user file"
