"""Kolmogorov-Arnold network layers with Gaussian radial basis functions (FastKAN style)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KANLinear(nn.Module):
    """KAN layer: layer norm, then linear over RBF expansions of each input plus linear over SiLU(input)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
    ) -> None:
        """Create a layer mapping [..., in_features] -> [..., out_features] with `num_grids` RBF centres."""
        super().__init__()
        low, high = grid_range
        if num_grids < 2 or not high > low:
            raise ValueError(f"need num_grids >= 2 and grid_range high > low, got {num_grids}, {grid_range}")
        self.norm = nn.LayerNorm(in_features)
        self.register_buffer("grid", torch.linspace(low, high, num_grids))
        self.inv_width = (num_grids - 1) / (high - low)
        self.spline = nn.Linear(in_features * num_grids, out_features, bias=False)
        nn.init.trunc_normal_(self.spline.weight, std=0.1 / num_grids**0.5)
        self.base = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to x [..., in_features] -> [..., out_features]."""
        h = self.norm(x)
        basis = torch.exp(-((h.unsqueeze(-1) - self.grid) * self.inv_width).square())
        return self.spline(basis.flatten(-2)) + self.base(F.silu(x))

    def zero_(self) -> None:
        """Set all weights and biases to zero so the layer outputs zeros."""
        for p in self.parameters():
            if p is not self.norm.weight and p is not self.norm.bias:
                nn.init.zeros_(p)


class KAN(nn.Module):
    """Stack of KANLinear layers with the given widths [in, hidden..., out]."""

    def __init__(
        self, widths: list[int], num_grids: int = 8, grid_range: tuple[float, float] = (-2.0, 2.0)
    ) -> None:
        """Build len(widths)-1 layers; widths[0] is the input size, widths[-1] the output size."""
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"KAN needs at least an input and an output width, got {widths}")
        self.layers = nn.ModuleList(
            KANLinear(a, b, num_grids, grid_range) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map x [..., widths[0]] -> [..., widths[-1]]."""
        for layer in self.layers:
            x = layer(x)
        return x

    def zero_output_(self) -> None:
        """Zero the last layer so the network outputs exactly zero."""
        self.layers[-1].zero_()
