"""Frames per second of avatar rendering (deformation network + rasterizer) at batch 1 and in batches.

    python -m bench.render_speed --model_path OUT --reference_path DATA  (a trained model)
    python -m bench.render_speed --synthetic 50000                      (untrained, N Gaussians)

Prints a table and writes JSON. Targets on one H100 at 512x512: >= 120 fps at batch 1, >= 300 fps in batches.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.report import write_report
from scene.audio_encoder import LIP_ENCODERS
from scene.avatar import Avatar
from scene.checkpoint import load_avatar
from scene.dataset import FrameBatch, read_transforms
from scene.deformation import DeformConfig
from scene.gaussians import GaussianParams
from scene.inference import InferenceRenderer
from scene.prediction import add_device_option, resolve_device
from utils.cli import ArgumentParser, UserError, run_cli

TARGET_FPS = {"single": 120.0, "batch": 300.0}
SYNTHETIC_DISTANCE = 4.0
CUDA_VARIANTS = ("fp32", "cache", "bf16+cache", "cache+compile", "bf16+cache+compile")
CPU_VARIANTS = ("fp32", "cache")


@dataclass
class Setup:
    """What is benchmarked: the avatar, one camera (c2w [4,4], K [3,3] per unit image size), its source."""

    avatar: Avatar
    c2w: torch.Tensor
    K: torch.Tensor
    source: str


def synthetic_avatar(
    num_gaussians: int,
    device: torch.device,
    lip_predictors: int = 1,
    seed: int = 0,
    lip_encoder: str = DeformConfig.lip_encoder,
) -> Setup:
    """Return an untrained avatar of N Gaussians on a head-sized ellipsoid with `lip_predictors` audio-to-lip
    predictors (2: as trained with a lip corpus) reading the audio through `lip_encoder`, seen from 4 units
    away."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(num_gaussians, 3, generator=gen), dim=-1)
    points = (
        direction * torch.tensor([0.75, 0.95, 0.8]) * (1 + 0.05 * torch.rand(num_gaussians, 1, generator=gen))
    )
    gaussians = GaussianParams(0)
    gaussians.set_from_points(points, torch.rand(num_gaussians, 3, generator=gen), init_opacity=0.5)
    mouth = {"mouth_centre": (0.0, -0.5, 0.7), "mouth_radius": 0.3}  # the ellipsoid's lower front
    deform = DeformConfig(**mouth, lip_predictors=lip_predictors, lip_encoder=lip_encoder)
    avatar = Avatar(gaussians, deform, gaussians.bounds())
    c2w = torch.eye(4)
    c2w[2, 3] = -SYNTHETIC_DISTANCE
    K = torch.tensor([[1.7, 0.0, 0.5], [0.0, 1.7, 0.5], [0.0, 0.0, 1.0]])
    predictors = f"{lip_predictors} lip predictor{'s' * (lip_predictors > 1)}, lip_encoder {lip_encoder}"
    source = f"synthetic ({num_gaussians} Gaussians, {predictors})"
    return Setup(avatar.to(device), c2w, K, source)


def trained_avatar(
    model_path: Path, reference_path: Path, iteration: int | None, device: torch.device
) -> Setup:
    """Return a trained avatar and the first training camera of its dataset (normalised intrinsics)."""
    loaded = load_avatar(model_path, iteration, device)
    meta = read_transforms(Path(reference_path), "train")
    frame = meta["frames"][0]
    size = float(meta["w"])
    c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float32)
    f, cx, cy = (float(meta[k]) / size for k in ("focal_len", "cx", "cy"))
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    return Setup(loaded.avatar, c2w, K, f"{model_path} (iteration {loaded.iteration})")


def make_batch(setup: Setup, batch_size: int, resolution: int, device: torch.device) -> FrameBatch:
    """Return a FrameBatch of `batch_size` frames with random audio, one camera and a grey background."""
    cfg = setup.avatar.deform_cfg
    K = setup.K.clone()
    K[:2] *= resolution
    c2w = setup.c2w.to(device).expand(batch_size, 4, 4)
    return FrameBatch(
        background=torch.full((batch_size, resolution, resolution, 3), 0.5, device=device),
        viewmat=torch.linalg.inv(c2w),
        K=K.to(device).expand(batch_size, 3, 3),
        audio=torch.randn(batch_size, cfg.audio_channels, cfg.audio_window, device=device),
        eye=torch.full((batch_size, 1), 0.8, device=device),
        cam=c2w[:, :3, :4].reshape(batch_size, 12),
    )


def make_renderer(avatar: Avatar, variant: str) -> InferenceRenderer:
    """Return a variant's renderer: 'fp32' renders as training does (no cache, no fused kernel); else the
    '+'-joined options bf16 (autocast), cache (tri-plane features once) and compile (torch.compile), with the
    fused RBF kernel that predict.sh uses."""
    options = set(variant.split("+"))
    return InferenceRenderer(
        avatar,
        bf16="bf16" in options,
        cache="cache" in options,
        compile="compile" in options,
        fuse=options != {"fp32"},
    )


def time_fps(fn: Callable[[], object], frames: int, warmup: int, runs: int, cuda: bool) -> dict:
    """Return {fps, ms_per_frame, runs} of `fn` rendering `frames` frames: median of runs after warm-up."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"fps": round(frames / median, 2), "ms_per_frame": round(1000 * median / frames, 3), "runs": runs}


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    p = ArgumentParser(
        prog="python -m bench.render_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model_path", type=Path, help="trained model folder (needs --reference_path)")
    src.add_argument(
        "--synthetic", type=int, metavar="N", help="benchmark an untrained avatar of N Gaussians"
    )
    p.add_argument(
        "--lip_predictors",
        type=int,
        choices=(1, 2),
        default=1,
        help="with --synthetic: audio-to-lip predictors (2: as train.sh builds with a lip corpus; default 1)",
    )
    p.add_argument(
        "--lip_encoder",
        choices=LIP_ENCODERS,
        default=DeformConfig().lip_encoder,
        help="with --synthetic: how the lip predictors read the audio (train.sh --lip_encoder; default: its)",
    )
    p.add_argument("--reference_path", type=Path, help="the model's dataset (for a camera)")
    p.add_argument("--iteration", type=int, help="checkpoint iteration (default: the latest)")
    p.add_argument("--resolution", type=int, default=512, help="square image size in pixels (default: 512)")
    p.add_argument(
        "--batch_sizes", type=int, nargs="+", default=[1, 32], help="batch sizes to time (default: 1 32)"
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default: 5)")
    p.add_argument("--runs", type=int, default=20, help="timed runs, median reported (default: 20)")
    add_device_option(p)
    p.add_argument(
        "--variants",
        nargs="+",
        help="options joined by '+': fp32 | bf16 (autocast, CUDA only), cache (tri-plane features), compile "
        f"(default: {' '.join(CUDA_VARIANTS)} on CUDA, {' '.join(CPU_VARIANTS)} on the CPU)",
    )
    p.add_argument(
        "--breakdown", action="store_true", help="also time the deformation network and rasterizer"
    )
    p.add_argument(
        "--out", type=Path, default=Path("results/bench/render_speed.json"), help="report JSON written"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Time every (variant, batch size), print a table and write the JSON report."""
    args = build_parser().parse_args(argv)
    if args.model_path is not None and args.reference_path is None:
        raise UserError("--model_path needs --reference_path (the dataset, for a camera)")
    if args.model_path is not None and args.lip_predictors != 1:
        raise UserError("--lip_predictors is for --synthetic; a trained model keeps the count it was trained")
    if args.model_path is not None and args.lip_encoder != DeformConfig().lip_encoder:
        raise UserError("--lip_encoder is for --synthetic; a trained model keeps the encoder it was trained")
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.synthetic is not None:
        setup = synthetic_avatar(args.synthetic, device, args.lip_predictors, lip_encoder=args.lip_encoder)
    else:
        setup = trained_avatar(args.model_path, args.reference_path, args.iteration, device)
    setup.avatar.eval()
    variants = [
        v for v in args.variants or (CUDA_VARIANTS if cuda else CPU_VARIANTS) if cuda or "bf16" not in v
    ]
    unknown = sorted({o for v in variants for o in v.split("+")} - {"fp32", "bf16", "cache", "compile"})
    if unknown:
        raise UserError(f"unknown variant option(s) {', '.join(unknown)}; use fp32, bf16, cache, compile")
    rows = []
    with torch.inference_mode():
        for variant in variants:
            renderer = make_renderer(setup.avatar, variant)
            for bs in args.batch_sizes:
                batch = make_batch(setup, bs, args.resolution, device)
                timing = time_fps(lambda b=batch, r=renderer: r(b), bs, args.warmup, args.runs, cuda)
                row = {"variant": variant, "batch_size": bs, **timing}
                if args.breakdown:
                    deform = time_fps(
                        lambda b=batch, r=renderer: r.deltas(b), bs, args.warmup, args.runs, cuda
                    )
                    raster = time_fps(
                        lambda b=batch: setup.avatar.render(b, "coarse"), bs, 2, args.runs, cuda
                    )
                    row.update(
                        deform_ms_per_frame=deform["ms_per_frame"], raster_ms_per_frame=raster["ms_per_frame"]
                    )
                rows.append(row)
                print(f"{variant:>11} batch {bs:>3}: {timing['fps']:.1f} fps", file=sys.stderr)
    report = summarise(rows, setup, args, device)
    write_report(args.out, report, args)
    print_table(report)
    print(f"wrote {args.out}")
    return 0


def summarise(rows: list[dict], setup: Setup, args: argparse.Namespace, device: torch.device) -> dict:
    """Return the JSON report: environment, results and the best fps against the targets."""
    single = max((r["fps"] for r in rows if r["batch_size"] == 1), default=math.nan)
    batched = max((r["fps"] for r in rows if r["batch_size"] > 1), default=math.nan)
    return {
        "source": setup.source,
        "num_gaussians": setup.avatar.gaussians.num_gaussians,
        "resolution": args.resolution,
        "device": f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "results": rows,
        "best": {"single": single, "batch": batched},
        "targets": TARGET_FPS,
        "meets_targets": device.type == "cuda"
        and single >= TARGET_FPS["single"]
        and batched >= TARGET_FPS["batch"],
    }


def print_table(report: dict) -> None:
    """Print the results as a table with the best figures against the targets."""
    size = report["resolution"]
    print(
        f"render speed: {report['source']}, {report['num_gaussians']} Gaussians, {size}x{size}, "
        f"{report['device']}"
    )
    print(f"{'variant':>14} {'batch':>6} {'fps':>10} {'ms/frame':>10} {'deform ms':>10} {'raster ms':>10}")
    for r in report["results"]:
        keys = ("fps", "ms_per_frame", "deform_ms_per_frame", "raster_ms_per_frame")
        figures = " ".join(f"{r.get(k, math.nan):>10.2f}" for k in keys)
        print(f"{r['variant']:>14} {r['batch_size']:>6} {figures}")
    best, target = report["best"], report["targets"]
    print(
        f"best: batch 1 {best['single']:.1f} fps (target {target['single']:.0f}), "
        f"batched {best['batch']:.1f} fps (target {target['batch']:.0f})"
    )


if __name__ == "__main__":
    run_cli(main)
