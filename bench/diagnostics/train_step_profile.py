"""Where a training step's time goes: milliseconds per step of each labelled part, from torch.profiler.

    python -m bench.diagnostics.train_step_profile --reference_path data/me [--model_path output/me] \
        [--steps 50] [--train_args ...]

The steps run in the audio-driven (fine) stage: of a fresh model (pass `--train_args '--init_points 80000'`
for the Gaussian count of a finished run), or with `--model_path` of a trained model's latest checkpoint.
Nothing is written anywhere unless `--out` is given. Rows: the labelled parts of `Trainer.train_step` and
`Avatar.render_with_deltas` with their host time and the device time of the kernels they launch (CUDA);
`all kernels` is the device time of every kernel, the backward pass's included (autograd launches those
from its own thread, outside the labels). A device busy share well below 100 % means the step waits on
the host (kernel launches), not on the GPU.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.report import write_report
from scene.checkpoint import latest_checkpoint
from scene.train_cli import parse_config
from scene.trainer import Trainer, setup
from utils.cli import ArgumentParser, UserError, run_cli

PARTS = (
    "train.sample",
    "avatar.deform",
    "avatar.rasterize",
    "train.loss",
    "train.backward",
    "train.optimizer",
    "train.densify",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(
        prog="python -m bench.diagnostics.train_step_profile", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--reference_path", type=Path, required=True, help="a preprocessed dataset")
    p.add_argument("--model_path", type=Path, help="profile this trained model (latest checkpoint)")
    p.add_argument("--steps", type=int, default=50, help="profiled steps (default 50)")
    p.add_argument("--warmup", type=int, default=20, help="unprofiled steps before them (default 20)")
    p.add_argument("--train_args", default="", help="extra train.sh options, e.g. '--batch_size 2'")
    p.add_argument("--top", type=int, default=10, help="operators listed by time (default 10)")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be at least 1 and --warmup at least 0")
    return args


def make_trainer(args: argparse.Namespace, scratch: Path, device: torch.device) -> Trainer:
    """A Trainer positioned in the fine stage: from --model_path's checkpoint, else a fresh model."""
    model_path = args.model_path if args.model_path is not None else scratch
    argv = ["-s", str(args.reference_path), "-m", str(model_path), *shlex.split(args.train_args)]
    cfg, given, _, _ = parse_config(argv)
    resume = args.model_path is not None
    if resume and latest_checkpoint(args.model_path) is None:
        raise UserError(f"'{args.model_path}' has no checkpoint; train it first or drop --model_path")
    trainer = setup(cfg, given, resume, device)
    trainer.step = max(trainer.step, cfg.schedule.coarse_steps())
    return trainer


def run_steps(trainer: Trainer, count: int, device: torch.device) -> float:
    """Run `count` training steps after trainer.step; return their wall time in seconds (device synced)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(count):
        trainer.step += 1
        trainer.train_step(trainer.step)
    sync()
    return time.perf_counter() - start


def measure(trainer: Trainer, args: argparse.Namespace, device: torch.device) -> dict:
    """Warm up, then profile args.steps steps -> ms a step of each part, in all and of the top operators."""
    run_steps(trainer, args.warmup, device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        wall = run_steps(trainer, args.steps, device)
    per_step = 1.0 / args.steps
    parts = {name: {"host_ms": 0.0, "device_ms": 0.0} for name in PARTS}
    for event in prof.events():
        if event.name in parts and event.device_type == DeviceType.CPU:
            parts[event.name]["host_ms"] += event.cpu_time_total / 1000 * per_step
            parts[event.name]["device_ms"] += event.device_time_total / 1000 * per_step
    averages = prof.key_averages()
    if cuda:  # the device's own events, each kernel once (host ops carry their kernels' time too)
        ops = [e for e in averages if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
        key = "self_device_time_total"
    else:
        ops, key = list(averages), "self_cpu_time_total"
    kernels = sum(e.self_device_time_total for e in ops) / 1000 * per_step if cuda else 0.0
    top = sorted(ops, key=lambda e: getattr(e, key), reverse=True)[: args.top]
    step_ms = wall * 1000 * per_step
    return {
        "device": str(torch.cuda.get_device_name(device) if cuda else "cpu"),
        "gaussians": trainer.avatar.gaussians.num_gaussians,
        "batch_size": trainer.cfg.schedule.batch_size,
        "resolution": trainer.train_set.size,
        "step_ms": step_ms,
        "it_per_s": 1000.0 / step_ms,
        "parts": parts,
        "all_kernels_ms": kernels,
        "device_busy": kernels / step_ms if cuda else None,
        "top_ops": [{"name": e.key, "ms": getattr(e, key) / 1000 * per_step, "calls": e.count} for e in top],
    }


def print_report(report: dict) -> None:
    """Print the parts table, the totals and the top operators."""
    print(
        f"{report['device']}: {report['gaussians']} Gaussians, batch {report['batch_size']},"
        f" {report['resolution']} px; {report['step_ms']:.2f} ms a step ({report['it_per_s']:.1f} it/s)"
    )
    print(f"{'part':<18}{'host ms':>10}{'device ms':>11}")
    for name, part in report["parts"].items():
        print(f"{name:<18}{part['host_ms']:>10.2f}{part['device_ms']:>11.2f}")
    if report["device_busy"] is not None:
        print(f"{'all kernels':<18}{'':>10}{report['all_kernels_ms']:>11.2f}")
        print(f"device busy {report['device_busy']:.0%} of the step")
    print("top operators (ms a step, calls in all):")
    for op in report["top_ops"]:
        print(f"  {op['ms']:8.3f}  {op['calls']:6d}  {op['name']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: build the trainer, profile, print (and write --out) -> exit code."""
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="egstalker_profile_") as scratch:
        trainer = make_trainer(args, Path(scratch), device)
        report = measure(trainer, args, device)
    print_report(report)
    if args.out is not None:
        write_report(args.out, report, args)
    return 0


if __name__ == "__main__":
    run_cli(main)
