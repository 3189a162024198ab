"""The avatar: canonical Gaussians + the audio-driven deformation network, rendered over the background."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from gaussian_renderer import RenderOutput, render
from scene.dataset import FrameBatch
from scene.deformation import DeformationNetwork, DeformConfig, Deltas
from scene.gaussians import GaussianParams

STAGES = ("coarse", "fine")


class Gaussians(NamedTuple):
    """Activated Gaussians ready to render: [N,...] (canonical) or [B,N,...] (per frame)."""

    means: Tensor  # [..., 3]
    quats: Tensor  # [..., 4] (w,x,y,z), unnormalised
    scales: Tensor  # [..., 3] linear
    opacities: Tensor  # [...] in [0,1]
    colors: Tensor  # [..., 3] RGB in [0,1]


class Avatar(nn.Module):
    """GaussianParams (`gaussians`) + DeformationNetwork (`deform`) over the canonical bounds [2,3]."""

    def __init__(self, gaussians: GaussianParams, deform_cfg: DeformConfig, bounds: Tensor) -> None:
        """Wrap canonical Gaussians and build the deformation network for `bounds` [2,3]."""
        super().__init__()
        self.gaussians = gaussians
        self.deform_cfg = deform_cfg
        self.register_buffer("bounds", bounds.detach().clone().float())
        self.deform = DeformationNetwork(deform_cfg, self.bounds)

    @property
    def scene_scale(self) -> float:
        """Half the diagonal of the canonical bounds: the unit of positions and translations."""
        return float((self.bounds[1] - self.bounds[0]).norm() / 2)

    def canonical(self) -> Gaussians:
        """The undeformed Gaussians [N,...]."""
        g = self.gaussians
        p = g.params
        return Gaussians(p["means"], p["quats"], g.scales, g.opacities, g.colors)

    def deltas(self, batch: FrameBatch, tracked_lips: bool = False, amp: bool = False) -> Deltas:
        """Per-frame offsets [B,N,...] (float32) from the frames' audio, eye and camera conditions (with
        `tracked_lips`, the batch's tracked lip measures in place of the audio's prediction of them: training
        of audio_code 'lips'); `amp` runs the network under bf16 autocast on CUDA."""
        means = self.gaussians.params["means"]
        lips = batch.lips if tracked_lips else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and means.is_cuda):
            d = self.deform(means, batch.audio, batch.eye, batch.cam, lips)
        return Deltas(*(t.float() for t in (d.d_xyz, d.d_rot, d.d_scale, d.d_opacity, d.d_color)))

    def apply_deltas(self, d: Deltas) -> Gaussians:
        """Per-frame Gaussians [B,N,...] = canonical parameters + offsets, then activated."""
        p = self.gaussians.params
        return Gaussians(
            means=p["means"] + d.d_xyz,
            quats=p["quats"] + d.d_rot,
            scales=torch.exp(p["log_scales"] + d.d_scale),
            opacities=torch.sigmoid(p["opacity_logits"] + d.d_opacity.squeeze(-1)),
            colors=torch.sigmoid(p["color_logits"] + d.d_color),
        )

    def render_with_deltas(
        self,
        batch: FrameBatch,
        stage: str = "fine",
        backend: str = "auto",
        tracked_lips: bool = False,
        amp: bool = False,
    ) -> tuple[RenderOutput, Deltas | None]:
        """Render the batch ("coarse": canonical, "fine": deformed) over its background; also the offsets."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        with record_function("avatar.deform"):
            deltas = self.deltas(batch, tracked_lips, amp) if stage == "fine" else None
            g = self.canonical() if deltas is None else self.apply_deltas(deltas)
        with record_function("avatar.rasterize"):
            out = render(
                *g,
                batch.viewmat,
                batch.K,
                batch.width,
                batch.height,
                background=batch.background,
                backend=backend,
            )
        return out, deltas

    def render(
        self,
        batch: FrameBatch,
        stage: str = "fine",
        backend: str = "auto",
        amp: bool = False,
    ) -> RenderOutput:
        """RenderOutput (image [B,H,W,3] over batch.background) of the batch in `stage` coarse|fine."""
        return self.render_with_deltas(batch, stage, backend, amp=amp)[0]
