"""Multi-resolution tri-plane feature field over a bounded 3D box."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PLANE_AXES = ((0, 1), (0, 2), (1, 2))


class TriPlane(nn.Module):
    """XY, XZ and YZ feature planes at several resolutions, sampled bilinearly at 3D points."""

    def __init__(
        self,
        bounds: Tensor,
        resolutions: tuple[int, ...] = (32, 64, 128),
        channels: int = 16,
        combine: str = "product",
    ) -> None:
        """Build planes of `channels` features per resolution; `bounds` [2,3] = (min xyz, max xyz)."""
        super().__init__()
        bounds = torch.as_tensor(bounds, dtype=torch.float32).detach().clone()
        if bounds.shape != (2, 3) or not bool((bounds[1] > bounds[0]).all()):
            raise ValueError(f"bounds must be [2,3] with max > min on every axis, got {bounds.tolist()}")
        if combine not in ("product", "sum"):
            raise ValueError(f"combine must be 'product' or 'sum', got {combine!r}")
        self.combine = combine
        self.register_buffer("bounds", bounds)
        low, high = (0.1, 0.5) if combine == "product" else (-0.1, 0.1)
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(len(PLANE_AXES), channels, res, res).uniform_(low, high))
            for res in resolutions
        )
        self.out_dim = channels * len(resolutions)

    def normalize(self, xyz: Tensor) -> Tensor:
        """Map world points [N,3] into [-1,1]^3 by the scene bounds, clamping points outside."""
        low, high = self.bounds[0], self.bounds[1]
        return ((xyz - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0)

    def forward(self, xyz: Tensor) -> Tensor:
        """Sample features at points [N,3] -> [N, channels * len(resolutions)]."""
        p = self.normalize(xyz)
        grid = torch.stack([p[:, [i, j]] for i, j in PLANE_AXES])[:, None]  # [3,1,N,2]
        feats = []
        for plane in self.planes:
            sampled = F.grid_sample(plane, grid.to(plane.dtype), mode="bilinear", align_corners=True)
            sampled = sampled[:, :, 0].transpose(1, 2)  # [3,N,C]
            feats.append(sampled.prod(0) if self.combine == "product" else sampled.sum(0))
        return torch.cat(feats, dim=-1)

    def tv_loss(self) -> Tensor:
        """Total-variation regulariser: mean squared neighbour difference over all planes (scalar)."""
        loss = self.planes[0].new_zeros(())
        for plane in self.planes:
            loss = loss + (plane[..., 1:, :] - plane[..., :-1, :]).pow(2).mean()
            loss = loss + (plane[..., :, 1:] - plane[..., :, :-1]).pow(2).mean()
        return loss
