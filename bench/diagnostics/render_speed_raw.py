"""Rasterization-only speed of gaussian_renderer.render: frames per second for fixed random Gaussians.

    python -m bench.diagnostics.render_speed_raw [--synthetic 10000 20000 50000] [--batch_sizes 1 32]
        [--resolution 512] [--backward] [--out render_speed_raw.json]

On CUDA it times the gsplat backend; without CUDA the PyTorch backend on the CPU (defaults then shrink to
batch 1 and 2 timed runs, since a 512^2 frame takes seconds there). Per-frame (deformed) Gaussians
[B,N,...] are rendered, as in training; --backward also times forward+backward.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.diagnostics.rasterizer_agreement import PARAM_NAMES, random_scene
from bench.report import write_report
from gaussian_renderer import render
from utils.cli import ArgumentParser, run_cli


def _seconds_per_call(step: Callable[[], None], device: str, warmup: int, runs: int) -> float:
    """Median wall time (s) of step() after `warmup` untimed calls (the first gsplat call JIT-compiles)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(num: int, batch: int, size: int, device: str, backward: bool, warmup: int, runs: int) -> dict:
    """Time render() of `num` per-frame Gaussians for `batch` cameras at size^2 -> a result row."""
    scene = random_scene(num, size, seed=0, batch=batch, device=device)
    params = {
        k: scene[k].expand(batch, *scene[k].shape).clone().requires_grad_(backward) for k in PARAM_NAMES
    }
    background = torch.ones(3, device=device)

    def forward() -> torch.Tensor:
        """One batched render -> image [B,H,W,3]."""
        return render(
            **params,
            viewmats=scene["viewmats"],
            Ks=scene["Ks"],
            width=size,
            height=size,
            background=background,
        ).image

    def train_step() -> None:
        """Forward and backward of a plain sum."""
        forward().sum().backward()

    with torch.no_grad():
        fwd_s = _seconds_per_call(forward, device, warmup, runs)
    row = {"num": num, "batch": batch, "size": size, "forward_s": fwd_s, "forward_fps": batch / fwd_s}
    if backward:
        train_s = _seconds_per_call(train_step, device, warmup, runs)
        row.update({"train_step_s": train_s, "train_fps": batch / train_s})
    return row


def parse_args(argv: list[str] | None, cuda: bool) -> argparse.Namespace:
    """Command-line options; defaults depend on whether CUDA is present."""
    parser = ArgumentParser(
        prog="python -m bench.diagnostics.render_speed_raw", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        nargs="+",
        metavar="N",
        default=[10000, 20000, 50000],
        help="random scenes of N Gaussians to time (default: 10000 20000 50000)",
    )
    parser.add_argument(
        "--batch_sizes",
        type=int,
        nargs="+",
        default=[1, 32] if cuda else [1],
        help="frames rendered at once, each timed (default: 1 32 on CUDA, 1 on the CPU)",
    )
    parser.add_argument(
        "--resolution", type=int, default=512, help="square image size in pixels (default: 512)"
    )
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--warmup", type=int, default=3 if cuda else 1, help="untimed runs first")
    parser.add_argument(
        "--runs", type=int, default=20 if cuda else 2, help="timed runs, median reported (default: 20, CPU 2)"
    )
    parser.add_argument("--out", type=Path, default=Path("render_speed_raw.json"), help="report JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Time every (Gaussian count, batch size) pair, print a table, write JSON."""
    cuda = torch.cuda.is_available()
    args = parse_args(argv, cuda)
    device = "cuda" if cuda else "cpu"
    backend = "gsplat" if cuda else "torch"
    name = torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"backend {backend} on {name}, {args.resolution}x{args.resolution}", file=sys.stderr)
    rows = []
    for num in args.synthetic:
        for batch in args.batch_sizes:
            row = measure(num, batch, args.resolution, device, args.backward, args.warmup, args.runs)
            rows.append(row)
            extra = f"  train {row['train_fps']:8.1f} fps" if args.backward else ""
            print(f"N={num:6d} B={batch:3d}  forward {row['forward_fps']:8.1f} fps{extra}")
    report = {"backend": backend, "device": name, "torch": torch.__version__, "rows": rows}
    write_report(args.out, report, args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
