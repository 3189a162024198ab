"""How held-out PSNR grows with the length of the training video.

    python -m bench.length_curve --reference_path data/me --output_dir /tmp/curve \
        [--fractions 0.25 0.5 0.75 1] [--iterations 5000] [--train_args '--resolution 128'] [--gpus 0,1,2,3]

Each run trains on the first fraction of the training frames and is scored on the same validation frames: its
dataset is a folder of links to `--reference_path` with a shorter transforms_train.json. A run is train.py,
then bench.diagnostics.error_regions, with their output in OUTPUT_DIR/log_<frames>.txt; the runs go one after
the other, or with `--gpus` one per listed GPU at a time. Prints a row a run (seconds of training video, the
trainer's validation PSNR full / face, error_regions' validation and training full frame, the mean angle from
a validation pose to its nearest training pose) and writes the report (default OUTPUT_DIR/length_curve.json).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.report import write_report
from data_utils.quality import pose_coverage
from scene.dataset import read_transforms
from utils.atomic import atomic_write_json
from utils.cli import ArgumentParser, UserError, run_cli
from utils.paths import REPO_ROOT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = ArgumentParser(prog="python -m bench.length_curve", description=__doc__.split("\n")[0])
    p.add_argument("--reference_path", type=Path, required=True, help="a preprocessed dataset")
    p.add_argument(
        "--output_dir", type=Path, required=True, help="folder for the shortened datasets and models"
    )
    p.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 0.75, 1.0],
        help="shares of the training frames to keep, from the start (default 0.25 0.5 0.75 1)",
    )
    p.add_argument("--iterations", type=int, default=5000, help="training iterations a run (default 5000)")
    p.add_argument("--train_args", default="", help="extra train.sh arguments as one string")
    p.add_argument("--frames", type=int, default=25, help="frames a split that error_regions scores (25)")
    p.add_argument("--gpus", help="comma-separated GPU indices: one run per GPU at a time (default: one run)")
    p.add_argument("--force", action="store_true", help="replace runs already in OUTPUT_DIR")
    p.add_argument("--out", type=Path, help="report JSON (default OUTPUT_DIR/length_curve.json)")
    args = p.parse_args(argv)
    if not all(0 < f <= 1 for f in args.fractions):
        p.error("--fractions must lie in (0, 1]")
    if args.gpus is not None and not all(g.strip().isdigit() for g in args.gpus.split(",")):
        p.error("--gpus takes GPU indices separated by commas, e.g. 0,1,2,3")
    return args


def shortened_dataset(src: Path, dst: Path, keep: int) -> None:
    """Make dst a copy of dataset src made of links, whose training split keeps its first `keep` frames."""
    meta = read_transforms(src, "train")
    if not 1 <= keep <= len(meta["frames"]):
        raise UserError(f"cannot keep {keep} of {len(meta['frames'])} training frames")
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name != "transforms_train.json":
            (dst / entry.name).symlink_to(entry.resolve())
    atomic_write_json(dst / "transforms_train.json", {**meta, "frames": meta["frames"][:keep]})


def mean_pose_gap_deg(data: Path) -> float:
    """Mean angle (degrees) from each validation head pose of dataset `data` to its nearest training pose."""
    val = read_transforms(data, "val")["frames"]
    frames = read_transforms(data, "train")["frames"] + val
    c2w = np.array([f["transform_matrix"] for f in frames], dtype=np.float64)
    rot = np.transpose(c2w[:, :3, :3], (0, 2, 1))  # head -> camera
    return pose_coverage(rot, len(val))["val_pose_gap_mean_deg"]


def run_one(args: argparse.Namespace, keep: int, fps: float, gpu: str | None) -> dict:
    """Train and score the run that keeps `keep` training frames (on GPU `gpu` if given) -> its table row."""
    data, model = args.output_dir / f"data_{keep}", args.output_dir / f"model_{keep}"
    regions, log = args.output_dir / f"regions_{keep}.json", args.output_dir / f"log_{keep}.txt"
    shortened_dataset(args.reference_path, data, keep)
    commands = [
        [sys.executable, str(REPO_ROOT / "train.py"), "-s", str(data), "-m", str(model)]
        + ["--iterations", str(args.iterations), "--force", *shlex.split(args.train_args)],
        [
            sys.executable,
            "-m",
            "bench.diagnostics.error_regions",
            "--model_path",
            str(model),
            "--reference_path",
            str(data),
        ]
        + ["--frames", str(args.frames), "--out", str(regions)],
    ]
    env = dict(os.environ) if gpu is None else {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
    print(f"run on {keep} training frames{'' if gpu is None else f' (GPU {gpu})'}: log {log}", flush=True)
    with open(log, "w") as out:
        for cmd in commands:
            done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise UserError(f"run on {keep} training frames failed; see {log}")
    summary = json.loads((model / "train_summary.json").read_text())
    psnr = json.loads(regions.read_text())["psnr"]
    return {
        "train_frames": keep,
        "train_seconds": keep / fps,
        "trainer_val_psnr": summary["val_psnr"],
        "trainer_val_psnr_face": summary["val_psnr_face"],
        "val_full": psnr["val"]["full"],
        "train_full": psnr["train"]["full"],
        "pose_gap_deg": mean_pose_gap_deg(data),
    }


def print_table(rows: list[dict]) -> None:
    """One line a run."""
    print("training video   trainer val full / face   val full   train full   pose gap")
    for r in rows:
        print(
            f"{r['train_seconds']:6.2f} s ({r['train_frames']:4d})  "
            f"{r['trainer_val_psnr']:10.2f} / {r['trainer_val_psnr_face']:5.2f}  "
            f"{r['val_full']:13.2f}  {r['train_full']:10.2f}  {r['pose_gap_deg']:7.1f} deg"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point: one shortened run per fraction, the table, the JSON report -> exit code."""
    args = parse_args(argv)
    meta = read_transforms(args.reference_path, "train")
    fps = float(meta.get("fps", 25))
    keeps = sorted({max(1, round(f * len(meta["frames"]))) for f in args.fractions})
    args.output_dir.mkdir(parents=True, exist_ok=True)
    clash = [k for k in keeps if (args.output_dir / f"data_{k}").exists()]
    if clash and not args.force:
        raise UserError(f"'{args.output_dir}' already holds runs {clash}; pass --force to replace them")
    for k in clash:
        shutil.rmtree(args.output_dir / f"data_{k}")  # links only: rmtree does not follow them into --data
    slots: queue.Queue[str | None] = queue.Queue()
    gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else [None]
    for gpu in gpus:
        slots.put(gpu)

    def run_on_free_slot(keep: int) -> dict:
        gpu = slots.get()
        try:
            return run_one(args, keep, fps, gpu)
        finally:
            slots.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        rows = list(pool.map(run_on_free_slot, keeps))
    out = args.out or args.output_dir / "length_curve.json"
    write_report(out, {"reference_path": str(args.reference_path), "runs": rows}, args)
    print_table(rows)
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
