"""Pure-PyTorch differentiable rasterizer of projected Gaussians (CPU path), gsplat 1.5.3 compositing rules.

Each Gaussian is evaluated only where it can matter. Without autograd, one band of image rows at a time, we
walk each visible Gaussian row by row over its box and enumerate only the pixels of that row inside the
ellipse where alpha >= 1/255 (solved analytically, then checked exactly), sort the (pixel, Gaussian) pairs
by pixel (pairs were made in depth order and the sort is stable) and drop those at or after the point where
the pixel's transmittance would fall to 1e-4. The kept pairs are then composited with autograd:
alpha_i * T_i with T_i = exp(segmented exclusive cumsum of log(1 - alpha)) in float64, scatter-added into
the pixels. No Python loop runs over Gaussians or pixels.
"""

import math

import torch
from torch import Tensor

from gaussian_renderer.projection import ALPHA_THRESHOLD, MAX_ALPHA, TRANSMITTANCE_MIN, Projection

_SPAN_MARGIN = 1e-3  # px added to each row's analytic span; the exact alpha test then drops any extra pixel
_BAND_PIXELS = 8192  # pairs are built one band of image rows at a time: cache-sized arrays, int16 sort keys


def _exclusive_log_t(alpha: Tensor, starts: Tensor) -> Tensor:
    """log transmittance before each pair [P] (float64): segmented exclusive cumsum of log(1 - alpha [P]),
    segments given by starts [P] (index of the first pair of each pair's pixel)."""
    log_keep = torch.log1p(-alpha.double())
    excl = torch.cumsum(log_keep, 0) - log_keep
    return excl - excl.index_select(0, starts)


def _segment_starts(pixel_ids: Tensor) -> Tensor:
    """For sorted pixel ids [P], the index of the first pair of each pair's pixel [P]."""
    new_segment = torch.ones_like(pixel_ids, dtype=torch.bool)
    new_segment[1:] = pixel_ids[1:] != pixel_ids[:-1]
    first = torch.nonzero(new_segment).squeeze(1)
    return first.index_select(0, torch.cumsum(new_segment, 0) - 1)


def _select(mask: Tensor, *tensors: Tensor) -> list[Tensor]:
    """Rows of each tensor where mask [P] is true (one nonzero, then index_select)."""
    idx = torch.nonzero(mask).squeeze(1)
    return [t.index_select(0, idx) for t in tensors]


def _spans(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Expand counts [K] into (owner [S], index within the owner's run [S]), S = counts.sum()."""
    owner = torch.repeat_interleave(counts)
    first = (torch.cumsum(counts, 0) - counts).index_select(0, owner)
    return owner, torch.arange(owner.numel(), device=counts.device) - first


def _band_pairs(
    vis: Tensor, row_lo: Tensor, row_hi: Tensor, band: tuple[int, int], feats: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Contributing pairs in the rows band = (first, end) of the B*H stacked image rows, sorted by (pixel,
    depth) -> (flat Gaussian index [P] into B*N, pixel id [P] into B*H*W).

    vis [K]: visible flat Gaussian indices sorted by (camera, depth); row_lo, row_hi [K]: their stacked-image
    row ranges; feats [B*N,6]: (mean x, mean y, conic a, b, c, opacity). Each Gaussian is walked row by row;
    on each row only the pixels inside the ellipse where alpha >= 1/255 are enumerated."""
    first, end = band
    sel = torch.nonzero((row_hi >= first) & (row_lo < end)).squeeze(1)
    lo, hi = row_lo.index_select(0, sel).clamp(min=first), row_hi.index_select(0, sel).clamp(max=end - 1)
    row_owner, row_local = _spans((hi - lo + 1).clamp(min=0))
    gauss = vis.index_select(0, sel).index_select(0, row_owner)
    row = lo.index_select(0, row_owner) + row_local
    mx, my, a, b, c, opac = feats.index_select(0, gauss).unbind(-1)
    dy = my - ((row % height).to(feats.dtype) + 0.5)
    # alpha >= 1/255  <=>  sigma = 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= log(opacity / ALPHA_THRESHOLD);
    # the conic is positive definite, so gsplat's "sigma < 0" skip never applies
    lin, quad = b * dy, 0.5 * c * dy * dy
    disc = lin * lin - 2 * a * (quad - torch.log(opac / ALPHA_THRESHOLD))
    root = torch.sqrt(disc.clamp(min=0))
    x_lo = torch.ceil(mx - (root - lin) / a - 0.5 - _SPAN_MARGIN).clamp(min=0)
    x_hi = torch.floor(mx + (root + lin) / a - 0.5 + _SPAN_MARGIN).clamp(max=width - 1)
    pair_row, local = _spans(torch.where(disc >= 0, x_hi - x_lo + 1, 0).clamp(min=0).long())
    row_ints = torch.stack([gauss, (row - first) * width + x_lo.long()], -1).index_select(0, pair_row)
    row_floats = torch.stack([mx - x_lo - 0.5, a, lin, quad, opac], -1).index_select(0, pair_row)
    dx = row_floats[:, 0] - local
    sigma = 0.5 * row_floats[:, 1] * dx * dx + row_floats[:, 2] * dx + row_floats[:, 3]
    alpha = torch.clamp(row_floats[:, 4] * torch.exp(-sigma), max=MAX_ALPHA)
    key = row_ints[:, 1] + local
    key = key.short() if (end - first) * width <= 2**15 else key.int()  # int16 sorts several times faster
    gauss, key, alpha = _select(alpha >= ALPHA_THRESHOLD, row_ints[:, 0], key, alpha)
    key, perm = torch.sort(key, stable=True)
    gauss, alpha = gauss.index_select(0, perm), alpha.index_select(0, perm)
    starts = _segment_starts(key)
    alive = _exclusive_log_t(alpha, starts) + torch.log1p(-alpha.double()) > math.log(TRANSMITTANCE_MIN)
    gauss, key = _select(alive, gauss, key)
    return gauss, key.long() + first * width


@torch.no_grad()
def _contributing_pairs(proj: Projection, feats: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """All pairs that gsplat would composite, sorted by (pixel, depth): flat Gaussian index [P] into B*N and
    pixel id [P] into B*H*W, from feats [B*N,6] (mean x, mean y, conic a, b, c, opacity)."""
    num_cams, num_gauss = proj.depths.shape
    vis = torch.nonzero((proj.radii > 0).any(-1).flatten()).squeeze(1)
    vis = vis.index_select(0, torch.argsort(proj.depths.flatten().index_select(0, vis), stable=True))
    vis = vis.index_select(0, torch.argsort(vis // num_gauss, stable=True))
    mean_y = feats[:, 1].index_select(0, vis)
    ext_y = proj.extents.reshape(-1, 2)[:, 1].index_select(0, vis)
    cam_row = (vis // num_gauss) * height
    row_lo = torch.ceil(mean_y - ext_y - 0.5).clamp(min=0).long() + cam_row
    row_hi = torch.floor(mean_y + ext_y - 0.5).clamp(max=height - 1).long() + cam_row
    band_rows = max(1, _BAND_PIXELS // width)
    bands = [(r, min(r + band_rows, num_cams * height)) for r in range(0, num_cams * height, band_rows)]
    parts = [_band_pairs(vis, row_lo, row_hi, band, feats, width, height) for band in bands]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def rasterize_torch(
    proj: Projection, colors: Tensor, opacities: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians front to back: colors [B,N,C], opacities [B,N] -> rgb [B,H,W,C], alpha
    [B,H,W,1] (no background)."""
    num_cams, num_gauss = proj.depths.shape
    channels = colors.shape[-1]
    feats = torch.cat(
        [proj.means2d, proj.conics, opacities[..., None], colors.expand(num_cams, num_gauss, channels)], -1
    ).reshape(num_cams * num_gauss, 6 + channels)
    gauss, pixel_id = _contributing_pairs(proj, feats[:, :6].detach(), width, height)
    # unbind (not column slicing): its backward stacks the column gradients once instead of zero-filling
    # a [P, 6 + C] tensor per column
    mx, my, a, b, c, opac, *color = feats.index_select(0, gauss).unbind(-1)
    dx = mx - ((pixel_id % width).to(feats.dtype) + 0.5)
    dy = my - ((pixel_id // width % height).to(feats.dtype) + 0.5)
    alpha = torch.clamp(opac * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy)), max=MAX_ALPHA)
    weight = alpha * torch.exp(_exclusive_log_t(alpha, _segment_starts(pixel_id))).to(alpha.dtype)
    contrib = torch.stack([weight * ch for ch in color] + [weight], -1)
    out = torch.zeros(num_cams * height * width, channels + 1, dtype=contrib.dtype, device=contrib.device)
    out = out.index_add(0, pixel_id, contrib).reshape(num_cams, height, width, channels + 1)
    return out[..., :channels], out[..., channels:]
