"""Kolmogorov-Arnold network layers with Gaussian radial basis functions (FastKAN style)."""

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rbf_expand(x: Tensor, norm_weight: Tensor, norm_bias: Tensor, centres: Tensor, scale: float) -> Tensor:
    """Layer-normalise x [..., F] and expand each value by Gaussian RBFs at centres [G] -> [..., F*G]."""
    h = F.layer_norm(x, x.shape[-1:], norm_weight * scale, norm_bias * scale).to(x.dtype)
    diff = h.unsqueeze(-1) - (centres * scale).to(x.dtype)
    return torch.exp(torch.addcmul(diff.new_zeros(()), diff, diff, value=-1.0)).flatten(-2)


@functools.cache
def fused_rbf_expand() -> Callable[..., Tensor]:
    """rbf_expand compiled into one kernel (eager makes three passes); built on first use."""
    return torch.compile(rbf_expand, dynamic=True)


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
        self.fused = False  # set by fuse_rbf: the inference renderer's choice, never training's

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to x [..., in_features] -> [..., out_features]."""
        expand = fused_rbf_expand() if self.fused else rbf_expand
        rows = x.reshape(-1, x.shape[-1])  # 2-D input keeps the compiled kernel from specialising on B=1
        basis = expand(rows, self.norm.weight, self.norm.bias, self.grid, self.inv_width)
        basis = basis.view(*x.shape[:-1], basis.shape[-1])
        return self.spline(basis) + self.base(F.silu(x))

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


class KANHeads(nn.Module):
    """Separate KAN heads [in, *hidden, out_i], one per output; their first layers share the input layer norm
    and run as one matmul (the RBF expansion of the shared input is computed once)."""

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        out_dims: dict[str, int],
        num_grids: int = 8,
        grid_range: tuple[float, float] = (-2.0, 2.0),
    ) -> None:
        """Build one head per name in out_dims; every head starts with zero output."""
        super().__init__()
        self.names = list(out_dims)
        self.split_sizes = [hidden[0] if hidden else out_dims[n] for n in self.names]
        self.first = KANLinear(in_features, sum(self.split_sizes), num_grids, grid_range)
        self.rest = nn.ModuleDict(
            {n: KAN([hidden[0], *hidden[1:], out_dims[n]], num_grids, grid_range) for n in self.names}
            if hidden
            else {}
        )
        if hidden:
            for head in self.rest.values():
                head.zero_output_()
        else:
            self.first.zero_()

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Map x [..., in_features] -> {name: [..., out_dims[name]]}."""
        parts = self.first(x).split(self.split_sizes, dim=-1)
        if not self.rest:
            return dict(zip(self.names, parts, strict=True))
        return {n: self.rest[n](p) for n, p in zip(self.names, parts, strict=True)}


def fuse_rbf(module: nn.Module, fused: bool) -> None:
    """Make every KANLinear in `module` expand with the compiled one-kernel RBF (fused) or eagerly."""
    for layer in module.modules():
        if isinstance(layer, KANLinear):
            layer.fused = fused
