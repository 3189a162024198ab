"""bench.diagnostics.lip_predictor on a generated dataset: the lip code's predictor trained alone (as the fine
stage trains it), its held-out correlation and the lip-sync score of other audio, in a JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.diagnostics import lip_predictor
from data_utils.lips import LIP_MEASURES
from scene.dataset import TalkingHeadDataset
from scene.train_config import TrainConfig
from tests.dataset_factory import make_dataset
from utils.cli import UserError


def test_training_fits_the_predictor_to_the_tracked_lips(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", frames=40, size=32, fps=8)
    train_set = TalkingHeadDataset(data, "train", 16, targets=False, lips=True)
    cfg = TrainConfig().with_values({"iterations": 400, "batch_size": 4})
    net = lip_predictor.predictor(train_set, cfg)
    before = (net.predict_lips(train_set.audio) - train_set.lips).square().mean().item()
    losses = lip_predictor.train_predictor(net, train_set.audio, train_set.lips, train_set.audio_norm, cfg)
    with torch.no_grad():
        after = (net.predict_lips(train_set.audio) - train_set.lips).square().mean().item()
    assert len(losses) == 4 and after < 0.5 * before


def test_report_scores_each_audio(tmp_path: Path, speech_wav: Path) -> None:
    data = make_dataset(tmp_path / "data", frames=40, size=32, fps=8)
    out = tmp_path / "report.json"
    argv = [
        "--reference_path",
        str(data),
        "--audio",
        str(speech_wav),
        "--iterations",
        "200",
        "--out",
        str(out),
    ]
    assert lip_predictor.main([*argv, "--folds", "2"]) == 0
    report = json.loads(out.read_text())
    assert (
        report["cv_folds"] == 2
        and report["cv_mse"] >= 0
        and set(report["cv_corr_measures"]) == set(LIP_MEASURES)
    )
    assert report["fine_steps"] == 160 and report["extractor"] == "logmel"
    assert set(report["audio"]) == {speech_wav.name}
    assert {"score", "auc", "lag_frames", "judged"} <= set(report["audio"][speech_wav.name])
    assert report["commit"] and report["arguments"]
    assert report["val_mse"] >= 0 and set(report["val_corr_measures"]) == set(LIP_MEASURES)
    with pytest.raises(UserError, match="ensemble"):
        lip_predictor.main([*argv, "--ensemble", "0"])
    with pytest.raises(UserError, match="folds"):
        lip_predictor.main([*argv, "--folds", "1"])


def test_cross_correlates_another_subjects_audio_with_its_video(tmp_path: Path, speech_wav: Path) -> None:
    data = make_dataset(tmp_path / "data", frames=40, size=32, fps=8)
    other = make_dataset(tmp_path / "other", frames=30, size=32, fps=8, seed=1)
    train_set = TalkingHeadDataset(data, "train", 16, targets=False, lips=True)
    net = lip_predictor.predictor(train_set, TrainConfig())
    net.eval()
    corr = lip_predictor.cross_correlation([net], train_set, other)
    frames = [
        TalkingHeadDataset(other, s, 16, audio_norm=train_set.audio_norm, targets=False, lips=True)
        for s in ("train", "val")
    ]
    audio = torch.cat([f.audio for f in frames])
    tracked = torch.cat([f.lips[:, lip_predictor.OPENING] for f in frames]).numpy()
    expected = lip_predictor.correlation(lip_predictor.predicted_opening([net], audio), tracked)
    assert corr is not None and abs(corr - expected) < 1e-3 and len(tracked) == 30
    out = tmp_path / "report.json"
    argv = ["--reference_path", str(data), "--audio", str(speech_wav), "--iterations", "100"]
    assert lip_predictor.main([*argv, "--cross", str(other), "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["cross"]) == {str(other)}


def test_an_ensemble_averages_its_members(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", frames=40, size=32, fps=8)
    train_set = TalkingHeadDataset(data, "train", 16, targets=False, lips=True)
    cfg = TrainConfig().with_values({"iterations": 50})
    nets = [lip_predictor.predictor(train_set, cfg) for _ in range(2)]
    one, two = (lip_predictor.predicted_opening([n], train_set.audio) for n in nets)
    both = lip_predictor.predicted_opening(nets, train_set.audio)
    assert not np.allclose(one, two) and np.allclose(both, (one + two) / 2, atol=1e-6)


def test_held_out_errors_against_the_mean_and_without_faceless_frames() -> None:
    tracked = np.random.default_rng(3).normal(size=(30, 3))
    tracked[5] = 0.0  # a frame without a face
    perfect = lip_predictor.held_out_errors(tracked.copy(), tracked)
    assert perfect["val_mse"] == 0.0 and all(
        c == pytest.approx(1.0) for c in perfect["val_corr_measures"].values()
    )
    mean = lip_predictor.held_out_errors(np.zeros_like(tracked), tracked)
    assert (
        mean["val_mse"]
        == mean["val_mse_of_mean"]
        == pytest.approx(np.mean(np.delete(tracked, 5, 0) ** 2), abs=1e-4)
    )
    shifted = tracked + 1.0
    shifted[5] = 100.0  # its error must not count
    assert lip_predictor.held_out_errors(shifted, tracked)["val_mse"] == pytest.approx(1.0)


def test_cross_validation_in_time_tells_a_real_mapping_from_none() -> None:
    rng = np.random.default_rng(0)
    x = np.convolve(rng.normal(size=420), np.ones(5) / 5, "same")[:400]  # a smooth "audio" series
    lips = np.stack([x, -x, 0.5 * x], axis=1) + 0.05 * rng.normal(size=(400, 3))
    lips[10] = 0.0  # a frame without a face
    seen: list[np.ndarray] = []

    def linear(ids: np.ndarray):  # least squares from x to each measure on the training frames
        seen.append(ids)
        coef = np.linalg.lstsq(np.stack([x[ids], np.ones(len(ids))], 1), lips[ids], rcond=None)[0]
        return lambda test: np.stack([x[test], np.ones(len(test))], 1) @ coef

    good = lip_predictor.cross_validate(lips, linear, folds=4, gap=8)
    assert all(c > 0.9 for c in good["cv_corr_measures"].values())
    assert good["cv_mse"] < 0.1 * good["cv_mse_of_mean"]
    assert 10 not in seen[0] and not np.isin(np.arange(92, 208), seen[1]).any()  # no face; block 1 +- 8
    unrelated = rng.permutation(x)
    none = lip_predictor.cross_validate(
        lips, lambda ids: (lambda test: np.stack([unrelated[test]] * 3, 1)), folds=4, gap=8
    )
    assert all(abs(c) < 0.3 for c in none["cv_corr_measures"].values())
