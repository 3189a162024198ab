"""Tests of the Basel Face Model installer (download_bfm.sh), the torch model and the "bfm" tracker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from data_utils import landmark_indices as li
from data_utils.bfm.install import install, main
from data_utils.bfm.model import COMPACT_NAME, METADATA_NAME, BFMModel
from data_utils.bfm.tracker import BFMTracker
from data_utils.trackers import get_tracker
from tests.bfm_factory import TinyBFM, make_tiny_bfm
from utils.cli import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE, FOCAL, FRAMES = 512, 1.3 * 512, 40


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyBFM:
    """The tiny model's source files (Deep3DFaceRecon-style landmarks)."""
    return make_tiny_bfm(tmp_path_factory.mktemp("bfm_src") / "BFM")


@pytest.fixture(scope="module")
def installed(tiny: TinyBFM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model installed into a temporary cache: the install folder."""
    dest = tmp_path_factory.mktemp("cache") / "bfm"
    install(tiny.folder, dest)
    return dest


def _leftovers(root: Path) -> list[str]:
    """Names of everything under `root` (empty when an aborted install left nothing behind)."""
    return sorted(p.name for p in root.rglob("*")) if root.exists() else []


def _run_installer(*args: str, cache: Path) -> subprocess.CompletedProcess:
    """Run download_bfm.sh with EGSTALKER_CACHE=cache; capture its output."""
    env = dict(os.environ, EGSTALKER_CACHE=str(cache), EGSTALKER_PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(REPO / "download_bfm.sh"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_install_writes_compact_model(tiny: TinyBFM, installed: Path) -> None:
    assert sorted(p.name for p in installed.iterdir()) == sorted([COMPACT_NAME, METADATA_NAME])
    model = BFMModel.load(installed)
    v = tiny.num_trimmed
    assert model.mean_shape.shape == (v, 3) and model.id_basis.shape == (80, v, 3)
    assert model.exp_basis.shape == (64, v, 3) and model.tex_mean.shape == (v, 3)
    assert model.triangles.max() < v and model.triangles.shape[1] == 3
    np.testing.assert_array_equal(model.keypoint_idx.numpy(), tiny.keypoints)
    width = float(np.ptp(model.mean_shape[:, 0].numpy()))
    assert 1.2 < width < 2.0  # decimetres, like the default tracker's head space
    nose_z = model.mean_shape[model.mean_shape[:, 0].abs() < 0.1][:, 2].min()
    assert nose_z < model.mean_shape[:, 2].mean()  # z points away from the viewer
    meta = model.metadata
    assert meta["sources"]["Exp_Pca.bin"]["sha256"] and meta["keypoints_source"].startswith("facemodel_info")
    verts = model.vertices(torch.zeros(2, 80), torch.zeros(2, 64))
    torch.testing.assert_close(verts[0], model.mean_shape)
    assert model.keypoints(torch.randn(3, 80), torch.randn(3, 64)).shape == (3, 68, 3)


def test_cli_check_and_reinstall_needs_force(tiny: TinyBFM, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EGSTALKER_CACHE", str(tmp_path))
    assert main(["--from", str(tiny.folder)]) == 0
    assert main(["--check"]) == 0
    with pytest.raises(UserError, match="--force"):
        main(["--from", str(tiny.folder)])
    assert main(["--from", str(tiny.folder), "--force"]) == 0
    (tmp_path / "bfm" / COMPACT_NAME).write_bytes(b"damaged")
    with pytest.raises(UserError, match="reinstall"):
        main(["--check"])


def test_keypoints_file_option(tmp_path: Path) -> None:
    tiny = make_tiny_bfm(tmp_path / "src", seed=1, deep3d_keypoints=False)
    install(tiny.folder, tmp_path / "bfm", keypoints=tiny.keypoints_txt)
    np.testing.assert_array_equal(BFMModel.load(tmp_path / "bfm").keypoint_idx.numpy(), tiny.keypoints)
    with pytest.raises(UserError, match="front mesh"):
        install(tiny.folder, tmp_path / "front", keypoints=tiny.keypoints_txt, keypoint_space="front")
    assert _leftovers(tmp_path / "front") == []
    full = tmp_path / "full_mesh_keypoints.npy"
    np.save(full, tiny.trim[tiny.keypoints])
    assert (
        main(
            [
                "--from",
                str(tiny.folder),
                "--dest",
                str(tmp_path / "full"),
                "--keypoints",
                str(full),
                "--keypoints_space",
                "full",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(BFMModel.load(tmp_path / "full").keypoint_idx.numpy(), tiny.keypoints)


@pytest.mark.parametrize("name", ["Exp_Pca.bin", "01_MorphableModel.mat", "BFM_exp_idx.mat"])
def test_truncated_file_rejected_leaving_nothing(tiny: TinyBFM, tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(tiny.folder, src)
    data = (src / name).read_bytes()
    (src / name).write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as err:
        main(["--from", str(src), "--dest", str(cache / "bfm")])
    assert name in str(err.value) and "\n" not in str(err.value) and "again" in str(err.value)
    assert _leftovers(cache) == []


def test_wrong_checksum_rejected(tiny: TinyBFM, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="SHA-256"):
        main(
            [
                "--from",
                str(tiny.folder),
                "--dest",
                str(tmp_path / "bfm"),
                "--sha256",
                "Exp_Pca.bin=" + "0" * 64,
            ]
        )
    assert _leftovers(tmp_path) == []


def test_no_files_or_offline_explains_what_to_get(tmp_path: Path) -> None:
    for args in ([], ["--url", "http://127.0.0.1:9/01_MorphableModel.mat"]):
        proc = _run_installer(*args, cache=tmp_path)
        assert proc.returncode != 0
        message = proc.stderr.strip()
        assert "\n" not in message
        assert "Basel Face Model 2009" in message and "Deep3DFaceRecon" in message and "--from" in message
    assert _leftovers(tmp_path) == []
    with pytest.raises(UserError, match="download_bfm.sh"):
        BFMModel.load(tmp_path / "bfm")


def test_install_from_url_archive(tiny: TinyBFM, tmp_path: Path) -> None:
    archive = tmp_path / "bfm_files.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in tiny.folder.iterdir():
            zf.write(path, f"BFM/{path.name}")
    assert main(["--url", archive.as_uri(), "--dest", str(tmp_path / "bfm")]) == 0
    assert BFMModel.load(tmp_path / "bfm").num_vertices == tiny.num_trimmed


def test_get_tracker_bfm_needs_install(installed: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EGSTALKER_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="download_bfm.sh"):
        get_tracker("bfm")
    monkeypatch.setenv("EGSTALKER_CACHE", str(installed.parent))
    tracker = get_tracker("bfm")
    assert isinstance(tracker, BFMTracker) and tracker.name == "bfm"


def synthetic_clip(model: BFMModel, mp_vertices: np.ndarray, frames: int = FRAMES) -> dict:
    """Known identity, expressions, poses and focal -> 478 points [T,478,2], depths [T,478] and the truth."""
    rng = np.random.default_rng(1)
    t = np.arange(frames) / 25.0
    id_coeff = torch.tensor(rng.normal(size=80) * 0.5, dtype=torch.float32)
    phase, amp = rng.uniform(0, 6, 64), rng.uniform(0.3, 1.2, 64)
    exp = amp * np.sin(2 * np.pi * (0.3 + 0.05 * np.arange(64)) * t[:, None] + phase)
    exp_coeff = torch.tensor(exp, dtype=torch.float32)
    angles = np.stack([0.15 * np.sin(2.1 * t), 0.35 * np.sin(1.3 * t + 0.5), 0.08 * np.sin(3.0 * t)], axis=1)
    rots = Rotation.from_euler("xyz", angles).as_matrix()
    trans = np.stack([0.1 * np.sin(t), 0.05 * np.cos(t), 5.3 + 0.2 * np.sin(0.7 * t)], axis=1)
    verts = (
        model.vertices(id_coeff.expand(frames, -1), exp_coeff, torch.as_tensor(mp_vertices)).double().numpy()
    )
    cam = np.einsum("tij,tnj->tni", rots, verts) + trans[:, None]
    lms = FOCAL * cam[..., :2] / cam[..., 2:3] + SIZE / 2
    z = FOCAL * (cam[..., 2] - trans[:, None, 2]) / trans[:, None, 2]  # MediaPipe-like pixel-scaled depth
    return {"lms": lms, "z": z, "R": rots, "id": id_coeff, "exp": exp_coeff}


def test_tracker_recovers_pose_expression_and_correspondence(tiny: TinyBFM, installed: Path) -> None:
    tracker = BFMTracker(device="cpu", cache_dir=installed)
    model = tracker.model
    clip = synthetic_clip(model, tiny.mp_vertices)
    lms = clip["lms"].copy()
    lms[7] = np.nan  # a frame without a face
    res = tracker.fit(lms, None, SIZE, 25.0, progress=False)

    rel = np.einsum("tji,tjk->tik", clip["R"], res.R)
    rot_err = np.degrees(np.linalg.norm(Rotation.from_matrix(rel).as_rotvec(), axis=1))
    assert np.median(rot_err) < 2.0 and rot_err.max() < 4.0
    kp_exp = model.exp_basis[:, model.keypoint_idx]
    true_motion = torch.einsum("tk,kvc->tvc", clip["exp"], kp_exp).numpy()
    fit_motion = torch.einsum("tk,kvc->tvc", torch.as_tensor(res.exp_coeff), kp_exp).numpy()
    valid = np.arange(FRAMES) != 7
    assert np.corrcoef(true_motion[valid].ravel(), fit_motion[valid].ravel())[0, 1] > 0.9
    assert np.corrcoef(clip["exp"][valid, :10].ravel(), res.exp_coeff[valid, :10].ravel())[0, 1] > 0.85
    assert np.isnan(res.reproj_err[7]) and np.nanmax(res.reproj_err) < 0.5
    assert (res.vertex_idx == tiny.mp_vertices).mean() > 0.9

    track = res.to_dict()
    assert track["shape"].shape == (li.NUM_LANDMARKS, 3) and track["R"].shape == (FRAMES, 3, 3)
    assert track["tracker"] == "bfm" and track["bfm_exp_coeff"].shape == (FRAMES, 64)
    assert track["bfm_vertices"].shape == (tiny.num_trimmed, 3) and track["bfm_id_coeff"].shape == (80,)


def test_tracker_picks_keypoints_when_install_has_none(tmp_path: Path) -> None:
    tiny = make_tiny_bfm(tmp_path / "src", seed=1, deep3d_keypoints=False)
    meta = install(tiny.folder, tmp_path / "bfm")
    assert (
        meta["keypoints_source"].startswith("none")
        and main(["--check", "--dest", str(tmp_path / "bfm")]) == 0
    )
    tracker = BFMTracker(device="cpu", cache_dir=tmp_path / "bfm")
    assert tracker.model.keypoint_idx.numel() == 0
    clip = synthetic_clip(tracker.model, tiny.mp_vertices)
    res = tracker.fit(clip["lms"], clip["z"], SIZE, 25.0, progress=False)
    mean = tracker.model.mean_shape.numpy()
    assert np.linalg.norm(mean[res.keypoint_idx] - mean[tiny.keypoints], axis=1).mean() < 0.25  # decimetres
    rel = Rotation.from_matrix(np.einsum("tji,tjk->tik", clip["R"], res.R))
    drift = np.degrees(np.linalg.norm((rel.mean().inv() * rel).as_rotvec(), axis=1))
    assert np.median(drift) < 3.0 and np.nanmean(res.reproj_err) < 5.0
