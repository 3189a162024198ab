"""Tests of evaluation.lip_reach: where the predicted lip code changes a render, by distance to the mouth."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils import landmark_indices as li
from evaluation.lip_reach import FAR_MOUTH_WIDTHS, lip_reach, mouth_only_composite

T, H, W = 3, 64, 96
CENTRE, WIDTH = np.array([48.0, 40.0]), 10.0  # the mouth: centre (x, y) and corner distance, pixels


def landmarks(frames: int = T) -> np.ndarray:
    """[frames,478,2] landmarks whose outer lips are centred on CENTRE and whose corners are WIDTH apart."""
    lms = np.full((frames, 478, 2), np.nan)
    lms[:, li.LIPS_OUTER] = CENTRE
    lms[:, li.MOUTH_CORNERS[0]] = CENTRE - [WIDTH / 2, 0]
    lms[:, li.MOUTH_CORNERS[1]] = CENTRE + [WIDTH / 2, 0]
    return lms


def renders(box: tuple[slice, slice], step: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two random [T,H,W,3] uint8 renders that differ by `step` inside `box` (rows, columns) alone."""
    tracked = np.random.default_rng(0).integers(0, 200, (T, H, W, 3), dtype=np.uint8)
    predicted = tracked.copy()
    predicted[:, box[0], box[1]] += step
    return predicted, tracked


def test_a_change_at_the_mouth_alone_reaches_nothing_far_away() -> None:
    predicted, tracked = renders((slice(36, 44), slice(44, 52)))
    reach = lip_reach(predicted, tracked, landmarks())
    assert reach["far_share"] == 0.0 and reach["far_mean"] == 0.0
    assert reach["near_mean"] > 5 and reach["mouth_width_px"] == pytest.approx(WIDTH)


def test_a_change_of_the_hair_is_all_far_and_the_share_splits_by_area() -> None:
    hair = (slice(0, 5), slice(0, W))  # the top rows: more than 3 mouth widths above the mouth
    assert (CENTRE[1] - 5) / WIDTH > FAR_MOUTH_WIDTHS
    reach = lip_reach(*renders(hair), landmarks())
    assert reach["far_share"] == 1.0 and reach["near_mean"] == 0.0
    both_p, both_t = renders(hair)
    both_p[:, 36:44, 44:52] = both_t[:, 36:44, 44:52] + 40  # as much change per pixel at the mouth
    reach = lip_reach(both_p, both_t, landmarks())
    assert reach["far_share"] == pytest.approx(5 * W / (5 * W + 64), abs=1e-3)


def test_identical_renders_and_faceless_frames() -> None:
    _, tracked = renders((slice(0, 1), slice(0, 1)))
    assert lip_reach(tracked, tracked, landmarks())["far_share"] == 0.0
    faceless = landmarks()
    faceless[:] = np.nan
    assert lip_reach(*renders((slice(0, 5), slice(0, W))), faceless)["far_share"] is None
    one_face = faceless.copy()
    one_face[1] = landmarks(1)[0]  # frames without a face are left out
    assert lip_reach(*renders((slice(0, 5), slice(0, W))), one_face)["far_share"] == 1.0
    with pytest.raises(ValueError, match="one shape"):
        lip_reach(tracked[:2], tracked, landmarks())
    with pytest.raises(ValueError, match="landmark frames"):
        lip_reach(tracked, tracked, landmarks(2))


def test_the_mouth_only_composite_keeps_the_mouth_of_one_render_and_the_rest_of_the_other() -> None:
    predicted, tracked = renders((slice(0, H), slice(0, W)))  # the lip code changed every pixel
    out = mouth_only_composite(predicted, tracked, landmarks())
    assert out.dtype == np.uint8 and out.shape == predicted.shape
    assert np.array_equal(out[:, 38:43, 46:51], predicted[:, 38:43, 46:51])  # within a mouth width
    assert np.array_equal(out[:, :5], tracked[:, :5])  # the hair, beyond 2.5 widths
    between = out[:, 40, 48 + 17].astype(int)  # 1.7 widths: blended
    assert ((between > tracked[:, 40, 65]) & (between < predicted[:, 40, 65])).all()
    faceless = np.full_like(landmarks(), np.nan)
    assert np.array_equal(mouth_only_composite(predicted, tracked, faceless), predicted)


def test_lip_gate_scores_the_render_the_tracked_one_and_their_composite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from bench.diagnostics import lip_gate
    from evaluation import lip_reach as reach_module
    from scene.dataset import TalkingHeadDataset
    from tests.dataset_factory import make_dataset
    from utils.video_out import VideoWriter

    data = make_dataset(tmp_path / "data", frames=24, size=64, fps=4)
    val = TalkingHeadDataset(data, "val")
    truth = (val.get(torch.arange(len(val))).image.numpy() * 255).round().astype(np.uint8)
    hair = truth.copy()
    hair[:, :5] = 255 - hair[:, :5]  # the lip code moved the hair: beyond 2.5 mouth widths
    folders = {}
    for name, frames in (("val", hair), ("val_tracked", truth)):
        folders[name] = tmp_path / name
        with VideoWriter(folders[name] / "render.mov", 4, 64, 64) as writer:
            writer.write(frames)
        (folders[name] / "summary.json").write_text(
            json.dumps({"video": str(tmp_path / "gone" / "render.mov")})
        )
    centre = np.array([32.0, 40.0])  # a face the synthetic renders do not show MediaPipe
    monkeypatch.setattr(
        reach_module, "video_landmarks", lambda frames: landmarks(len(frames)) - CENTRE + centre
    )
    argv = [
        "--reference_path",
        str(data),
        "--predicted",
        str(folders["val"]),
        "--tracked",
        str(folders["val_tracked"]),
    ]
    assert lip_gate.main(argv) == 0
    report = json.loads((folders["val"] / "lip_gate.json").read_text())
    psnr = {k: v["psnr"] for k, v in report["psnr"].items()}
    assert psnr["tracked"] > 30 and psnr["predicted"] < psnr["tracked"] - 5  # the hair costs the decibels
    assert psnr["mouth_only_composite"] == pytest.approx(psnr["tracked"], abs=0.1)
    assert report["lip_reach"]["far_share"] > 0.8 and report["frames"] == len(val)
    assert "mouth_only_composite" in capsys.readouterr().out
