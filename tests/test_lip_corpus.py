"""scene.lip_corpus: other subjects' audio windows and lip measures, made from datasets, saved, loaded, left
without the subject being trained, and weighed into the lip code's loss by train.sh --lip_corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from data_utils.audio_features import VisemeExtractor
from scene import lip_corpus
from scene.checkpoint import load_checkpoint
from scene.dataset import TalkingHeadDataset
from scene.train_config import TrainConfig
from scene.trainer import lip_loss
from tests.dataset_factory import make_dataset
from tests.test_train import _args
from utils.cli import UserError


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two generated subjects of the same features and frame rate (24 and 16 frames)."""
    root = tmp_path_factory.mktemp("corpus")
    return [
        make_dataset(root / "a", frames=24, size=32, fps=4, seed=0),
        make_dataset(root / "b", frames=16, size=32, fps=4, seed=1),
    ]


@pytest.fixture(scope="module")
def corpus_file(subjects: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus of both subjects, made by the command."""
    out = tmp_path_factory.mktemp("made") / "corpus.npz"
    assert lip_corpus.main([*map(str, subjects), "--out", str(out)]) == 0
    return out


def test_corpus_holds_every_frame_as_the_dataset_gives_it(subjects: list[Path], corpus_file: Path) -> None:
    corpus = lip_corpus.load_corpus(corpus_file)
    assert corpus.subjects == [lip_corpus.source_id(s) for s in subjects] and len(set(corpus.subjects)) == 2
    train_set = TalkingHeadDataset(subjects[1], "train", 16, targets=False, lips=True)
    assert corpus.extractor == {**train_set.audio_extractor, "fps": 4.0}
    val_set = TalkingHeadDataset(
        subjects[1], "val", 16, audio_norm=train_set.audio_norm, targets=False, lips=True,
        lip_norm=train_set.lip_norm,
    )  # fmt: skip
    mine = corpus.subject == 1
    assert np.bincount(corpus.subject).tolist() == [24, 16]
    np.testing.assert_allclose(
        corpus.lips[mine], torch.cat([train_set.lips, val_set.lips]).numpy(), atol=1e-6
    )
    windows = torch.cat([train_set.audio, val_set.audio]).numpy()
    np.testing.assert_allclose(corpus.windows[mine], windows, atol=2e-2 * np.abs(windows).max())  # float16


def test_without_drops_one_subject_and_keeps_the_rest(corpus_file: Path, subjects: list[Path]) -> None:
    corpus = lip_corpus.load_corpus(corpus_file)
    left = corpus.without(lip_corpus.source_id(subjects[0]))
    assert left.subjects == [corpus.subjects[1]] and left.subject.tolist() == [0] * 16
    np.testing.assert_array_equal(left.lips, corpus.lips[corpus.subject == 1])
    assert corpus.without("someone else.mp4:1") is corpus


def test_the_command_refuses_to_overwrite_and_mixed_features(
    corpus_file: Path, subjects: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="--force"):
        lip_corpus.main([str(subjects[0]), "--out", str(corpus_file)])
    faster = make_dataset(tmp_path / "c", frames=16, size=32, fps=5)
    with pytest.raises(UserError, match="same --audio_extractor"):
        lip_corpus.main([str(subjects[0]), str(faster), "--out", str(tmp_path / "x.npz")])
    (tmp_path / "bad.npz").write_bytes(b"not a corpus")
    with pytest.raises(UserError, match="is not a lip corpus"):
        lip_corpus.load_corpus(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="not found"):
        lip_corpus.load_corpus(tmp_path / "missing.npz")


def test_pool_leaves_out_the_own_recording_and_weighs_by_frames(
    corpus_file: Path, subjects: list[Path], tmp_path: Path
) -> None:
    train_set = TalkingHeadDataset(subjects[0], "train", 16, targets=False, lips=True)
    pool, line = lip_corpus.lip_pool(str(corpus_file), train_set)
    assert len(pool.lips) == 16 and "left out" in line  # only the other subject's frames
    assert pool.share == pytest.approx(max(len(train_set.lips) / (len(train_set.lips) + 16), 0.5))
    assert lip_corpus.own_share(10, 90) == lip_corpus.MIN_OWN_SHARE and lip_corpus.own_share(90, 10) == 0.9
    own = corpus_file.parent / "own.npz"
    lip_corpus.save_corpus(
        own, lip_corpus.load_corpus(corpus_file).without(lip_corpus.source_id(subjects[1]))
    )
    assert lip_corpus.lip_pool(str(own), train_set)[0] is None
    assert lip_corpus.lip_pool("none", train_set) == (None, "lip corpus: none")
    # the shipped corpus has visemes, these log-mel features: none, and a line that says why
    pool, line = lip_corpus.lip_pool("default", train_set)
    assert pool is None and line.startswith("lip corpus: none (the shipped one has visemes features")
    faster = tmp_path / "faster.npz"  # a corpus named by the user that does not fit: one clear error
    assert (
        lip_corpus.main([str(make_dataset(tmp_path / "c", frames=16, size=32, fps=5)), "--out", str(faster)])
        == 0
    )
    with pytest.raises(UserError, match=r"has logmel features \(.*5.0 fps\), the dataset logmel"):
        lip_corpus.lip_pool(str(faster), train_set)


def test_the_shipped_corpus_has_the_default_features() -> None:
    corpus = lip_corpus.load_corpus(lip_corpus.DEFAULT_CORPUS)
    assert corpus.extractor == {"name": "visemes", "settings": VisemeExtractor().settings(), "fps": 25.0}
    assert len(corpus.subjects) >= 5 and corpus.windows.shape[1:] == (len(VisemeExtractor.classes) + 1, 16)
    assert np.isfinite(corpus.windows).all() and np.abs(corpus.lips).sum(axis=1).min() > 0


def test_lip_loss_of_one_predictor_weighs_the_corpus_by_its_share(
    corpus_file: Path, subjects: list[Path]
) -> None:  # one predictor with a corpus: a model saved before the second
    from bench.diagnostics.lip_predictor import predictor

    train_set = TalkingHeadDataset(subjects[0], "train", 16, targets=False, lips=True)
    cfg = TrainConfig().with_values({"lip_corpus_frames": 3, "lambda_lips": 2.0})
    net = predictor(train_set, cfg)
    pool, _ = lip_corpus.lip_pool(str(corpus_file), train_set)
    audio, lips = train_set.audio[:2], train_set.lips[:2]
    own = (net.predict_lips(audio) - lips).square().mean()
    generator = torch.Generator().manual_seed(3)
    windows, corpus_lips = pool.sample(3, torch.Generator().manual_seed(3))
    corpus = (net.predict_lips(windows) - corpus_lips).square().mean()
    got = lip_loss(net, audio, lips, cfg, pool, generator)
    torch.testing.assert_close(got, 2.0 * (pool.share * own + (1 - pool.share) * corpus))
    torch.testing.assert_close(lip_loss(net, audio, lips, cfg), 2.0 * own)


def test_train_learns_from_the_corpus_by_a_second_predictor_and_records_it(
    corpus_file: Path, subjects: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from scene.checkpoint import avatar_from_checkpoint
    from scene.inference import InferenceRenderer

    argv = _args(
        subjects[0], tmp_path / "m", "--iterations", "20", "--coarse_iterations", "10", "--eval_every", "20"
    )
    assert train.main([*argv, "--audio_code", "lips", "--lip_corpus", str(corpus_file)]) == 0
    assert "lip corpus: 1 other subjects, 16 frames (this recording left out)" in capsys.readouterr().err
    checkpoint = load_checkpoint(tmp_path / "m" / "chkpnt20.pth", torch.device("cpu"))
    assert checkpoint["config"]["train"]["optim"]["lip_corpus"] == str(corpus_file)
    avatar = avatar_from_checkpoint(checkpoint, torch.device("cpu"))
    assert avatar.deform_cfg.lip_predictors == 2 and checkpoint["config"]["deform"]["lip_predictors"] == 2
    train_set = TalkingHeadDataset(subjects[0], "train", 16, targets=False, lips=True)
    each = avatar.deform.lip_predictions(train_set.audio[:3])
    assert each.shape == (2, 3, 3) and not torch.allclose(each[0], each[1])
    # inference runs the two predictors stacked and drives the mouth by their mean, as training does
    with torch.no_grad():  # the output heads start at zero: random weights let the lip code show
        for param in avatar.deform.parameters():
            param.normal_(0.0, 0.3)
        batch = train_set.get(torch.arange(2))
        inferred = InferenceRenderer(avatar).deltas(batch).d_xyz
        torch.testing.assert_close(inferred, avatar.deltas(batch).d_xyz, atol=1e-4, rtol=1e-4)
    assert inferred.abs().max() > 0
    # the default corpus does not fit these log-mel features: trained without it, one predictor
    assert train.main([*argv, "--audio_code", "lips", "--force"]) == 0
    assert "lip corpus: none (the shipped one has visemes features" in capsys.readouterr().err
    checkpoint = load_checkpoint(tmp_path / "m" / "chkpnt20.pth", torch.device("cpu"))
    assert checkpoint["config"]["deform"]["lip_predictors"] == 1


@pytest.mark.parametrize("encoder", ["linear", "linear_corpus"])
def test_train_with_linear_lip_encoders_saves_them_and_infers_as_trained(
    corpus_file: Path, subjects: list[Path], tmp_path: Path, speech_wav: Path, encoder: str
) -> None:
    from bench.diagnostics import lip_predictor
    from scene.audio_encoder import AudioEncoder, LinearAudioEncoder
    from scene.checkpoint import avatar_from_checkpoint
    from scene.inference import InferenceRenderer
    from scene.stacked_lips import StackedLinearLipPredictors

    argv = _args(
        subjects[0], tmp_path / "m", "--iterations", "20", "--coarse_iterations", "10", "--eval_every", "20"
    )
    assert train.main([*argv, "--lip_corpus", str(corpus_file), "--lip_encoder", encoder]) == 0
    checkpoint = load_checkpoint(tmp_path / "m" / "chkpnt20.pth", torch.device("cpu"))
    assert checkpoint["config"]["deform"]["lip_encoder"] == encoder
    avatar = avatar_from_checkpoint(checkpoint, torch.device("cpu"))
    assert isinstance(avatar.deform.corpus_audio_encoder, LinearAudioEncoder)
    own = LinearAudioEncoder if encoder == "linear" else AudioEncoder
    assert isinstance(avatar.deform.audio_encoder, own)
    train_set = TalkingHeadDataset(subjects[0], "train", 16, targets=False, lips=True)
    with torch.no_grad():
        for param in avatar.deform.parameters():
            param.normal_(0.0, 0.3)
        batch = train_set.get(torch.arange(2))
        renderer = InferenceRenderer(avatar)
        if encoder == "linear":
            assert isinstance(renderer.lip_predictors, StackedLinearLipPredictors)
        torch.testing.assert_close(
            renderer.deltas(batch).d_xyz, avatar.deltas(batch).d_xyz, atol=1e-4, rtol=1e-4
        )
    out = tmp_path / "report.json"
    diag = ["--reference_path", str(subjects[0]), "--audio", str(speech_wav), "--iterations", "40"]
    assert lip_predictor.main([*diag, "--lip_encoder", encoder, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["lip_encoder"] == encoder


def test_the_lip_predictor_diagnostic_mirrors_the_corpus(
    corpus_file: Path, subjects: list[Path], tmp_path: Path, speech_wav: Path
) -> None:
    from bench.diagnostics import lip_predictor

    out = tmp_path / "report.json"
    argv = ["--reference_path", str(subjects[0]), "--audio", str(speech_wav), "--iterations", "60"]
    assert (
        lip_predictor.main([*argv, "--lip_corpus", str(corpus_file), "--folds", "2", "--out", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    assert (
        report["lip_corpus"].startswith("lip corpus: 1 other subjects, 16 frames") and report["cv_folds"] == 2
    )
    assert report["lip_predictors"] == 2
    assert lip_predictor.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())  # the default corpus does not fit these log-mel features
    assert report["lip_corpus"].startswith("lip corpus: none (") and report["lip_predictors"] == 1


def test_two_lip_predictors_learn_apart_and_drive_the_mouth_by_their_mean(
    corpus_file: Path, subjects: list[Path]
) -> None:
    from bench.diagnostics.lip_predictor import predictor

    train_set = TalkingHeadDataset(subjects[0], "train", 16, targets=False, lips=True)
    cfg = TrainConfig().with_values({"lip_corpus_frames": 3})
    pool, _ = lip_corpus.lip_pool(str(corpus_file), train_set)
    net = predictor(train_set, cfg, pool)
    audio, lips = train_set.audio[:4], train_set.lips[:4]
    each = net.lip_predictions(audio)
    assert each.shape == (2, 4, 3) and not torch.allclose(each[0], each[1])  # two sets of weights
    torch.testing.assert_close(net.predict_lips(audio), each.mean(dim=0))
    own_params = [*net.audio_encoder.parameters(), *net.lip_head.parameters()]
    corpus_params = [*net.corpus_audio_encoder.parameters(), *net.corpus_lip_head.parameters()]
    assert len(net.lip_predictor_parameters()) == len(own_params) + len(corpus_params)

    def grads(loss: torch.Tensor, params: list) -> list[torch.Tensor]:
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    loss = lip_loss(net, audio, lips, cfg, pool, torch.Generator().manual_seed(5))
    windows, corpus_lips = pool.sample(3, torch.Generator().manual_seed(5))
    alone = (net.lip_predictions(audio)[0] - lips).square().mean()  # the first: own frames only
    pooled = (
        pool.share * (net.lip_predictions(audio)[1] - lips).square().mean()
        + (1 - pool.share) * (net.lip_predictions(windows)[1] - corpus_lips).square().mean()
    )
    torch.testing.assert_close(loss, alone + pooled)
    for got, want in zip(grads(loss, own_params), grads(alone, own_params), strict=True):
        torch.testing.assert_close(got, want)  # the corpus does not reach the clip's own predictor
    for got, want in zip(grads(loss, corpus_params), grads(pooled, corpus_params), strict=True):
        torch.testing.assert_close(got, want)
