"""CUDA backend: gsplat 1.5.3 kernels (imported lazily; they JIT-compile on first use).

We call gsplat's public building blocks (fully_fused_projection, isect_tiles, isect_offset_encode,
rasterize_to_pixels), the same steps `gsplat.rasterization` runs for pinhole cameras, RGB, classic mode,
unpacked. Going one level down lets us hand the rasterizer a [B,N,2] `means2d` on which the caller can
`retain_grad()`: with per-camera Gaussians `gsplat.rasterization` keeps it as [B,1,N,2], and a reshaped
view of that would never receive a gradient.
"""

import math

from torch import Tensor

from utils.cli import UserError

TILE_SIZE = 16


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Render on CUDA -> (rgb [B,H,W,3], alpha [B,H,W,1], means2d [B,N,2], radii [B,N,2] int32).

    Gaussians are [B,N,...] (one set per camera) or [N,...] (shared); viewmats [B,4,4], Ks [B,3,3].
    """
    try:
        from gsplat import fully_fused_projection, isect_offset_encode, isect_tiles, rasterize_to_pixels
    except ImportError as err:
        raise UserError(
            f"gsplat is not importable ({err}); install it with 'pip install -r requirements-gpu.txt' "
            "or pass --backend torch"
        ) from err
    num_cams = viewmats.shape[0]
    shared = means.dim() == 2
    cams_view, cams_k = (viewmats, Ks) if shared else (viewmats[:, None], Ks[:, None])
    radii, means2d, depths, conics, _ = fully_fused_projection(
        means,
        None,
        quats,
        scales,
        cams_view,
        cams_k,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        packed=False,
        opacities=opacities,
    )
    if not shared:
        radii, means2d, depths, conics = radii[:, 0], means2d[:, 0], depths[:, 0], conics[:, 0]
    num_gauss = means.shape[-2]
    tiles_w, tiles_h = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    _, isect_ids, flatten_ids = isect_tiles(means2d, radii, depths, TILE_SIZE, tiles_w, tiles_h)
    offsets = isect_offset_encode(isect_ids, num_cams, tiles_w, tiles_h)
    rgb, alpha = rasterize_to_pixels(
        means2d,
        conics,
        colors.expand(num_cams, num_gauss, colors.shape[-1]),
        opacities.expand(num_cams, num_gauss),
        width,
        height,
        TILE_SIZE,
        offsets,
        flatten_ids,
    )
    return rgb, alpha, means2d, radii
