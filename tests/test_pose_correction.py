"""Rigid-motion maths and the learned per-frame pose corrections: exact rotations, gauge fixing, that a
known pose error is recovered through the CPU rasterizer, and that training saves and predict applies them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import predict
import train
from bench.diagnostics import error_regions
from scene.checkpoint import load_avatar, load_checkpoint
from scene.dataset import TalkingHeadDataset
from scene.pose_correction import PoseCorrection, correct_viewmats, corrected_if_matching
from tests.dataset_factory import make_dataset
from tests.test_bench import assert_metadata
from utils.rigid import rigid_matrix, so3_exp

SMALL_NET = [
    *("--triplane_resolutions", "16", "--triplane_channels", "8"),
    *("--token_dim", "16", "--kan_hidden", "8"),
]


def test_so3_exp_matches_scipy_and_is_smooth_at_zero() -> None:
    aa = torch.tensor(np.random.default_rng(0).normal(size=(50, 3)), dtype=torch.float64)
    aa[:5] *= 1e-6  # tiny angles take the series branch
    expected = torch.from_numpy(Rotation.from_rotvec(aa.numpy()).as_matrix())
    assert torch.allclose(so3_exp(aa), expected, atol=1e-10)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(so3_exp, zero)  # dR/d(aa) at 0 = the skew generators
    assert torch.isfinite(jac).all()
    assert torch.allclose(
        jac[:, :, 0], torch.tensor([[0, 0, 0], [0, 0, -1], [0, 1, 0.0]], dtype=torch.float64)
    )


def test_rigid_matrix_rotates_then_translates() -> None:
    delta = torch.tensor([0.0, 0.0, np.pi / 2, 1.0, 2.0, 3.0])
    m = rigid_matrix(delta)
    point = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert torch.allclose(m @ point, torch.tensor([1.0, 3.0, 3.0, 1.0]), atol=1e-6)


def test_corrections_start_at_identity_and_keep_zero_mean() -> None:
    pose = PoseCorrection(4, scene_scale=2.0)
    viewmats = torch.linalg.inv(rigid_matrix(torch.randn(4, 6) * 0.1))
    index = torch.tensor([2, 0])
    assert torch.allclose(pose(viewmats[index], index), viewmats[index])
    with torch.no_grad():
        pose.delta.copy_(torch.randn(4, 6) + 5.0)  # a common offset is removed, not applied
    centred = pose.centred()
    assert torch.allclose(centred.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(centred[:, 3:], (pose.delta[:, 3:] - pose.delta[:, 3:].mean(0)) * 2.0)
    assert torch.allclose(pose(viewmats[index], index), correct_viewmats(viewmats[index], centred[index]))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject (16 frames at 32x32)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "subject", frames=16, size=32, fps=4)


@pytest.fixture(scope="module")
def posed_model(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-iteration model trained with pose corrections on."""
    out = tmp_path_factory.mktemp("models") / "posed"
    argv = ["-s", str(data_root), "-m", str(out), "--init_points", "600", *SMALL_NET]
    argv += ["--iterations", "60", "--coarse_iterations", "40", "--eval_every", "60", "--lr_pose", "1e-3"]
    assert train.main(argv) == 0
    return out


def test_known_pose_error_is_recovered_through_the_rasterizer(posed_model: Path, data_root: Path) -> None:
    loaded = load_avatar(posed_model)
    ds = TalkingHeadDataset(data_root, "train", audio_norm=loaded.audio_norm)
    batch = ds.get(torch.arange(4))
    with torch.no_grad():
        batch.image = loaded.avatar.render(batch).image  # the model's own render is the target
    tracked = batch.viewmat
    error = torch.tensor([0.0, 0.03, 0.0, 0.0, 0.0, 0.0])  # 1.7 degrees about y
    wrong = correct_viewmats(tracked, error.expand(4, 6))
    fit = torch.zeros(4, 6, requires_grad=True)
    opt = torch.optim.Adam([fit], lr=2e-3)
    losses = []
    for _ in range(60):
        batch.viewmat = correct_viewmats(wrong, fit)
        loss = (loaded.avatar.render(batch).image - batch.image).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert (fit[:, 1].detach() + 0.03).abs().mean() < 0.01  # the fit undoes the rotation


def test_training_saves_corrections_and_predict_applies_them(posed_model: Path, data_root: Path) -> None:
    state = load_checkpoint(posed_model / "chkpnt60.pth")["pose_correction"]
    assert state["delta"].shape == (len(TalkingHeadDataset(data_root, "train")), 6)
    assert state["delta"].abs().max() > 0
    record = json.loads((posed_model / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["pose_correction_deg"] > 0
    loaded = load_avatar(posed_model)
    ref = TalkingHeadDataset(data_root, "train", audio_norm=loaded.audio_norm, targets=False)
    expected = correct_viewmats(ref.viewmats, loaded.pose_corrections)
    assert torch.allclose(corrected_if_matching(ref.viewmats, loaded.pose_corrections), expected)
    assert not torch.allclose(expected, ref.viewmats)
    other = TalkingHeadDataset(data_root, "val", audio_norm=loaded.audio_norm, targets=False)
    assert torch.equal(corrected_if_matching(other.viewmats, loaded.pose_corrections), other.viewmats)


def test_resume_with_corrections_equals_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    common = ["-s", str(data_root), "--init_points", "400", *SMALL_NET, "--lr_pose", "1e-3"]
    common += ["--iterations", "10", "--coarse_iterations", "5", "--eval_every", "100"]
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert train.main([*common, "-m", str(straight)]) == 0
    assert train.main([*common, "-m", str(pieces), "--stop_at", "5"]) == 0
    assert train.main(["-s", str(data_root), "-m", str(pieces), "--resume"]) == 0
    a, b = load_checkpoint(straight / "chkpnt10.pth"), load_checkpoint(pieces / "chkpnt10.pth")
    assert torch.allclose(a["pose_correction"]["delta"], b["pose_correction"]["delta"], atol=1e-6)


def test_error_regions_bench_reports_every_region(
    posed_model: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "regions.json"
    argv = [
        "--model_path",
        str(posed_model),
        "--reference_path",
        str(data_root),
        "--frames",
        "4",
        "--out",
        str(out),
    ]
    assert error_regions.main([*argv, "--fit_val_poses", "--fit_steps", "5"]) == 0
    record = json.loads(out.read_text())
    assert_metadata(record, reference_path=str(data_root), fit_val_poses=True)
    report = record["psnr"]
    val, train_ds = (TalkingHeadDataset(data_root, s, 32) for s in ("val", "train"))
    gaps = error_regions.pose_gaps(val, train_ds, val.evenly_spaced(4))
    near = int((gaps <= error_regions.NOVEL_POSE_DEG).sum())
    assert gaps.shape == (4,) and np.all(gaps >= 0) and 0 < near < 4, "the fixture has novel and seen poses"
    assert record["val_frames_near"].startswith(f"{near} of 4 within")
    assert set(report) == {"train", "val", "val_near", "val_fit"}
    assert report["val_near"] != report["val"]
    for row in report.values():
        assert set(row) >= {*error_regions.REGIONS, "static_full", "static_face", "composite_outside_head"}
        assert all(np.isfinite(v) and 5 < v < 80 for v in row.values())
    assert report["val"]["composite_outside_head"] == report["val_fit"]["composite_outside_head"]
    assert out.with_suffix(".jpg").is_file()
    assert "val_fit" in capsys.readouterr().out


def test_mean_row_averages_only_the_kept_frames() -> None:
    scores = {"full": [10.0, 20.0, 40.0], "face": [1.0, 2.0, 3.0]}
    row = error_regions.mean_row(scores, np.array([True, False, True]))
    assert row == {"full": 25.0, "face": 2.0}


def test_masked_psnr_counts_only_the_mask() -> None:
    err = torch.zeros(4, 4)
    err[0, 0] = 1.0
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, :2] = True
    assert error_regions.masked_psnr(err, mask) == pytest.approx(-10 * np.log10(0.5))
    assert error_regions.masked_psnr(err, ~mask) > 100


def test_render_direct_of_training_frames_uses_the_corrections(
    posed_model: Path, data_root: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(posed_model, plain)
    checkpoint = load_checkpoint(plain / "chkpnt60.pth")
    checkpoint["pose_correction"] = None
    torch.save(checkpoint, plain / "chkpnt60.pth")
    psnrs = []
    for model in (posed_model, plain):
        out = tmp_path / f"direct_{model.name}"
        argv = [
            "--direct",
            "--split",
            "train",
            "--model_path",
            str(model),
            "--reference_path",
            str(data_root),
        ]
        assert predict.main([*argv, "--output_dir", str(out)]) == 0
        psnrs.append(json.loads((out / "metrics.json").read_text())["psnr"])
    assert psnrs[0] != pytest.approx(psnrs[1], abs=1e-3)
