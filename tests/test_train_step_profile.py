"""bench.diagnostics.train_step_profile: per-part times of fine-stage training steps, from a fresh or a
trained model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

import train
from bench.diagnostics import train_step_profile
from bench.diagnostics.train_step_profile import PARTS
from tests.dataset_factory import make_dataset
from tests.test_bench import assert_metadata
from tests.test_train import SMALL_NET
from utils.cli import UserError

TRAIN_ARGS = f"--init_points 300 --coarse_iterations 4 {shlex.join(SMALL_NET)}"


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject (12 frames at 32x32)."""
    return make_dataset(tmp_path_factory.mktemp("profile") / "subject", frames=12, size=32, fps=4)


def test_profile_times_each_part_of_fresh_fine_steps(
    subject: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "profile.json"
    argv = ["--reference_path", str(subject), "--steps", "3", "--warmup", "1", "--train_args", TRAIN_ARGS]
    assert train_step_profile.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert_metadata(report, reference_path=str(subject), steps=3)
    assert list(report["parts"]) == list(PARTS) and report["resolution"] == 32
    assert report["gaussians"] > 0 and report["device_busy"] is None, "no CUDA here"
    for name in ("avatar.deform", "avatar.rasterize", "train.loss", "train.backward", "train.optimizer"):
        assert report["parts"][name]["host_ms"] > 0, name
    labelled = sum(p["host_ms"] for p in report["parts"].values())
    assert labelled <= report["step_ms"] * 1.05, "the parts lie inside the step"
    assert report["it_per_s"] == pytest.approx(1000 / report["step_ms"])
    assert report["top_ops"] and report["top_ops"][0]["ms"] >= report["top_ops"][-1]["ms"]
    text = capsys.readouterr().out
    assert "avatar.rasterize" in text and "it/s" in text


def test_profile_of_a_trained_model_leaves_its_folder_unchanged(subject: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert (
        train.main(["-s", str(subject), "-m", str(model), "--iterations", "6", *shlex.split(TRAIN_ARGS)]) == 0
    )
    before = sorted((p.relative_to(model), p.stat().st_mtime_ns) for p in model.rglob("*"))
    argv = ["--reference_path", str(subject), "--model_path", str(model), "--steps", "2", "--warmup", "0"]
    assert train_step_profile.main(argv) == 0
    assert sorted((p.relative_to(model), p.stat().st_mtime_ns) for p in model.rglob("*")) == before
    with pytest.raises(UserError, match="no checkpoint"):
        train_step_profile.main(["--reference_path", str(subject), "--model_path", str(tmp_path / "none")])
