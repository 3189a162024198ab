"""The dataset contract's mouth-loss region: its margins, now applied in one place by the reader
(schema.mouth_loss_region), give the masks of before (mouth_rect grown at write, then again at read), for new
and format-1 datasets."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils import landmark_indices as li
from data_utils.preprocess_config import PreprocessConfig
from data_utils.process import _bounds, write_transforms
from data_utils.schema import FORMAT_VERSION, FORMAT_VERSION_KEY, mouth_loss_region
from scene.dataset import TalkingHeadDataset, _rect_mask
from tests.dataset_factory import make_dataset
from utils.cli import UserError


def padded_rect_before(points: np.ndarray, size: int) -> list[int]:
    """mouth_rect as format 1 wrote it (data_utils.process._rect with pad 0.15), the reference."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    margin = (hi - lo) * 0.15
    lo, hi = np.clip(lo - margin, 0, size), np.clip(hi + margin, 0, size)
    return [int(math.floor(lo[0])), int(math.floor(lo[1])), int(math.ceil(hi[0])), int(math.ceil(hi[1]))]


def mouth_mask_before(padded: list[list[int]], size: int, resolution: int) -> np.ndarray:
    """The mouth-loss masks [T,res,res] that scene.dataset made of format-1 rects, the reference."""
    rects = np.array(padded, dtype=np.float64) * (resolution / size)
    ys, xs = np.arange(resolution)[:, None], np.arange(resolution)[None, :]
    grow = 0.15 * np.maximum(rects[:, 2] - rects[:, 0], rects[:, 3] - rects[:, 1]) + 2
    x0, y0 = rects[:, 0] - grow, rects[:, 1] - grow
    x1, y1 = rects[:, 2] + grow, rects[:, 3] + grow
    return (
        (xs[None] >= x0[:, None, None])
        & (xs[None] <= x1[:, None, None])
        & (ys[None] >= y0[:, None, None])
        & (ys[None] <= y1[:, None, None])
    )


def lip_points(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """Outer-lip landmarks [T,K,2] of `size`-px frames: random boxes, a third of them across the image border,
    and some on whole pixels, on the border lines and wholly outside."""
    rng = np.random.default_rng(seed)
    k = len(li.LIPS_OUTER)
    centre = rng.uniform(0, size, (frames, 1, 2))
    centre[::3] = rng.choice([-0.04, 1.04], (len(centre[::3]), 1, 2)) * size  # across the border
    half = rng.uniform(0.01, 0.2, (frames, 1, 2)) * size
    points = centre + rng.uniform(-1, 1, (frames, k, 2)) * half
    points[1::5] = np.round(points[1::5])
    points[2::7, 0] = [0.0, size]  # lip corners on the border lines
    points[4::9] += 2 * size  # beyond the image
    return points


def json_round_trip(value: object) -> object:
    """`value` written to and read back from JSON, as the dataset files keep it."""
    return json.loads(json.dumps(value))


@pytest.mark.parametrize(("size", "resolution"), [(256, 256), (256, 128), (256, 96), (256, 333), (512, 100)])
def test_mouth_region_of_a_new_dataset_gives_the_two_margin_mask(size: int, resolution: int) -> None:
    lips = lip_points(150, size)
    padded = [padded_rect_before(p, size) for p in lips]
    assert sum(r[0] == 0 or r[2] == size for r in padded) > 40, "many rects at the border"
    stored = json_round_trip([_bounds(p) for p in lips])
    mask = _rect_mask(mouth_loss_region(stored, size, resolution), resolution)
    assert np.array_equal(mask, mouth_mask_before(padded, size, resolution))
    assert mask.any(axis=(1, 2)).all() and mask.mean() < 0.5, "no empty masks to agree on"


@pytest.mark.parametrize(("size", "resolution"), [(256, 256), (256, 96), (512, 100)])
def test_mouth_region_of_a_format_1_rect_is_not_padded_again(size: int, resolution: int) -> None:
    padded = json_round_trip([padded_rect_before(p, size) for p in lip_points(150, size, seed=1)])
    mask = _rect_mask(mouth_loss_region(padded, size, resolution, version=1), resolution)
    assert np.array_equal(mask, mouth_mask_before(padded, size, resolution))


def test_new_and_format_1_datasets_read_the_two_margin_masks(tmp_path: Path) -> None:
    """write_transforms' mouth_rect and a format-1 folder's (rect padded, no format_version) load as the
    masks of the two margins, at the dataset's and at other resolutions."""
    size, frames = 32, 24
    new = make_dataset(tmp_path / "new", frames=frames, size=size, fps=4)
    lms2d = np.random.default_rng(2).uniform(0, size, (frames, 478, 2))
    lms2d[:, li.LIPS_OUTER] = lip_points(frames, size, seed=3)
    track = torch.load(new / "track_params.pt")
    cfg = PreprocessConfig(video=Path("v.mp4"), out_dir=new, fps=4, size=size)
    write_transforms(new, cfg, lms2d, track, np.ones(frames))
    old = tmp_path / "old"
    shutil.copytree(new, old)
    preprocess = json.loads((old / "preprocess.json").read_text())
    del preprocess[FORMAT_VERSION_KEY]
    (old / "preprocess.json").write_text(json.dumps(preprocess))
    padded = [padded_rect_before(p, size) for p in lms2d[:, li.LIPS_OUTER]]
    for split in ("train", "val"):
        meta = json.loads((old / f"transforms_{split}.json").read_text())
        for f in meta["frames"]:
            f["mouth_rect"] = padded[f["img_id"]]
        (old / f"transforms_{split}.json").write_text(json.dumps(meta))
    for root in (new, old):
        for split in ("train", "val"):
            for resolution in (32, 24, 48):
                ds = TalkingHeadDataset(root, split, resolution, targets=False)
                ids = [
                    f["img_id"] for f in json.loads((root / f"transforms_{split}.json").read_text())["frames"]
                ]
                expected = mouth_mask_before([padded[i] for i in ids], size, resolution)
                assert torch.equal(ds.mouth_masks[..., 0], torch.from_numpy(expected)), (root.name, split)


def test_a_newer_format_version_is_refused(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "subject", frames=24, size=32, fps=4)
    preprocess = json.loads((root / "preprocess.json").read_text())
    assert preprocess[FORMAT_VERSION_KEY] == FORMAT_VERSION
    preprocess[FORMAT_VERSION_KEY] = FORMAT_VERSION + 1
    (root / "preprocess.json").write_text(json.dumps(preprocess))
    with pytest.raises(
        UserError, match=f"format version {FORMAT_VERSION + 1}, this code reads up to {FORMAT_VERSION};"
    ):
        TalkingHeadDataset(root, "train")
