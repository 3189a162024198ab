"""Compare the gsplat and pure-PyTorch backends of gaussian_renderer.render on CUDA: pixels and gradients.

    python -m bench.diagnostics.rasterizer_agreement [--seeds 0 1 2] [--synthetic 1000 5000 20000]
        [--resolution 256 512] [--batch_size 2] [--out rasterizer_agreement.json]

Prints, per scene, the max and mean absolute pixel difference (image and alpha) and the relative L2 difference
of the gradients (means, quats, scales, opacities, colors, means2d), then writes all rows as JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from bench.report import write_report
from gaussian_renderer import render
from utils.cli import ArgumentParser, UserError, run_cli

PARAM_NAMES = ("means", "quats", "scales", "opacities", "colors")


def random_scene(num: int, size: int, seed: int, batch: int, device: str) -> dict[str, Tensor]:
    """A head-sized cloud (radius ~0.8) 4 units in front of `batch` slightly different cameras, Gaussians of
    1-30 px radius at `size`^2: means [N,3], quats [N,4], scales [N,3], opacities [N], colors [N,3],
    viewmats [B,4,4], Ks [B,3,3]."""
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(num, 3, generator=gen), dim=-1)
    radius = 0.8 * torch.rand(num, 1, generator=gen) ** (1 / 3)
    scene = {
        "means": direction * radius,
        "quats": torch.randn(num, 4, generator=gen),
        "scales": torch.exp(torch.empty(num, 3).uniform_(math.log(0.002), math.log(0.04), generator=gen)),
        "opacities": torch.rand(num, generator=gen) * 0.95 + 0.05,
        "colors": torch.rand(num, 3, generator=gen),
    }
    viewmats = torch.eye(4).repeat(batch, 1, 1)
    viewmats[:, :3, 3] = torch.tensor([0.0, 0.0, 4.0]) + 0.1 * torch.randn(batch, 3, generator=gen)
    focal = 2.0 * size
    scene["viewmats"] = viewmats
    scene["Ks"] = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]]).repeat(batch, 1, 1)
    return {k: v.to(device) for k, v in scene.items()}


def _render_with_grads(
    scene: dict[str, Tensor], size: int, per_camera: bool, backend: str, weights: Tensor, background: Tensor
) -> dict[str, Tensor]:
    """Render with `backend`, backpropagate sum(image * weights) -> image, alpha, radii and gradients."""
    batch = scene["viewmats"].shape[0]
    params = {k: scene[k].clone().requires_grad_() for k in PARAM_NAMES}
    inputs = {k: (v.expand(batch, *v.shape) if per_camera else v) for k, v in params.items()}
    out = render(
        **inputs,
        viewmats=scene["viewmats"],
        Ks=scene["Ks"],
        width=size,
        height=size,
        background=background,
        backend=backend,
    )
    (out.image * weights).sum().backward()
    result = {"image": out.image.detach(), "alpha": out.alpha.detach(), "radii": out.radii}
    result.update({f"grad_{k}": v.grad for k, v in params.items()})
    result["grad_means2d"] = out.means2d.grad
    return result


def compare(scene: dict[str, Tensor], size: int, per_camera: bool, seed: int) -> dict[str, float]:
    """Render one scene with both backends -> a row of pixel and gradient differences."""
    gen = torch.Generator().manual_seed(seed + 1000)
    batch = scene["viewmats"].shape[0]
    device = scene["means"].device
    weights = torch.rand(batch, size, size, 3, generator=gen).to(device)
    background = torch.rand(batch, size, size, 3, generator=gen).to(device)
    runs = {}
    for backend in ("gsplat", "torch"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        runs[backend] = _render_with_grads(scene, size, per_camera, backend, weights, background)
        torch.cuda.synchronize()
        runs[backend]["seconds"] = time.perf_counter() - start
    ref, test = runs["gsplat"], runs["torch"]
    row = {
        "image_max_abs": (ref["image"] - test["image"]).abs().max().item(),
        "image_mean_abs": (ref["image"] - test["image"]).abs().mean().item(),
        "alpha_max_abs": (ref["alpha"] - test["alpha"]).abs().max().item(),
        "radii_equal_fraction": (ref["radii"] == test["radii"]).float().mean().item(),
        "gsplat_seconds": ref["seconds"],
        "torch_seconds": test["seconds"],
    }
    for name in (*PARAM_NAMES, "means2d"):
        g_ref, g_test = ref[f"grad_{name}"], test[f"grad_{name}"]
        row[f"grad_{name}_rel"] = ((g_ref - g_test).norm() / g_ref.norm().clamp_min(1e-12)).item()
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = ArgumentParser(
        prog="python -m bench.diagnostics.rasterizer_agreement", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--synthetic",
        type=int,
        nargs="+",
        metavar="N",
        default=[1000, 5000, 20000],
        help="random scenes of N Gaussians (default: 1000 5000 20000)",
    )
    parser.add_argument(
        "--resolution", type=int, nargs="+", default=[256, 512], help="square image sizes in pixels (256 512)"
    )
    parser.add_argument("--batch_size", type=int, default=2, help="cameras rendered at once (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("rasterizer_agreement.json"), help="report JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run all scenes, print a table, write JSON."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise UserError(
            "rasterizer_agreement needs a CUDA GPU (gsplat runs only on CUDA); run it on a GPU machine"
        )
    rows = []
    print(
        f"{'size':>5} {'N':>6} {'seed':>4} {'layout':>10} {'img max':>9} {'img mean':>9} {'alpha max':>9} "
        + " ".join(f"{'d' + n:>9}" for n in (*PARAM_NAMES, "means2d")),
        file=sys.stderr,
    )
    for size in args.resolution:
        for num in args.synthetic:
            for seed in args.seeds:
                scene = random_scene(num, size, seed, args.batch_size, "cuda")
                for per_camera in (False, True):
                    row = {"size": size, "num": num, "seed": seed, "per_camera": per_camera}
                    row.update(compare(scene, size, per_camera, seed))
                    rows.append(row)
                    grads = " ".join(f"{row[f'grad_{n}_rel']:9.2e}" for n in (*PARAM_NAMES, "means2d"))
                    layout = "per_camera" if per_camera else "shared"
                    print(
                        f"{size:5d} {num:6d} {seed:4d} {layout:>10} {row['image_max_abs']:9.2e} "
                        f"{row['image_mean_abs']:9.2e} {row['alpha_max_abs']:9.2e} {grads}"
                    )
    worst = {k: max(r[k] for r in rows) for k in rows[0] if k.endswith(("_abs", "_rel"))}
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "gsplat": importlib.metadata.version("gsplat"),
        "worst": worst,
        "rows": rows,
    }
    write_report(args.out, report, args)
    print(f"worst: {worst}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
