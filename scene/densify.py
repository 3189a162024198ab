"""Densification strategy (after gsplat's DefaultStrategy): grow, split, prune and opacity reset, kept apart
from the model; it edits the Gaussian parameters and their Adam states in place."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gaussian_renderer import RenderOutput
from gaussian_renderer.projection import quat_to_rotmat
from scene.train_config import DensifyConfig


def update_rows(
    params: nn.ParameterDict,
    optimizers: dict[str, torch.optim.Optimizer],
    keep: Tensor,
    new_rows: dict[str, Tensor] | None = None,
) -> None:
    """Keep rows `keep` (index [K]) of every parameter and append `new_rows[name]` ([M,...]); Adam moments
    of kept rows follow their rows and appended rows start at zero."""

    def edit(name: str, old: Tensor, fill_zero: bool) -> Tensor:
        kept = old[keep]
        if new_rows is None:
            return kept
        extra = torch.zeros_like(new_rows[name]) if fill_zero else new_rows[name].to(old.dtype)
        return torch.cat([kept, extra])

    for name in list(params.keys()):
        old_param = params[name]
        new_param = nn.Parameter(
            edit(name, old_param.data, fill_zero=False), requires_grad=old_param.requires_grad
        )
        optimizer = optimizers[name]
        group = next(g for g in optimizer.param_groups if any(p is old_param for p in g["params"]))
        group["params"] = [new_param if p is old_param else p for p in group["params"]]
        state = optimizer.state.pop(old_param, None)
        if state is not None:
            optimizer.state[new_param] = {
                k: edit(name, v, fill_zero=True) if k in ("exp_avg", "exp_avg_sq") else v
                for k, v in state.items()
            }
        params[name] = new_param


@dataclass
class DensifyStrategy:
    """Adaptive density control of the canonical Gaussians: thresholds of `cfg` (sizes relative to
    `scene_scale`), densifying until step `refine_stop` (cfg.refine_until of the run's iterations)."""

    cfg: DensifyConfig
    scene_scale: float
    refine_stop: int

    def initialize_state(self, num_gaussians: int, device: torch.device | str) -> dict[str, Any]:
        """Fresh statistics: grad2d [N] (sum of screen-space gradient norms), count [N] (visible steps)."""
        return {
            "grad2d": torch.zeros(num_gaussians, device=device),
            "count": torch.zeros(num_gaussians, device=device),
        }

    @torch.no_grad()
    def step_post_backward(
        self,
        params: nn.ParameterDict,
        optimizers: dict[str, torch.optim.Optimizer],
        state: dict[str, Any],
        step: int,
        info: RenderOutput,
    ) -> None:
        """Accumulate stats from info (means2d grad [B,N,2], kept by the renderer; radii [B,N]); grow, prune
        and reset on schedule."""
        if step >= self.refine_stop or info.means2d.grad is None:
            return
        self._accumulate(state, info)
        if step > self.cfg.refine_start and step % self.cfg.refine_every == 0:
            self._grow(params, optimizers, state)
            self._prune(params, optimizers, state, step)
            state.update(self.initialize_state(params["means"].shape[0], params["means"].device))
        if step > 0 and step % self.cfg.reset_every == 0:
            self._reset_opacity(params, optimizers)

    def _accumulate(self, state: dict[str, Any], info: RenderOutput) -> None:
        """Add screen-space gradient norms (scaled to NDC units, as gsplat) of the visible Gaussians."""
        grads = info.means2d.grad.detach()
        batch, height, width = info.image.shape[:3]
        grads = torch.stack(
            [grads[..., 0] * (width / 2 * batch), grads[..., 1] * (height / 2 * batch)], dim=-1
        )
        visible = (info.radii > 0).to(grads.dtype)
        state["grad2d"] += (grads.norm(dim=-1) * visible).sum(0)
        state["count"] += visible.sum(0)

    def _grow(
        self, params: nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer], state: dict
    ) -> None:
        """Clone small, split large Gaussians with mean gradient > grow_grad2d (up to max_gaussians)."""
        avg = state["grad2d"] / state["count"].clamp_min(1)
        n = avg.shape[0]
        high = avg > self.cfg.grow_grad2d
        budget = max(self.cfg.max_gaussians - n, 0)
        if int(high.sum()) > budget:
            high = torch.zeros_like(high)
            high[torch.topk(avg, budget).indices] = True
        scales = torch.exp(params["log_scales"].data)
        small = scales.max(dim=-1).values <= self.cfg.grow_scale3d * self.scene_scale
        clone, split = high & small, high & ~small
        if clone.any():
            update_rows(
                params,
                optimizers,
                torch.arange(n, device=avg.device),
                {k: v[clone] for k, v in params.items()},
            )
        if split.any():
            self._split(params, optimizers, torch.cat([split, split.new_zeros(int(clone.sum()))]))

    def _split(
        self, params: nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer], mask: Tensor
    ) -> None:
        """Replace each masked Gaussian by two samples from it with scales / 1.6."""
        sel = {k: v.data[mask] for k, v in params.items()}
        scales = torch.exp(sel["log_scales"])
        rot = quat_to_rotmat(sel["quats"])
        offsets = torch.einsum(
            "nij,snj->sni", rot, scales * torch.randn(2, *scales.shape, device=scales.device)
        )
        new = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in sel.items()}
        new["means"] = (sel["means"] + offsets).reshape(-1, 3)
        new["log_scales"] = new["log_scales"] - math.log(1.6)
        update_rows(params, optimizers, torch.nonzero(~mask).squeeze(1), new)

    def _prune(
        self, params: nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer], state: dict, step: int
    ) -> None:
        """Remove nearly transparent Gaussians and, after the first opacity reset, huge ones."""
        prune = torch.sigmoid(params["opacity_logits"].data) < self.cfg.prune_opa
        if step > self.cfg.reset_every:
            scales = torch.exp(params["log_scales"].data).max(dim=-1).values
            prune |= scales > self.cfg.prune_scale3d * self.scene_scale
        if prune.any():
            update_rows(params, optimizers, torch.nonzero(~prune).squeeze(1))

    def _reset_opacity(self, params: nn.ParameterDict, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Clamp opacities to at most 2 * prune_opa and zero their Adam moments."""
        cap = math.log(2 * self.cfg.prune_opa / (1 - 2 * self.cfg.prune_opa))
        param = params["opacity_logits"]
        param.data.clamp_(max=cap)
        for key, value in optimizers["opacity_logits"].state.get(param, {}).items():
            if key in ("exp_avg", "exp_avg_sq"):
                value.zero_()
