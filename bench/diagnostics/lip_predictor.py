"""Diagnostic: does the lip code's audio-to-lip predictor, trained as train.sh trains it, follow other
speakers?

With `--audio_code lips` (the default) the audio reaches the mouth only through
DeformationNetwork.predict_lips (training drives the mouth by the tracked lip measures and fits the predictor
to them by the lambda_lips loss), so that loss over the fine stage is the predictor's whole training. This
tool repeats it alone, on the CPU in about a minute, then scores the predicted lip opening with the lip-sync
measure (evaluation.lipsync.score_phones) against the phones of other speakers' audio: an upper bound on what
the rendered mouth can reach. With `--cross`, other subjects' datasets: the opening predicted from their audio
is correlated with the opening tracked in their video, a cross-speaker check that does not read phones (phone
and viseme inputs share the score's pocketsphinx).

Usage: python -m bench.diagnostics.lip_predictor --reference_path DATA --audio A.wav B.wav [--cross DATA2 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.report import write_report
from data_utils.audio_features import get_extractor, normalise_windows, num_video_frames
from data_utils.audio_io import SAMPLE_RATE, load_audio
from data_utils.lips import LIP_MEASURES
from evaluation.lipsync import frame_phones, score_phones
from scene.audio_encoder import LIP_ENCODERS
from scene.dataset import TalkingHeadDataset, load_splits, with_face
from scene.deformation import DeformationNetwork
from scene.lip_corpus import LOAD_SIZE, LipPool, lip_pool, lip_predictor_count, own_share
from scene.train_config import TrainConfig
from scene.trainer import augment_audio, lip_loss, network_lr_decay
from utils.cli import ArgumentParser, UserError, run_cli
from utils.metrics import best_lag_correlation

OPENING = LIP_MEASURES.index("outer_opening")  # the measure the lip-sync score reads (lip_opening)
CV_GAP_FRAMES = 8  # frames left out on each side of a cross-validation block: an audio window spans 8


def predictor(
    train_set: TalkingHeadDataset, cfg: TrainConfig, pool: LipPool | None = None
) -> DeformationNetwork:
    """An untrained deformation network with the lip code, for the dataset's audio windows [C,W]: two lip
    predictors with a lip corpus `pool`, as train.sh builds it."""
    channels, window = train_set.audio_shape
    deform = dataclasses.replace(  # the predictor alone: no Gaussians for the audio's scope to fade
        cfg.deform,
        audio_code="lips",
        audio_scope="everywhere",
        audio_channels=channels,
        audio_window=window,
        lip_predictors=lip_predictor_count(pool),
    )
    return DeformationNetwork(deform, torch.tensor([[-1.0] * 3, [1.0] * 3]))


def train_predictor(
    net: DeformationNetwork,
    audio: torch.Tensor,
    lips: torch.Tensor,
    norm: dict,
    cfg: TrainConfig,
    pool: LipPool | None = None,
) -> list[float]:
    """Fit net.predict_lips to the tracked lip measures [T,3] of audio windows [T,C,W] (normalised by `norm`)
    as the fine stage of train.sh does (its optimiser, learning-rate decay, batch size, audio noise and
    augmentation, and the lip corpus `pool`, weighed by own_share of T frames and the pool's); return the
    loss every 100 steps."""
    if pool is not None:
        pool = dataclasses.replace(pool, share=own_share(len(lips), len(pool.lips)))
    opt = torch.optim.Adam(net.lip_predictor_parameters(), lr=cfg.optim.lr_deform)
    decay = network_lr_decay(opt, cfg)
    generator = torch.Generator().manual_seed(cfg.schedule.seed)
    losses = []
    for step in range(cfg.schedule.fine_steps()):
        idx = torch.randint(len(audio), (cfg.schedule.batch_size,), generator=generator)
        loss = lip_loss(net, augment_audio(audio[idx], cfg, norm, generator), lips[idx], cfg, pool, generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
        if step % 100 == 0:
            losses.append(round(loss.item(), 5))
    return losses


def cross_validate(
    lips: np.ndarray, fit: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]], folds: int, gap: int
) -> dict:
    """K-fold in time: for each of `folds` contiguous blocks of the frames, fit(train_ids) -> predict(ids)
    is trained on the frames more than `gap` away from the block (with a face) and predicts the block's lip
    measures [n,3]; the tracked measures are `lips` [T,3] (standardised; 0 where a frame has no face).
    Returns the MSE, that of each block's training mean, and each measure's correlation within the blocks
    (each block's means removed, so the shift of a left-out mean does not count)."""
    n = len(lips)
    face = with_face(lips)
    block = np.arange(n) * folds // n
    predicted, means = np.zeros_like(lips), np.zeros_like(lips)
    for f in range(folds):
        test = np.flatnonzero(block == f)
        far = (np.arange(n) < test[0] - gap) | (np.arange(n) > test[-1] + gap)
        train = np.flatnonzero(far & face)
        predicted[test] = fit(train)(test)
        means[test] = lips[train].mean(axis=0)
    p, t, m, b = predicted[face], lips[face], means[face], block[face]
    centred = [np.concatenate([x[b == f] - x[b == f].mean(axis=0) for f in range(folds)]) for x in (p, t)]
    return {
        "cv_folds": folds,
        "cv_mse": round(float(np.mean((p - t) ** 2)), 4),
        "cv_mse_of_mean": round(float(np.mean((m - t) ** 2)), 4),
        "cv_corr_measures": {
            name: correlation(centred[0][:, i], centred[1][:, i]) for i, name in enumerate(LIP_MEASURES)
        },
    }


@torch.no_grad()
def predicted_lips(nets: list[DeformationNetwork], windows: torch.Tensor) -> np.ndarray:
    """Predicted (standardised) lip measures [T,3] of audio windows [T,C,W], averaged over `nets`."""
    return np.mean([torch.cat([n.predict_lips(w) for w in windows.split(256)]).numpy() for n in nets], axis=0)


def predicted_opening(nets: list[DeformationNetwork], windows: torch.Tensor) -> np.ndarray:
    """Predicted (standardised) outer-lip opening [T] of audio windows [T,C,W], averaged over `nets`."""
    return predicted_lips(nets, windows)[:, OPENING]


def held_out_errors(predicted: np.ndarray, tracked: np.ndarray) -> dict:
    """Errors of predicted lip measures [T,3] against the tracked ones [T,3] (both standardised by the
    training clip; frames without a face, all 0, left out): mean squared error, that of always predicting the
    training mean (0), and the correlation of each measure."""
    ok = with_face(tracked)
    p, t = predicted[ok], tracked[ok]
    return {
        "val_mse": round(float(np.mean((p - t) ** 2)), 4),
        "val_mse_of_mean": round(float(np.mean(t**2)), 4),
        "val_corr_measures": {name: correlation(p[:, i], t[:, i]) for i, name in enumerate(LIP_MEASURES)},
    }


def score_audio(nets: list[DeformationNetwork], train_set: TalkingHeadDataset, path: Path) -> dict:
    """The lip-sync score of the opening predicted from the speech at `path` against its own phones."""
    spec = train_set.audio_extractor
    wav = load_audio(path)
    n = num_video_frames(len(wav), SAMPLE_RATE, train_set.fps)
    feats = get_extractor(spec["name"], **spec.get("settings", {})).extract(
        wav, SAMPLE_RATE, train_set.fps, n
    )
    opening = predicted_opening(
        nets, torch.from_numpy(normalise_windows(feats, train_set.audio_norm)).float()
    )
    return score_phones(opening, frame_phones(wav, SAMPLE_RATE, train_set.fps, n), train_set.fps).to_dict()


def cross_correlation(
    nets: list[DeformationNetwork], train_set: TalkingHeadDataset, other: Path
) -> float | None:
    """Correlation of the opening predicted from another subject's audio (dataset `other`, all its frames,
    normalised as the training clip's) with the opening tracked in its video; UserError when `other` was made
    with another audio extractor or frame rate."""
    splits = [
        TalkingHeadDataset(other, split, LOAD_SIZE, audio_norm=train_set.audio_norm, targets=False, lips=True)
        for split in ("train", "val")
    ]
    if splits[0].audio_extractor["name"] != train_set.audio_extractor["name"]:
        raise UserError(
            f"--cross dataset '{other}' has {splits[0].audio_extractor['name']} features, the reference "
            f"{train_set.audio_extractor['name']}; preprocess it with the same --audio_extractor"
        )
    if splits[0].fps != train_set.fps:
        raise UserError(
            f"--cross dataset '{other}' runs at {splits[0].fps} fps, the reference at {train_set.fps}"
        )
    audio = torch.cat([d.audio for d in splits])
    tracked = torch.cat([d.lips[:, OPENING] for d in splits]).numpy()
    return correlation(predicted_opening(nets, audio), tracked)


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two series [T] over the frames where both are finite (a frame without a face
    has no tracked measure), None when either is constant there."""
    corr = best_lag_correlation(a, b, 0, min_overlap=2)[0]
    return round(corr, 4) if np.isfinite(corr) else None


def cross_validate_clip(
    train_set: TalkingHeadDataset,
    val_set: TalkingHeadDataset,
    cfg: TrainConfig,
    folds: int,
    pool: LipPool | None = None,
) -> dict:
    """cross_validate over all the frames of the clip (training then held-out, in time order) with one
    predictor trained as train_predictor (with the lip corpus `pool`) per block."""
    audio = torch.cat([train_set.audio, val_set.audio])
    lips = torch.cat([train_set.lips, val_set.lips])

    def fit(ids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        torch.manual_seed(cfg.schedule.seed)
        net = predictor(train_set, cfg, pool)
        train_predictor(net, audio[ids], lips[ids], train_set.audio_norm, cfg, pool)
        net.eval()
        return lambda test: predicted_lips([net], audio[test])

    return cross_validate(lips.numpy(), fit, folds, CV_GAP_FRAMES)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = ArgumentParser(
        prog="python -m bench.diagnostics.lip_predictor",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    p.add_argument("--reference_path", type=Path, required=True, help="a dataset made by preprocess.sh")
    p.add_argument("--audio", type=Path, nargs="+", required=True, help="other speakers' speech")
    p.add_argument("--iterations", type=int, default=10_000, help="train.sh --iterations to mirror")
    p.add_argument("--seed", type=int, default=0, help="train.sh --seed to mirror")
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        help="average the openings of this many predictors (seeds SEED, SEED+1, ...; default 1: as train.sh)",
    )
    p.add_argument(
        "--audio_augment", type=float, default=0.0, help="train.sh --audio_augment to mirror (log-mel only)"
    )
    p.add_argument(
        "--cross",
        type=Path,
        nargs="*",
        default=[],
        help="other subjects' datasets (same --audio_extractor): correlate the opening predicted from their "
        "audio with their tracked opening",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        help="also cross-validate in time over all the clip's frames: K contiguous blocks, each predicted by "
        "a predictor trained on the frames more than 8 frames away (K more trainings; default 0: off). The "
        "held-out second alone is 25 frames of a short clip, a noisy judge",
    )
    p.add_argument(
        "--lip_corpus",
        default=TrainConfig().optim.lip_corpus,
        metavar="FILE|default|none",
        help="train.sh --lip_corpus to mirror (default: train.sh's)",
    )
    p.add_argument(
        "--lip_encoder",
        default=TrainConfig().deform.lip_encoder,
        choices=LIP_ENCODERS,
        help="train.sh --lip_encoder to mirror (default: train.sh's)",
    )
    p.add_argument("--out", type=Path, help="JSON report (default: print only)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train the predictor, print and save its held-out correlation and lip-sync scores."""
    args = build_parser().parse_args(argv)
    for path in args.audio:
        if not path.is_file():
            raise UserError(f"'{path}' not found; pass existing speech files to --audio")
    cfg = TrainConfig().with_values(
        {
            "iterations": args.iterations,
            "seed": args.seed,
            "audio_augment": args.audio_augment,
            "lip_encoder": args.lip_encoder,
        }
    )
    train_set, val_set = load_splits(args.reference_path, LOAD_SIZE, targets=False, lips=True)
    if args.ensemble < 1:
        raise UserError("--ensemble must be at least 1")
    if args.folds == 1 or args.folds < 0:
        raise UserError("--folds must be 0 (off) or at least 2")
    pool, pool_line = lip_pool(args.lip_corpus, train_set)
    print(pool_line, file=sys.stderr)
    nets, losses = [], []
    for k in range(args.ensemble):
        member = cfg.with_values({"seed": args.seed + k})
        torch.manual_seed(args.seed + k)
        nets.append(predictor(train_set, member, pool))
        losses = train_predictor(
            nets[-1], train_set.audio, train_set.lips, train_set.audio_norm, member, pool
        )
        nets[-1].eval()
    val_lips = predicted_lips(nets, val_set.audio)
    tracked = val_set.lips[:, OPENING].numpy()
    report = {
        "dataset": str(args.reference_path),
        "extractor": train_set.audio_extractor["name"],
        "fine_steps": cfg.schedule.fine_steps(),
        "final_loss": losses[-1],
        "ensemble": args.ensemble,
        "lip_corpus": pool_line,
        "lip_predictors": nets[0].cfg.lip_predictors,
        "lip_encoder": nets[0].cfg.lip_encoder,
        "val_corr": correlation(val_lips[:, OPENING], tracked),
        **held_out_errors(val_lips, val_set.lips.numpy()),
        "audio": {path.name: score_audio(nets, train_set, path) for path in args.audio},
        "cross": {str(path): cross_correlation(nets, train_set, path) for path in args.cross},
    }
    if args.folds:
        report.update(cross_validate_clip(train_set, val_set, cfg, args.folds, pool))
    print(
        f"{report['dataset']} ({report['extractor']}): held-out opening corr {report['val_corr']}, "
        f"lip measures' MSE {report['val_mse']} (the training mean's: {report['val_mse_of_mean']})"
    )
    if args.folds:
        corr = report["cv_corr_measures"]
        print(
            f"  {args.folds}-fold in time: MSE {report['cv_mse']} (the training mean's: "
            f"{report['cv_mse_of_mean']}), corr " + ", ".join(f"{k} {v}" for k, v in corr.items())
        )
    for name, row in report["audio"].items():
        if row["judged"]:
            print(f"  {name:<32} score {row['score']:.2f}  (auc {row['auc']:.2f}, lag {row['lag_frames']})")
        else:
            print(f"  {name:<32} not judged: {row['reason']}")
    for name, corr in report["cross"].items():
        print(f"  {Path(name).name:<32} opening corr {corr} (its audio against its video)")
    if args.out:
        write_report(args.out, report, args)
        print(f"report: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
