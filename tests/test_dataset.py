"""The dataset reader: contract validation, shapes, resizing, audio normalisation and sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene.dataset import TalkingHeadDataset
from tests.dataset_factory import make_dataset
from utils.cli import UserError


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject (24 frames, 32x32)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "subject", frames=24, size=32, fps=4)


def test_loads_split_shapes_and_conditions(data_root: Path) -> None:
    train = TalkingHeadDataset(data_root, "train")
    val = TalkingHeadDataset(data_root, "val", audio_norm=train.audio_norm)
    assert (len(train), len(val)) == (20, 4)
    assert train.audio_shape == (8, 4)
    batch = train.get(torch.tensor([0, 3]))
    assert batch.image.shape == batch.background.shape == (2, 32, 32, 3)
    assert batch.head_mask.shape == batch.mouth_mask.shape == (2, 32, 32, 1)
    assert batch.viewmat.shape == (2, 4, 4) and batch.K.shape == (2, 3, 3) and batch.cam.shape == (2, 12)
    assert batch.eye.shape == (2, 1) and batch.face_rect.shape == (2, 4)
    assert float(batch.image.min()) >= 0 and float(batch.image.max()) <= 1
    # viewmat is the inverse of the camera-to-world in `cam`
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[:, :3, :] = batch.cam.reshape(2, 3, 4)
    assert torch.allclose(batch.viewmat @ c2w, torch.eye(4).expand(2, 4, 4), atol=1e-4)
    # mouth mask covers the mouth rectangle, head mask is mostly inside the face region
    assert 0 < float(batch.mouth_mask.mean()) < 0.5 and float(batch.head_mask.mean()) > 0.1
    # audio is normalised per channel on the training split
    feats = train.audio
    assert torch.allclose(feats.mean(dim=(0, 2)), torch.zeros(8), atol=1e-4)
    assert torch.allclose(feats.std(dim=(0, 2), unbiased=False), torch.ones(8), atol=1e-3)
    assert val.audio_norm == train.audio_norm


def test_background_is_torso_over_bc(data_root: Path) -> None:
    ds = TalkingHeadDataset(data_root, "train")
    batch = ds.get(torch.tensor([1]))
    # outside head and torso the frame equals the background (up to JPEG noise)
    parsing = np.asarray(Image.open(data_root / "parsing" / "1.png"))
    bg_only = (parsing == 255).all(-1)
    diff = (batch.image[0] - batch.background[0]).abs().mean(-1).numpy()
    assert diff[bg_only].mean() < 0.03


def test_without_targets_only_backgrounds_load(data_root: Path) -> None:
    full = TalkingHeadDataset(data_root, "train")
    light = TalkingHeadDataset(data_root, "train", targets=False)
    assert light.images is None and light.head_masks is None and len(light) == len(full)
    batch, reference = light.get(torch.tensor([0, 3])), full.get(torch.tensor([0, 3]))
    assert batch.image is None and batch.head_mask is None
    assert torch.equal(batch.background, reference.background)
    assert torch.equal(batch.viewmat, reference.viewmat) and torch.equal(batch.audio, reference.audio)


def test_resolution_scales_images_and_intrinsics(data_root: Path) -> None:
    full = TalkingHeadDataset(data_root, "train")
    half = TalkingHeadDataset(data_root, "train", resolution=16)
    assert half.get(torch.tensor([0])).image.shape == (1, 16, 16, 3)
    assert torch.allclose(half.Ks[0, :2], full.Ks[0, :2] / 2)
    assert torch.allclose(half.face_rects, full.face_rects / 2)


def test_sample_is_reproducible(data_root: Path) -> None:
    ds = TalkingHeadDataset(data_root, "train")
    a = ds.sample(3, torch.Generator().manual_seed(5)).index
    b = ds.sample(3, torch.Generator().manual_seed(5)).index
    assert torch.equal(a, b) and a.shape == (3,)
    assert ds.evenly_spaced(8).tolist() == [0, 2, 5, 7, 10, 12, 15, 17]


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("transforms_train.json", "has no transforms_train.json; run ./preprocess.sh first"),
        ("bc.jpg", "has no bc.jpg"),
        ("torso_imgs/3.png", "has no torso_imgs/3.png"),
        ("aud_logmel.npy", "has no aud_logmel.npy"),
        ("preprocess.json", "has no preprocess.json"),
    ],
)
def test_missing_file_is_named(data_root: Path, tmp_path: Path, remove: str, message: str) -> None:
    root = tmp_path / "copy"
    shutil.copytree(data_root, root)
    (root / remove).unlink()
    with pytest.raises(UserError, match=message):
        TalkingHeadDataset(root, "train")


def test_missing_key_is_named(data_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(data_root, root)
    meta = json.loads((root / "transforms_train.json").read_text())
    del meta["frames"][0]["mouth_rect"]
    (root / "transforms_train.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="mouth_rect"):
        TalkingHeadDataset(root, "train")


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        TalkingHeadDataset(tmp_path / "nope", "train")
