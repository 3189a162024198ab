"""Avatar.compile_deformation: the compiled network gives the eager offsets and gradients, and compiles once
while densification changes the Gaussian count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from scene.avatar import Avatar
from scene.dataset import TalkingHeadDataset
from scene.deformation import DeformConfig
from scene.gaussians import init_from_track
from tests.dataset_factory import make_dataset


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic subject (8 frames at 32x32)."""
    return make_dataset(tmp_path_factory.mktemp("compile") / "subject", frames=8, size=32, fps=4)


def _avatar(subject: Path, ds: TalkingHeadDataset) -> Avatar:
    """A small avatar with non-zero offsets (its output heads perturbed away from the zero start)."""
    torch.manual_seed(0)
    gaussians = init_from_track(torch.load(subject / "track_params.pt"), 300, seed=0)
    channels, window = ds.audio_shape
    cfg = DeformConfig(
        triplane_resolutions=(8, 16), triplane_channels=4, token_dim=16, heads=2, kan_hidden=(8,),
        audio_channels=channels, audio_window=window,
    )  # fmt: skip
    avatar = Avatar(gaussians, cfg, gaussians.bounds() * 1.2)
    with torch.no_grad():
        for p in avatar.deform.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return avatar


def _offsets_and_grads(avatar: Avatar, batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Offsets of the batch and the gradients of a loss on them w.r.t. the means and the network."""
    params = [avatar.gaussians.params["means"], *avatar.deform.parameters()]
    deltas = avatar.deltas(batch)
    out = [deltas.d_xyz, deltas.d_rot, deltas.d_scale, deltas.d_opacity, deltas.d_color]
    loss = sum((t.square() * (i + 1)).mean() for i, t in enumerate(out))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [t.detach() for t in out], [
        torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
    ]


def test_compiled_deformation_matches_eager_and_survives_densification(subject: Path) -> None:
    ds = TalkingHeadDataset(subject, "train")
    batch = ds.get(torch.tensor([0, 3]))
    avatar = _avatar(subject, ds)
    eager_out, eager_grads = _offsets_and_grads(avatar, batch)
    graphs: list[torch.fx.GraphModule] = []

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    avatar.compile_deformation(backend=counting_backend)
    out, grads = _offsets_and_grads(avatar, batch)
    assert len(graphs) == 1
    for a, b in zip([*eager_out, *eager_grads], [*out, *grads], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert max(float(t.abs().max()) for t in out) > 1e-4, "the offsets are not trivially zero"

    means = avatar.gaussians.params["means"]
    for extra in (37, 400):
        grown = torch.cat([means.detach(), means.detach()[:extra] + 0.01])
        avatar.gaussians.params["means"] = nn.Parameter(grown)
        out, _ = _offsets_and_grads(avatar, batch)
        assert out[0].shape == (2, len(grown), 3)
    assert len(graphs) == 1, "a new Gaussian count must not recompile"
