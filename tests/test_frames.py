"""Tests of evaluation.frames (the one frame scorer) and that every caller scores the same frame the same way:
training validation, render_direct's metrics.json, bench/evaluate.py and
bench/diagnostics/error_regions.py."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench import evaluate as bench_evaluate
from bench.diagnostics import error_regions
from evaluation.frames import (
    FrameScores,
    face_slices,
    load_ground_truth,
    mean_scores,
    resize_ground_truth,
    score_frame,
    score_frames,
)
from scene import inference, predict_cli, prediction, train_config, trainer
from scene.dataset import FrameBatch, TalkingHeadDataset, read_transforms
from scene.deformation import DeformConfig
from tests.dataset_factory import make_dataset
from utils.cli import UserError

DATA_SIZE = 64


def _image(seed: int = 0, size: int = 32, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """A random float image [size,size,3] with values in [lo, hi]."""
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(size, size, 3, generator=gen)


def _signs(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Random +1/-1 of `shape`."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


def test_identical_images_give_inf_psnr_and_unit_ssim() -> None:
    img = _image()
    s = score_frame(img, img.clone(), [4, 4, 20, 20])
    assert s.psnr == math.inf and s.face_psnr == math.inf
    assert s.ssim == pytest.approx(1.0, abs=1e-6) and s.face_ssim == pytest.approx(1.0, abs=1e-6)
    assert s.lpips is None


def test_known_noise_gives_the_psnr_of_the_formula() -> None:
    gt = _image(1, 40, 0.2, 0.8)
    sigma = 0.05
    noisy = gt + sigma * _signs(2, gt.shape)  # squared error sigma^2 at every pixel
    s = score_frame(noisy, gt, [0, 0, 40, 40])
    assert s.psnr == pytest.approx(-10 * math.log10(sigma**2), abs=1e-3)
    assert s.face_psnr == pytest.approx(s.psnr, abs=1e-6) and s.ssim < 1.0

    # noise only inside the face box: the face PSNR is the formula's, the full frame has area/total of it
    box = [8, 4, 28, 34]  # 20 x 30 px
    inside = gt.clone()
    inside[4:34, 8:28] = noisy[4:34, 8:28]
    s = score_frame(inside, gt, box)
    assert s.face_psnr == pytest.approx(-10 * math.log10(sigma**2), abs=1e-3)
    assert s.psnr == pytest.approx(-10 * math.log10(sigma**2 * 20 * 30 / 40**2), abs=1e-3)
    assert s.ssim > s.face_ssim


def test_uint8_float_numpy_and_tensor_inputs_agree() -> None:
    a = (_image(3) * 255).round().to(torch.uint8)
    b = (_image(4) * 255).round().to(torch.uint8)
    box = [2.0, 3.0, 25.0, 30.0]
    ref = score_frame(a, b, box)
    for pred, gt in (
        (a.numpy(), b.numpy()),
        (a.float() / 255, b.float() / 255),
        (a.numpy(), b.float() / 255),
    ):
        s = score_frame(pred, gt, box)
        for key in ("psnr", "ssim", "face_psnr", "face_ssim"):
            assert getattr(s, key) == pytest.approx(getattr(ref, key), rel=1e-5)


def test_face_box_is_rounded_half_to_even_and_clipped() -> None:
    assert face_slices([-5, 2.4, 10, 30], 20, 20) == (slice(2, 20), slice(0, 10))
    assert face_slices([2.5, 3.5, 7.5, 8.5], 20, 20) == (slice(4, 8), slice(2, 8))
    assert face_slices(torch.tensor([1.6, 0.4, 5.2, 6.7]), 20, 20) == (slice(0, 7), slice(2, 5))


def test_box_partly_outside_scores_the_clipped_box() -> None:
    gt = _image(5, 24)
    pred = _image(6, 24)
    s = score_frame(pred, gt, [-10.0, 12.2, 17.0, 99.0])
    inside = score_frame(pred[12:24, 0:17], gt[12:24, 0:17], [0, 0, 17, 12])
    assert s.face_psnr == pytest.approx(inside.psnr, rel=1e-6)
    assert s.face_ssim == pytest.approx(inside.ssim, rel=1e-6)


@pytest.mark.parametrize(
    "box",
    [[25, 0, 30, 5], [-9, -9, -1, 10], [5, 5, 5, 10], [6, 5, 4, 10], [3, 3, 3.4, 9], [0, 0, math.nan, 4]],
)
def test_empty_or_invalid_box_raises(box: list[float]) -> None:
    img = _image(7, 20)
    with pytest.raises(ValueError, match="empty|finite"):
        score_frame(img, img, box)


def test_size_mismatch_raises_and_the_ground_truth_helper_resizes_to_the_render() -> None:
    render = _image(8, 32)
    gt_big = (_image(9, 64) * 255).round().to(torch.uint8).numpy()
    with pytest.raises(ValueError, match="differ in size"):
        score_frame(render, gt_big, [0, 0, 32, 32])
    gt = resize_ground_truth(gt_big, 32, 32)
    assert gt.shape == (32, 32, 3) and gt.dtype == np.uint8
    assert np.isfinite(score_frame(render, gt, [0, 0, 32, 32]).psnr)
    assert resize_ground_truth(gt_big, 64, 64) is gt_big
    assert resize_ground_truth(gt_big, 20, 48).shape == (20, 48, 3)


def test_ground_truth_resize_is_antialiased() -> None:
    stripes = np.zeros((96, 96, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: point sampling at a 3x downscale would keep black or white columns
    small = resize_ground_truth(stripes, 32, 32).astype(np.float64)
    assert abs(small.mean() - stripes.mean()) < 3 and small.std() < 0.25 * stripes.std()
    flat = np.full((50, 70, 3), 77, np.uint8)
    assert np.all(resize_ground_truth(flat, 20, 30) == 77)


def test_load_ground_truth_reads_resizes_and_names_a_broken_file(tmp_path: Path) -> None:
    rgb = (_image(10, 40) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(rgb).save(tmp_path / "0.png")
    np.testing.assert_array_equal(load_ground_truth(tmp_path / "0.png", 40, 40), rgb)
    assert load_ground_truth(tmp_path / "0.png", 16, 24).shape == (16, 24, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="bad.jpg"):
        load_ground_truth(tmp_path / "bad.jpg", 16, 16)


def test_mean_scores_skips_non_finite_and_reports_lpips_only_when_measured() -> None:
    rows = [FrameScores(math.inf, 1.0, 30.0, 0.5), FrameScores(20.0, 0.5, math.inf, 0.7)]
    assert mean_scores(rows) == {
        "psnr": 20.0,
        "ssim": 0.75,
        "face_psnr": 30.0,
        "face_ssim": pytest.approx(0.6),
    }
    with_lpips = [*rows, FrameScores(40.0, 0.0, 10.0, 0.0, lpips=0.25)]
    assert mean_scores(with_lpips)["lpips"] == 0.25 and mean_scores(with_lpips)["psnr"] == 30.0
    assert all(math.isnan(v) for v in mean_scores([]).values())


def test_score_frames_scores_each_frame_and_checks_batch_sizes() -> None:
    preds, gts = torch.stack([_image(11), _image(12)]), torch.stack([_image(13), _image(14)])
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 32.0, 32.0]])
    scores = score_frames(preds, gts, boxes)
    assert scores == [score_frame(preds[k], gts[k], boxes[k]) for k in range(2)]
    with pytest.raises(ValueError, match="batch sizes"):
        score_frames(preds, gts[:1], boxes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_cpu_scores_agree() -> None:
    pred, gt, box = _image(15), _image(16), [3, 4, 28, 30]
    cpu, cuda = score_frame(pred, gt, box), score_frame(pred.cuda(), gt.cuda(), box)
    for key in ("psnr", "ssim", "face_psnr", "face_ssim"):
        assert getattr(cuda, key) == pytest.approx(getattr(cpu, key), rel=1e-4)


# --- every caller scores the same render the same way ---------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject at 64 px (8 validation frames)."""
    return make_dataset(tmp_path_factory.mktemp("frames") / "subject", frames=16, size=DATA_SIZE, fps=8)


def _fake_render(batch: FrameBatch) -> torch.Tensor:
    """A deterministic 'render' of each frame: its ground truth plus noise on the uint8 grid (writing it as
    uint8 loses nothing) growing from left to right, so a face box shifted by a pixel scores differently."""
    out = []
    for gt, index in zip(batch.image, batch.index.tolist(), strict=True):
        gen = torch.Generator().manual_seed(int(index))
        h, w = gt.shape[:2]
        ramp = 1 + 4 * torch.arange(w, dtype=torch.float32)[None, :, None] / w
        noise = (torch.randint(-6, 7, (h, w, 3), generator=gen).float() * ramp).round()
        out.append(((gt * 255).round() + noise).clamp(0, 255) / 255)
    return torch.stack(out)


class _FakeAvatar:
    """Stands in for a trained avatar: render() returns _fake_render for any stage."""

    deform_cfg = DeformConfig(audio_code="free")  # no lip predictor to score

    def render(self, batch: FrameBatch, stage: str = "fine", backend: str = "auto") -> SimpleNamespace:
        return SimpleNamespace(image=_fake_render(batch))


@pytest.mark.parametrize("resolution", [DATA_SIZE, 32])
def test_every_caller_gives_the_same_full_and_face_scores(
    data_root: Path, resolution: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = TalkingHeadDataset(data_root, "val", resolution)
    n = len(ds)

    # training validation
    cfg = train_config.TrainConfig().with_values({"num_eval_frames": n, "batch_size": 3})
    val, _, _ = trainer.evaluate(_FakeAvatar(), ds, "fine", cfg)

    # render_direct's metrics.json (predict.predict_direct): uint8 frames as written to the video
    direct = predict_cli.RenderScores()
    for batch in prediction.dataset_batches(ds, 3):
        direct.add(batch, inference.to_uint8(_fake_render(batch)))
    direct_metrics = direct.summary()

    # bench/evaluate.py: the video's frames against gt_imgs at the source size, resized to the video's size
    video_frames = [inference.to_uint8(_fake_render(b))[0] for b in prediction.dataset_batches(ds, 1)]
    monkeypatch.setattr(bench_evaluate, "read_video_frames", lambda _video: iter(video_frames))
    monkeypatch.setattr(bench_evaluate, "load_lpips_metric", lambda: (None, "not measured"))
    frames = read_transforms(data_root, "val")["frames"]
    bench = bench_evaluate.image_quality(Path("video.mp4"), data_root, frames, DATA_SIZE)
    assert bench["frames_compared"] == n and bench["size"] == [resolution, resolution]

    # bench/diagnostics/error_regions.py
    args = argparse.Namespace(batch_size=3)
    regions, _ = error_regions.measure_split(_FakeAvatar(), torch.arange(n), ds, args, fit=False)

    assert np.isfinite(val["val_psnr_face"]) and val["val_psnr_face"] != pytest.approx(
        val["val_psnr"], abs=0.1
    )
    for full, face in (("psnr", "face_psnr"), ("ssim", "face_ssim")):
        val_full, val_face = val[trainer.VAL_KEYS[full]], val[trainer.VAL_KEYS[face]]
        assert direct_metrics[full] == pytest.approx(val_full, abs=1e-4)
        assert direct_metrics[face] == pytest.approx(val_face, abs=1e-4)
        assert bench[full] == pytest.approx(val_full, abs=1e-4)
        assert bench[face] == pytest.approx(val_face, abs=1e-4)
    assert np.mean(regions["full"]) == pytest.approx(val["val_psnr"], abs=1e-4)
    assert np.mean(regions["face"]) == pytest.approx(val["val_psnr_face"], abs=1e-4)
    assert np.mean(regions["static_face"]) == pytest.approx(val["val_psnr_face"], abs=1e-4)


def test_face_box_of_another_rounding_scores_differently(data_root: Path) -> None:
    """The agreement above is not vacuous: a face box one pixel off changes the face PSNR of these renders."""
    ds = TalkingHeadDataset(data_root, "val", DATA_SIZE)
    batch = ds.get(torch.arange(len(ds)))
    pred = _fake_render(batch)
    exact = mean_scores(score_frames(pred, batch.image, batch.face_rect))["face_psnr"]
    shifted = mean_scores(score_frames(pred, batch.image, batch.face_rect + torch.tensor([1.0, 0, 1.0, 0])))
    assert abs(shifted["face_psnr"] - exact) > 1e-3


def test_bench_ground_truth_is_the_datasets_at_every_resolution(data_root: Path) -> None:
    frames = read_transforms(data_root, "val")["frames"]
    ids = [f["img_id"] for f in frames]
    for resolution in (DATA_SIZE, 40, 32):
        ds = TalkingHeadDataset(data_root, "val", resolution)
        bench = np.stack(list(bench_evaluate._gt_frames(data_root, ids, (resolution, resolution))))
        np.testing.assert_array_equal(bench, ds.images.numpy())
