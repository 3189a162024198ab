"""Rigid-motion maths in PyTorch: axis-angle rotations and 6-number rigid transforms, safe at zero."""

from __future__ import annotations

import torch
from torch import Tensor

_SMALL = 1e-4


def skew(v: Tensor) -> Tensor:
    """Cross-product matrices [...,3,3] of vectors v [...,3]."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)


def so3_exp(aa: Tensor) -> Tensor:
    """Rotation matrices [...,3,3] of axis-angle vectors aa [...,3] (Rodrigues; exact gradients at 0)."""
    theta2 = (aa * aa).sum(-1)[..., None, None]
    small = theta2 < _SMALL**2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    k = skew(aa)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def rigid_matrix(delta: Tensor) -> Tensor:
    """Homogeneous rigid transforms [...,4,4] from delta [...,6] = (axis-angle rotation, translation)."""
    out = torch.zeros(*delta.shape[:-1], 4, 4, dtype=delta.dtype, device=delta.device)
    out[..., :3, :3] = so3_exp(delta[..., :3])
    out[..., :3, 3] = delta[..., 3:]
    out[..., 3, 3] = 1
    return out


def nearest_rotation_gap_deg(rot: Tensor, ref: Tensor) -> Tensor:
    """Angle in degrees [V] from each rotation of rot [V,3,3] to the nearest one of ref [T,3,3]."""
    cos = (torch.einsum("vij,tij->vt", rot, ref) - 1.0) / 2.0
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))).amin(dim=1)
