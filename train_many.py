"""Avatars for many people: ./train_many.sh VIDEOS... --out DIR [--per_gpu K] [--address RAY_ADDRESS]."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from many.driver import DEFAULT_PER_GPU, ManyConfig, run_many
from utils.cli import ArgumentParser, UserError, run_cli

# Flags train_many sets itself for each tool; giving them in --*_args would fight over the subject folders.
OWN_FLAGS = {
    "preprocess": {"--force"},
    "train": {"-s", "--source_path", "-m", "--model_path", "--resume", "--force", "--iterations"},
    "render": {"--model_path", "--reference_path", "--output_dir", "--force", "--direct"},
}


def build_parser() -> argparse.ArgumentParser:
    """The train_many.sh command line."""
    p = ArgumentParser(
        prog="train_many.sh",
        description="Make an avatar of every video: preprocess, train and render_direct (held-out metrics "
        "and lip sync) each one as Ray tasks, several trainings sharing a GPU. Each subject goes to "
        "DIR/<video name>/ (data/, model/, results/, log.txt, status.json); the final table goes to "
        "DIR/summary.json and DIR/summary.md. Rerunning the same command skips finished subjects, retries "
        "failed ones and continues interrupted ones from their checkpoints.",
        epilog="example: ./train_many.sh videos/*.mp4 --out runs/team --iterations 10000 "
        "--preprocess_args '--size 512' --train_args '--batch_size 2'",
    )
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="videos, or folders of videos")
    p.add_argument("--out", required=True, type=Path, help="run folder: one subfolder per subject")
    p.add_argument(
        "--per_gpu",
        type=int,
        default=DEFAULT_PER_GPU,
        help=f"trainings sharing one GPU (default {DEFAULT_PER_GPU}: on an H200 4 at once train 2.5x the "
        "subjects per hour of one, in 56 GB; see docs/train_many.md)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster to run on, e.g. 'auto' or 'HEAD:6379' (default: $RAY_ADDRESS, else a local "
        "instance started for this run)",
    )
    p.add_argument("--iterations", type=int, default=10_000, help="training iterations (default 10000)")
    tools = (("preprocess", "preprocess.sh"), ("train", "train.sh"), ("render", "render_direct.sh"))
    for stage, tool in tools:
        p.add_argument(
            f"--{stage}_args",
            default="",
            metavar="'FLAGS'",
            help=f"extra flags of {tool} for every subject, quoted as one argument (a lone flag: "
            f"--{stage}_args=--flag)",
        )
    p.add_argument(
        "--cpus_per_task",
        type=int,
        default=2,
        help="CPUs of each preprocessing (and, without GPUs, training) task (default 2)",
    )
    p.add_argument("--num_cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument(
        "--progress_every",
        type=float,
        default=30.0,
        help="seconds between training lines when the output is a log, not a terminal (default 30)",
    )
    return p


def stage_flags(stage: str, text: str) -> list[str]:
    """The flags of --<stage>_args as a list; UserError for a flag train_many sets itself."""
    try:
        flags = shlex.split(text)
    except ValueError as err:
        raise UserError(f"--{stage}_args: {err}") from err
    clash = sorted({f.split("=", 1)[0] for f in flags} & OWN_FLAGS[stage])
    if clash:
        raise UserError(f"--{stage}_args may not hold {', '.join(clash)}: train_many sets it itself")
    return flags


def check_flags(cfg: ManyConfig) -> None:
    """Parse the tools' extra flags with the tools' own parsers now, so a typo fails before any work."""
    from data_utils.process import parse_args as preprocess_parse
    from scene.predict_cli import build_parser as predict_parser
    from scene.train_cli import parse_config

    preprocess_parse(["VIDEO", "OUT", *cfg.preprocess_args])
    parse_config(["-s", "DATA", "-m", "MODEL", *cfg.train_args])
    predict_parser("render_direct.sh").parse_args(
        ["--direct", "--model_path", "M", "--reference_path", "D", "--output_dir", "R", *cfg.render_args]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of train_many.sh: 0 when every subject finished, 1 when some failed."""
    args = build_parser().parse_args(argv)
    cfg = ManyConfig(
        videos=args.videos,
        out=args.out,
        per_gpu=args.per_gpu,
        address=args.address,
        iterations=args.iterations,
        preprocess_args=stage_flags("preprocess", args.preprocess_args),
        train_args=stage_flags("train", args.train_args),
        render_args=stage_flags("render", args.render_args),
        cpus_per_task=args.cpus_per_task,
        num_cpus=args.num_cpus,
        progress_every=args.progress_every,
    )
    check_flags(cfg)
    rows = run_many(cfg)
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    run_cli(main)
