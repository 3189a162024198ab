"""Train an audio-driven Gaussian avatar: ./train.sh -s data/<subject> --model_path OUT [--iterations N]."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from scene.dataset import read_json
from scene.deformation import DeformConfig
from scene.train_config import TrainConfig
from scene.trainer import Trainer, check_model_output, prepare_model_output, run, setup
from utils.atomic import atomic_write_json
from utils.cli import ArgumentParser, UserError, run_cli
from utils.output_policy import claim_output

AT_LEAST_ONE = (
    "iterations", "batch_size", "stop_at", "eval_every", "preview_every", "save_every", "log_every",
    "num_eval_frames", "init_points", "max_gaussians", "refine_every", "reset_every",
)  # fmt: skip
MIN_RESOLUTION = 16


def build_parser() -> argparse.ArgumentParser:
    """The train.sh command line (defaults from TrainConfig)."""
    d = TrainConfig()
    p = ArgumentParser(
        prog="train.sh",
        description="Train an audio-driven 3D Gaussian talking-head avatar on data from ./preprocess.sh.",
        epilog="example: ./train.sh -s data/obama -m output/obama --iterations 10000 --batch_size 2",
        argument_default=argparse.SUPPRESS,
    )
    io_group = p.add_argument_group("data and output")
    io_group.add_argument(
        "-s", "--source_path", required=True, help="preprocessed subject folder data/<subject>"
    )
    io_group.add_argument(
        "-m", "--model_path", required=True, help="output folder for checkpoints and previews"
    )
    io_group.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in model_path"
    )
    io_group.add_argument("--force", action="store_true", help="overwrite an existing model_path")
    run = p.add_argument_group("schedule")
    run.add_argument("--iterations", type=int, help=f"total training iterations (default {d.iterations})")
    run.add_argument("--batch_size", type=int, help=f"frames per iteration (default {d.batch_size})")
    run.add_argument(
        "--resolution", type=int, help="train at this square size in pixels (default: data size)"
    )
    run.add_argument(
        "--coarse_iterations",
        type=int,
        help="static-stage iterations (default min(1000, 20%% of iterations))",
    )
    run.add_argument("--stop_at", type=int, help="stop after this iteration with a checkpoint (resume later)")
    run.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    run.add_argument("--backend", choices=["auto", "gsplat", "torch"], help="rasterizer (default auto)")
    run.add_argument("--bf16", action="store_true", help="bf16 autocast for the deformation network on CUDA")
    precision = run.add_mutually_exclusive_group()
    precision.add_argument(
        "--tf32",
        action="store_true",
        help="TF32 tensor cores for the float32 matmuls on CUDA (the deformation network), the default",
    )
    precision.add_argument(
        "--no_tf32", dest="tf32", action="store_false", help="keep those matmuls in full float32"
    )
    run.add_argument(
        "--deform",
        type=_json_object,
        metavar="JSON",
        help="deformation network sizes, e.g. '{\"token_dim\": 32}'",
    )
    logs = p.add_argument_group("logging and checkpoints")
    logs.add_argument("--eval_every", type=int, help=f"validate every K iterations (default {d.eval_every})")
    logs.add_argument(
        "--preview_every", type=int, help=f"preview JPEG every K iterations ({d.preview_every})"
    )
    logs.add_argument(
        "--save_every", type=int, help=f"checkpoint every K iterations (default {d.save_every})"
    )
    logs.add_argument(
        "--log_every", type=int, help=f"metrics line every K iterations (default {d.log_every})"
    )
    logs.add_argument("--num_eval_frames", type=int, help=f"validation frames (default {d.num_eval_frames})")
    model = p.add_argument_group("Gaussians and densification")
    model.add_argument(
        "--init_points", type=int, help=f"initial Gaussians on the face (default {d.init_points})"
    )
    model.add_argument(
        "--max_gaussians", type=int, help=f"cap on the Gaussian count (default {d.max_gaussians})"
    )
    model.add_argument(
        "--refine_start", type=int, help=f"first densification step (default {d.refine_start})"
    )
    model.add_argument("--refine_stop", type=int, help="last densification step (default 60%% of iterations)")
    model.add_argument("--refine_every", type=int, help=f"densify every K steps (default {d.refine_every})")
    model.add_argument("--reset_every", type=int, help=f"opacity reset period (default {d.reset_every})")
    model.add_argument(
        "--grow_grad2d", type=float, help=f"gradient threshold to grow (default {d.grow_grad2d})"
    )
    opt = p.add_argument_group("learning rates and loss weights")
    for name in ("means", "scales", "quats", "opacity", "colors", "deform"):
        opt.add_argument(
            f"--lr_{name}", type=float, help=f"Adam lr of {name} (default {getattr(d, 'lr_' + name)})"
        )
    opt.add_argument(
        "--lr_pose",
        type=float,
        help=f"Adam lr of learned per-frame head-pose corrections, e.g. 1e-4; 0 = off ({d.lr_pose})",
    )
    opt.add_argument(
        "--lr_final_ratio", type=float, help=f"final/initial lr of means, deform ({d.lr_final_ratio})"
    )
    for name in ("dssim", "mouth", "tv", "dxyz", "lpips"):
        opt.add_argument(
            f"--lambda_{name}", type=float, help=f"loss weight (default {getattr(d, 'lambda_' + name)})"
        )
    opt.add_argument(
        "--lpips_dir",
        help="folder of the LPIPS weights (default $EGSTALKER_CACHE/lpips); without them LPIPS is off",
    )
    opt.add_argument(
        "--audio_augment",
        type=float,
        metavar="S",
        help="speaker augmentation of log-mel features: mel axis stretched by up to S (e.g. 0.1) and gain "
        f"within S*60 dB, in the audio-driven stage; 0 = off ({d.audio_augment})",
    )
    opt.add_argument(
        "--lambda_lips",
        type=float,
        help="weight of the audio-to-lip-measure loss when the deformation's audio_code is 'lips' "
        f"({d.lambda_lips})",
    )
    opt.add_argument(
        "--audio_noise",
        type=float,
        help=f"std of Gaussian noise added to the normalised audio features in training ({d.audio_noise})",
    )
    return p


def _json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object whose keys are DeformConfig fields."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    known = {f.name for f in dataclasses.fields(DeformConfig)} - {"audio_channels", "audio_window"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown keys {unknown}; known: {sorted(known)}")
    return value


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, dict[str, Any], bool, bool]:
    """(config, the explicitly given settings, resume, force) from the command line."""
    given = vars(build_parser().parse_args(argv))
    resume, force = given.pop("resume", False), given.pop("force", False)
    check_numbers(given)
    return dataclasses.replace(TrainConfig(), **given), given, resume, force


def check_numbers(given: dict[str, Any]) -> None:
    """UserError for a given count or period below 1, a negative coarse stage or a too small resolution."""
    for name in AT_LEAST_ONE:
        if name in given and given[name] < 1:
            raise UserError(f"--{name} must be at least 1, got {given[name]}")
    if given.get("coarse_iterations", 0) < 0:
        raise UserError(f"--coarse_iterations must be 0 or more, got {given['coarse_iterations']}")
    resolution = given.get("resolution")
    if resolution is not None and resolution < MIN_RESOLUTION:
        raise UserError(
            f"--resolution must be at least {MIN_RESOLUTION} pixels, got {resolution}; "
            "leave it out to train at the dataset's size"
        )


def novel_pose_note(source_path: Path) -> str | None:
    """A one-line note when the dataset's preprocess report counts validation frames in head poses that no
    training frame shows (their PSNR measures novel views), else None."""
    quality = read_json(source_path, "preprocess.json").get("quality", {})
    novel, gap = quality.get("val_frames_novel_pose", 0), quality.get("val_pose_gap_max_deg", 0.0)
    if not novel:
        return None
    return (
        f"note: {novel} validation frames turn the head up to {gap:.1f} deg beyond every training pose;"
        " their PSNR measures novel views (preprocess.json, val_pose_gap_*)"
    )


def summarize(
    trainer: Trainer, last_val: dict[str, Any], checkpoint: Path, started_at: int
) -> dict[str, Any]:
    """Write train_summary.json and print the summary lines; return the summary."""
    steps = trainer.step - started_at
    summary = {
        "iterations": trainer.step,
        "seconds": round(trainer.elapsed, 2),
        "it_per_s": round(trainer.step / max(trainer.elapsed, 1e-9), 2),
        "iterations_this_run": steps,
        "num_gaussians": trainer.avatar.gaussians.num_gaussians,
        "model_size_mb": round(checkpoint.stat().st_size / 2**20, 2),
        "checkpoint": str(checkpoint),
        "point_cloud": str(
            trainer.model_path / "point_cloud" / f"iteration_{trainer.step}" / "point_cloud.ply"
        ),
        "model_path": str(trainer.model_path),
        **{k: round(v, 4) for k, v in last_val.items() if k.startswith("val_")},
    }
    atomic_write_json(trainer.model_path / "train_summary.json", summary)
    print(
        f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s "
        f"({summary['it_per_s']:.1f} it/s); "
        f"{summary['num_gaussians']} Gaussians, {summary['model_size_mb']} MB"
    )
    if "val_psnr" in summary:
        print(
            f"validation: PSNR {summary['val_psnr']:.2f} dB, SSIM {summary['val_ssim']:.4f}; "
            f"face PSNR {summary['val_psnr_face']:.2f} dB, SSIM {summary['val_ssim_face']:.4f}"
        )
        note = novel_pose_note(trainer.train_set.root)
        if note:
            print(note)
    print(f"model: {summary['checkpoint']}\npoint cloud: {summary['point_cloud']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of train.sh: parse flags, train, save, summarise -> exit code."""
    cfg, given, resume, force = parse_config(argv)
    model_path, source_path = Path(cfg.model_path), Path(cfg.source_path)
    check_model_output(model_path, source_path, resume, force)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with claim_output(model_path):
        check_model_output(model_path, source_path, resume, force)
        return _train(cfg, given, resume, force, device)


def _train(cfg: TrainConfig, given: dict[str, Any], resume: bool, force: bool, device: torch.device) -> int:
    """Load the data (before the model folder is touched), train, save and summarise -> exit code."""
    try:
        trainer = setup(cfg, given, resume, device)
        prepare_model_output(Path(cfg.model_path), resume, force)
        started_at = trainer.step
        try:
            last_val = run(trainer)
        except KeyboardInterrupt as err:
            path = trainer.save()
            print(
                f"\ninterrupted at iteration {trainer.step}; saved {path}; continue with --resume",
                file=sys.stderr,
            )
            return 128 + getattr(err, "signum", 2)
        checkpoint = trainer.save()
    except torch.OutOfMemoryError as err:
        raise UserError(
            f"out of GPU memory (batch_size {cfg.batch_size}, resolution {cfg.resolution or 'full'}); "
            "try a smaller --batch_size or --resolution"
        ) from err
    summarize(trainer, last_val, checkpoint, started_at)
    return 0


if __name__ == "__main__":
    run_cli(main)
