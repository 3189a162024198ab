"""Learned per-frame corrections of the tracked head poses (camera refinement during training)."""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from utils.rigid import rigid_matrix


def correction_units(scene_scale: float, device: torch.device | str = "cpu") -> Tensor:
    """Scale [6] from stored corrections to (radians, scene units): 1 for rotations, scene_scale for moves."""
    return torch.tensor([1.0, 1.0, 1.0, scene_scale, scene_scale, scene_scale], device=device)


def correct_viewmats(viewmats: Tensor, corrections: Tensor) -> Tensor:
    """Tracked world->camera matrices [T,4,4] with rigid corrections [T,6] (axis-angle, translation in scene
    units) applied -> [T,4,4]."""
    return viewmats @ rigid_matrix(corrections.to(viewmats))


def corrected_if_matching(viewmats: Tensor, corrections: Tensor | None) -> Tensor:
    """Viewmats [T,4,4] of a dataset split with a model's learned corrections [K,6] applied when they belong
    to it (K == T), else unchanged (with a note on stderr when corrections exist for another frame count)."""
    if corrections is None:
        return viewmats
    if corrections.shape[0] != viewmats.shape[0]:
        print(
            f"note: the model's pose corrections are for {corrections.shape[0]} frames, the reference has "
            f"{viewmats.shape[0]}; using the tracked poses",
            file=sys.stderr,
        )
        return viewmats
    return correct_viewmats(viewmats, corrections)


def corrections_from_state(state: dict[str, Tensor]) -> Tensor:
    """The applied corrections [T,6] (centred, translations in scene units) of a saved PoseCorrection."""
    module = PoseCorrection(state["delta"].shape[0], 1.0)
    module.load_state_dict({k: v.cpu() for k, v in state.items()})
    return module.centred().detach()


class PoseCorrection(nn.Module):
    """One rigid correction per training frame, `delta` [T,6] = (axis-angle, translation / scene_scale),
    zero at the start. A corrected camera sees the head moved by the correction: viewmat @ M(delta).
    The corrections are applied relative to their mean over all frames, so they cannot drift together: the
    canonical head stays where the tracker puts it on average, and uncorrected cameras (validation, new
    audio) still see it in place."""

    def __init__(self, num_frames: int, scene_scale: float) -> None:
        """Zero corrections for num_frames frames; translations are in units of scene_scale."""
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(num_frames, 6))
        self.register_buffer("unit", correction_units(scene_scale))

    def forward(self, viewmat: Tensor, index: Tensor) -> Tensor:
        """Corrected world->camera matrices [B,4,4] of frames `index` [B] with tracked viewmat [B,4,4]."""
        return correct_viewmats(viewmat, self.centred()[index])

    def centred(self) -> Tensor:
        """The corrections [T,6] minus their mean, translations in scene units."""
        return (self.delta - self.delta.mean(0)) * self.unit

    def magnitudes(self) -> tuple[float, float]:
        """(mean rotation in degrees, mean translation in scene units) of the corrections."""
        d = self.centred().detach()
        return float(d[:, :3].norm(dim=-1).mean().rad2deg()), float(d[:, 3:].norm(dim=-1).mean())
