"""Photometric pose refinement (preprocess stage refine_poses) on a generated clip with known poses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from data_utils.pose_refine import (
    PoseRefineConfig,
    apply_corrections,
    correction_summary,
    fit_corrections,
)
from data_utils.process import Timings, run_pose_refinement
from data_utils.quality import format_report
from scene.dataset import TalkingHeadDataset
from tests.dataset_factory import make_dataset

PERTURBED = {"train": (4, 11), "val": (2,)}
ERROR_DEG = 3.0


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject whose transforms hold the true poses (24 frames at 48 px; 20 train, 4 val)."""
    return make_dataset(tmp_path_factory.mktemp("refine") / "subject", frames=24, size=48, fps=4)


def _viewmats(root: Path) -> torch.Tensor:
    """World->camera matrices [T,4,4] of the train then val frames."""
    return TalkingHeadDataset(root, "all", targets=False).viewmats.double()


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Angle [T] between the rotations of viewmats a and b [T,4,4]."""
    rel = a[:, :3, :3] @ b[:, :3, :3].transpose(1, 2)
    return np.degrees(Rotation.from_matrix(rel.numpy()).magnitude())


def test_refinement_undoes_a_known_pose_error(clean: Path, tmp_path: Path) -> None:
    noisy = tmp_path / "noisy"
    shutil.copytree(clean, noisy)
    error = torch.zeros(len(_viewmats(clean)), 6, dtype=torch.float64)
    num_train = len(TalkingHeadDataset(clean, "train", targets=False))
    for split, frames in PERTURBED.items():
        for i in frames:
            error[i + (num_train if split == "val" else 0), 1] = np.radians(ERROR_DEG)
    apply_corrections(noisy, error)
    before = _angle_deg(_viewmats(noisy), _viewmats(clean))
    assert before.max() == pytest.approx(ERROR_DEG, abs=1e-3)

    cfg = PoseRefineConfig(steps=300, size=48, init_points=1500, max_gaussians=3000, lr_pose=2e-3)
    corrections = fit_corrections(noisy, cfg, torch.device("cpu"))
    assert corrections.shape == (24, 6) and torch.allclose(
        corrections.mean(0), torch.zeros(6, dtype=corrections.dtype), atol=1e-6
    )
    apply_corrections(noisy, corrections)
    after = _angle_deg(_viewmats(noisy), _viewmats(clean))
    hit = before > 1.0
    assert after[hit].mean() < 0.5 * before[hit].mean(), (before, after)
    assert after[~hit].mean() < 1.0
    summary = correction_summary(corrections, num_val=4)
    assert summary["pose_refine_train_deg"] > 0 and summary["pose_refine_val_deg"] > 0


def test_all_split_is_train_then_val(clean: Path) -> None:
    frames = lambda s: [
        f["img_id"] for f in json.loads((clean / f"transforms_{s}.json").read_text())["frames"]
    ]
    everything = TalkingHeadDataset(clean, "all", targets=False)
    assert len(everything) == len(frames("train")) + len(frames("val"))
    assert torch.equal(everything.viewmats[-4:], TalkingHeadDataset(clean, "val", targets=False).viewmats)


def test_preprocess_stage_rewrites_cameras_and_reports(clean: Path, tmp_path: Path) -> None:
    root = tmp_path / "subject"
    shutil.copytree(clean, root)
    record = {**json.loads((root / "preprocess.json").read_text()), "val_frames": 4}
    track = torch.load(root / "track_params.pt", weights_only=False)
    before = _viewmats(root)
    run_pose_refinement(root, 10, track, record, Timings(), frames=24)
    saved = json.loads((root / "preprocess.json").read_text())
    assert "refine_poses" in saved["timings"]
    assert saved["quality"]["pose_refine_train_deg"] > 0 and saved["quality"]["pose_refine_val_deg"] > 0
    assert "pose refinement" in format_report(saved["quality"] | _quality_rows())
    corrections = torch.load(root / "track_params.pt", weights_only=False)["pose_refinement"]
    assert corrections.shape == (24, 6)
    assert not torch.allclose(_viewmats(root), before)


def _quality_rows() -> dict:
    """The report fields format_report always prints, for a report made by hand."""
    return {
        "frames_gap_filled": 0,
        "longest_gap_frames": 0,
        "landmark_jitter_raw_px": 0.0,
        "reproj_err_max_px": 0.0,
        "face_width_frac": 0.4,
        "upscale": 1.0,
        "max_abs_yaw_deg": 0.0,
        "mean_luma": 120.0,
        "mean_sharpness": 300.0,
    }
