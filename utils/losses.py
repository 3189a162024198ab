"""Image losses and metrics for training: L1, weighted L1, SSIM / D-SSIM and PSNR on [B,H,W,3] images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute error of two equally shaped tensors -> scalar."""
    return (a - b).abs().mean()


def weighted_l1(a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
    """Mean of |a-b| * weight, `weight` broadcastable to a ([B,H,W,1] for images) -> scalar."""
    return ((a - b).abs() * weight).mean()


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    """Separable normalised Gaussian window as a depthwise conv kernel [channels,1,size,size]."""
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity of images a, b [B,H,W,C] in [0,1] (11x11 Gaussian window) -> scalar."""
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    channels = x.shape[1]
    w = _gaussian_window(window_size, sigma, channels, x)
    pad = window_size // 2
    mu_x = F.conv2d(x, w, padding=pad, groups=channels)
    mu_y = F.conv2d(y, w, padding=pad, groups=channels)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx = F.conv2d(x * x, w, padding=pad, groups=channels) - mu_xx
    s_yy = F.conv2d(y * y, w, padding=pad, groups=channels) - mu_yy
    s_xy = F.conv2d(x * y, w, padding=pad, groups=channels) - mu_xy
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_xy + c1) * (2 * s_xy + c2)
    den = (mu_xx + mu_yy + c1) * (s_xx + s_yy + c2)
    return (num / den).mean()


def dssim(a: Tensor, b: Tensor) -> Tensor:
    """Structural dissimilarity (1 - SSIM) / 2 of images [B,H,W,C] -> scalar."""
    return (1.0 - ssim(a, b)) / 2.0


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of images in [0,1] (MSE over all pixels) -> scalar; inf if equal."""
    mse = ((a.float() - b.float()) ** 2).mean()
    return -10.0 * torch.log10(mse)
