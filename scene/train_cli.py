"""The train.sh command line: flags generated from the TrainConfig tree, their checks and the main()."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from scene.train_config import DEFORM_FROM_DATA, TrainConfig
from scene.train_summary import summarize
from scene.trainer import check_model_output, prepare_model_output, run, setup
from utils.cli import ArgumentParser, UserError
from utils.config_cli import add_flags
from utils.output_policy import claim_output

AT_LEAST_ONE = (
    "iterations", "batch_size", "stop_at", "eval_every", "preview_every", "save_every", "log_every",
    "num_eval_frames", "init_points", "max_gaussians", "refine_every", "reset_every",
)  # fmt: skip
MIN_RESOLUTION = 16


def _deform_json_replaced(text: str) -> None:
    """argparse type of the removed --deform JSON flag: an error naming the flags that replace it."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        flags = []
        for key, v in value.items():
            if key in DEFORM_FROM_DATA:
                continue
            if isinstance(v, bool):
                flags.append(f"--{key}" if v else f"--no_{key}")
            else:
                flags.append(" ".join([f"--{key}", *map(str, v if isinstance(v, list) else [v])]))
        use = " ".join(flags)
    else:
        use = "--token_dim 32, --kan_hidden 64 ... (see --help, 'deformation network')"
    raise argparse.ArgumentTypeError(f"--deform JSON was replaced by one flag per setting: use {use}")


def build_parser() -> argparse.ArgumentParser:
    """The train.sh command line: one flag per TrainConfig setting (defaults and help from the tree)."""
    p = ArgumentParser(
        prog="train.sh",
        description="Train an audio-driven 3D Gaussian talking-head avatar on data from ./preprocess.sh.",
        epilog="example: ./train.sh -s data/obama -m output/obama --iterations 10000 --batch_size 2",
        argument_default=argparse.SUPPRESS,
    )
    io_group = add_flags(p, TrainConfig, "data and output")["data and output"]
    io_group.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in model_path"
    )
    io_group.add_argument("--force", action="store_true", help="overwrite an existing model_path")
    p.add_argument("--deform", type=_deform_json_replaced, help=argparse.SUPPRESS)
    return p


def parse_config(argv: list[str] | None) -> tuple[TrainConfig, dict[str, Any], bool, bool]:
    """(config, the explicitly given settings {flag name: value}, resume, force) from the command line."""
    given = vars(build_parser().parse_args(argv))
    resume, force = given.pop("resume", False), given.pop("force", False)
    check_numbers(given)
    return TrainConfig().with_values(given), given, resume, force


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
            f"out of GPU memory (batch_size {cfg.schedule.batch_size}, "
            f"resolution {cfg.schedule.resolution or 'full'}); try a smaller --batch_size or --resolution"
        ) from err
    summarize(trainer, last_val, checkpoint, started_at)
    return 0
