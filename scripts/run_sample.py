"""Runs the whole pipeline on the built-in sample: generate, preprocess, train, predict; times each stage."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch

from data_utils.sample import generate_sample, generate_speech
from utils.atomic import check_output_dir
from utils.cli import ArgumentParser, UserError, run_cli
from utils.paths import REPO_ROOT

DRIVING_TEXT = (
    "Hello there. This avatar was trained on a few seconds of video, and now it can say anything you give it."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of the sample runner."""
    gpu = torch.cuda.is_available()
    p = ArgumentParser(
        prog="run_sample.sh",
        description="Generate a talking-face sample clip and run preprocess -> train -> predict on it.",
    )
    p.add_argument(
        "--output_dir",
        type=Path,
        default=REPO_ROOT / "sample",
        help="folder for everything (default: sample/)",
    )
    p.add_argument("--seconds", type=float, default=5.0, help="length of the generated clip (default 5)")
    p.add_argument(
        "--iterations",
        type=int,
        default=3000 if gpu else 1200,
        help="training iterations (default 3000 on a GPU, 1200 on the CPU)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=512 if gpu else 128,
        help="training and rendering resolution (default 512 on a GPU, 128 on the CPU)",
    )
    p.add_argument(
        "--init_points",
        type=int,
        default=30_000 if gpu else 3000,
        help="initial Gaussians (default 30000 on a GPU, 3000 on the CPU)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --output_dir folder")
    return p.parse_args(argv)


def run_stage(name: str, cmd: list[str], timings: dict[str, float]) -> None:
    """Run one pipeline command, streaming its output; record its wall time; raise UserError if it fails."""
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
        raise UserError(f"the {name} stage failed (see its message above)")
    timings[name] = time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the sample pipeline and print where everything was written; returns the exit code."""
    args = parse_args(argv)
    out = args.output_dir.resolve()
    check_output_dir(out, args.force)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    video, speech = out / "sample.mp4", out / "driving_speech.wav"
    generate_sample(video, seconds=args.seconds)
    generate_speech(speech, seconds=4.0, text=DRIVING_TEXT)
    timings["generate"] = time.perf_counter() - start
    data, model, results = out / "data", out / "model", out / "results"
    run_stage("preprocess", ["./preprocess.sh", str(video), str(data), "--force"], timings)
    run_stage(
        "train",
        [
            "./train.sh",
            "-s",
            str(data),
            "--model_path",
            str(model),
            "--iterations",
            str(args.iterations),
            "--resolution",
            str(args.resolution),
            "--init_points",
            str(args.init_points),
            "--max_gaussians",
            str(args.init_points * 3),
            "--force",
        ],
        timings,
    )
    run_stage(
        "predict",
        [
            "./predict.sh",
            "--model_path",
            str(model),
            "--reference_path",
            str(data),
            "--audio_path",
            str(speech),
            "--output_dir",
            str(results),
            "--force",
        ],
        timings,
    )
    summary = json.loads((results / "summary.json").read_text())
    total = time.perf_counter() - start
    print("\n=== sample finished")
    for name, seconds in timings.items():
        print(f"  {name:<11} {seconds:7.1f} s")
    print(f"  {'total':<11} {total:7.1f} s  on {'CUDA' if torch.cuda.is_available() else 'CPU'}")
    print(f"  sample clip : {video}")
    print(f"  dataset     : {data}  (preview: {data / 'preview.jpg'})")
    print(f"  model       : {model}")
    print(f"  video       : {summary['video']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
