"""bench.length_curve: shortened datasets and one scored run per share of the training video."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from bench import length_curve
from tests.dataset_factory import make_dataset
from tests.test_bench import assert_metadata
from tests.test_train import SMALL_NET
from utils.cli import UserError


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject (24 frames at 32x32; 20 train, 4 val)."""
    return make_dataset(tmp_path_factory.mktemp("curve") / "subject", frames=24, size=32, fps=4)


def _frames(root: Path, split: str) -> list[dict]:
    """The frames of transforms_<split>.json."""
    return json.loads((root / f"transforms_{split}.json").read_text())["frames"]


def test_shortened_dataset_keeps_the_first_training_frames(subject: Path, tmp_path: Path) -> None:
    before = (subject / "transforms_train.json").read_text()
    short = tmp_path / "short"
    length_curve.shortened_dataset(subject, short, 5)
    assert _frames(short, "train") == _frames(subject, "train")[:5]
    assert _frames(short, "val") == _frames(subject, "val")
    linked = short / "gt_imgs"
    assert linked.is_symlink() and linked.resolve() == (subject / "gt_imgs").resolve()
    assert (subject / "transforms_train.json").read_text() == before, "the source dataset is untouched"
    for bad in (0, 21):
        with pytest.raises(UserError, match="cannot keep"):
            length_curve.shortened_dataset(subject, tmp_path / f"bad{bad}", bad)


def test_length_curve_scores_each_share(subject: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    extra = f"--init_points 400 --coarse_iterations 6 --eval_every 100 {shlex.join(SMALL_NET)}"
    argv = [
        "--reference_path",
        str(subject),
        "--output_dir",
        str(tmp_path),
        "--iterations",
        "12",
        "--frames",
        "4",
    ]
    argv += ["--train_args", extra]
    assert length_curve.main([*argv, "--fractions", "0.5", "1", "--gpus", "0,1"]) == 0
    report = json.loads((tmp_path / "length_curve.json").read_text())
    assert_metadata(report, reference_path=str(subject))
    runs = report["runs"]
    assert [r["train_frames"] for r in runs] == [10, 20]
    assert runs[0]["train_seconds"] == pytest.approx(2.5) and runs[1]["train_seconds"] == pytest.approx(5.0)
    assert all(10 < r[k] < 60 for r in runs for k in ("trainer_val_psnr", "val_full", "train_full"))
    assert runs[0]["pose_gap_deg"] >= runs[1]["pose_gap_deg"] > 0, "fewer training poses lie no closer"
    out = capsys.readouterr().out
    assert "trainer val full / face" in out and "(GPU 0)" in out and "(GPU 1)" in out
    assert "trained 12 iterations" in (tmp_path / "log_10.txt").read_text()
    with pytest.raises(UserError, match="--force"):
        length_curve.main([*argv, "--fractions", "1"])
    assert length_curve.main([*argv, "--fractions", "1", "--force"]) == 0
    assert [r["train_frames"] for r in json.loads((tmp_path / "length_curve.json").read_text())["runs"]] == [
        20
    ]


def test_length_curve_names_the_log_of_a_failed_run(subject: Path, tmp_path: Path) -> None:
    argv = ["--reference_path", str(subject), "--output_dir", str(tmp_path), "--fractions", "1"]
    with pytest.raises(UserError, match="log_20.txt"):
        length_curve.main([*argv, "--train_args=--no_such_option"])
    assert "--no_such_option" in (tmp_path / "log_20.txt").read_text()
    with pytest.raises(UserError, match="--gpus takes GPU indices"):
        length_curve.main([*argv, "--force", "--gpus", "zero"])
