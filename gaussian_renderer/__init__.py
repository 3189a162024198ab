"""One `render(...)` entry for 3D Gaussians: gsplat 1.5.3 on CUDA, a pure-PyTorch rasterizer elsewhere.

Both backends use gsplat's maths: EWA projection with a 0.3 px^2 low-pass, per-axis 3.33-sigma boxes (tighter
for faint splats), alpha = min(0.999, opacity * exp(-d^T Sigma^-1 d / 2)) skipped below 1/255, front-to-back
compositing by camera depth, stopping before transmittance falls to 1e-4, culling before the near plane 0.01
and outside the image.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from gaussian_renderer.projection import EPS2D, FAR_PLANE, NEAR_PLANE, project_gaussians
from gaussian_renderer.torch_rasterizer import rasterize_torch

BACKENDS = ("auto", "gsplat", "torch")


@dataclass
class RenderOutput:
    """Rendered batch. After backward, `means2d.grad` is d(loss)/d(centre) in pixels, unscaled like gsplat's
    `info["means2d"].grad`; gsplat-style densification multiplies it by (W/2, H/2) and the camera count."""

    image: Tensor  # [B,H,W,3] composited over the background
    alpha: Tensor  # [B,H,W,1]
    means2d: Tensor  # [B,N,2] projected centres in pixels (retain_grad() called when it requires grad)
    radii: Tensor  # [B,N] int32, max of gsplat's per-axis radii; 0 = not visible


def _check_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
) -> None:
    """Raise ValueError naming the first tensor whose shape does not fit the render() contract."""
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [B,4,4], got {list(viewmats.shape)}")
    num_cams = viewmats.shape[0]
    if Ks.shape != (num_cams, 3, 3):
        raise ValueError(f"Ks must be [{num_cams},3,3] to match viewmats, got {list(Ks.shape)}")
    if means.dim() not in (2, 3) or means.shape[-1] != 3:
        raise ValueError(f"means must be [B,N,3] or [N,3], got {list(means.shape)}")
    lead = means.shape[:-1]
    if means.dim() == 3 and lead[0] != num_cams:
        raise ValueError(f"means has batch {lead[0]} but there are {num_cams} cameras")
    expected = {
        "quats": (quats, lead + (4,)),
        "scales": (scales, lead + (3,)),
        "opacities": (opacities, lead),
        "colors": (colors, lead + (3,)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"{name} must be {list(shape)} to match means, got {list(tensor.shape)}")


def _composite(rgb: Tensor, alpha: Tensor, background: Tensor | None) -> Tensor:
    """rgb [B,H,W,3] + (1 - alpha [B,H,W,1]) * background ([B,H,W,3] image, [3] colour or None = black)."""
    if background is None:
        return rgb
    if background.shape not in (rgb.shape, (3,)):
        raise ValueError(f"background must be {list(rgb.shape)} or [3], got {list(background.shape)}")
    return rgb + (1.0 - alpha) * background.to(rgb.dtype)


def render(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    backend: str = "auto",
) -> RenderOutput:
    """Render Gaussians ([B,N,...] per camera or [N,...] shared: means, quats wxyz, linear scales, opacities
    [0,1], RGB colors) for viewmats [B,4,4] (world->camera, OpenCV) and Ks [B,3,3] -> RenderOutput."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks)
    means, quats, scales, opacities, colors = (
        t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
        for t in (means, quats, scales, opacities, colors)
    )
    num_cams, num_gauss = viewmats.shape[0], means.shape[-2]
    if backend == "gsplat" or (backend == "auto" and means.is_cuda):
        from gaussian_renderer.gsplat_backend import rasterize_gsplat

        rgb, alpha, means2d, radii = rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, NEAR_PLANE, FAR_PLANE, EPS2D
        )
    else:
        proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height)
        rgb, alpha = rasterize_torch(
            proj, colors.expand(num_cams, num_gauss, 3), opacities.expand(num_cams, num_gauss), width, height
        )
        means2d, radii = proj.means2d, proj.radii
    if means2d.requires_grad:
        means2d.retain_grad()
    return RenderOutput(
        image=_composite(rgb, alpha, background),
        alpha=alpha,
        means2d=means2d,
        radii=radii.amax(-1).to(torch.int32),
    )
