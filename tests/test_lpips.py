"""LPIPS from weight files the tests write: distances, gradients, file lookup, errors; the training term."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
from tests.dataset_factory import make_dataset
from utils.cli import UserError
from utils.lpips import ALEXNET_FILES, CHANNELS, LINEAR_FILES, LPIPS, find_lpips_weights

_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


def write_lpips_weights(
    folder: Path, alexnet_name: str = ALEXNET_FILES[0], linear_name: str = LINEAR_FILES[0]
) -> Path:
    """Random AlexNet (torchvision key names) and positive LPIPS heads saved in `folder`; returns folder."""
    gen = torch.Generator().manual_seed(0)
    alexnet = {}
    for index, (out_c, in_c, k) in _CONVS.items():
        alexnet[f"features.{index}.weight"] = (
            torch.randn(out_c, in_c, k, k, generator=gen) / (in_c * k * k) ** 0.5
        )
        alexnet[f"features.{index}.bias"] = torch.zeros(out_c)
    linear = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) / c for i, c in enumerate(CHANNELS)
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(alexnet, folder / alexnet_name)
    torch.save(linear, folder / linear_name)
    return folder


def test_distance_properties_and_gradient(tmp_path: Path) -> None:
    net = LPIPS.load(write_lpips_weights(tmp_path / "w"))
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 64, 64, 3, generator=gen)
    b = (a + 0.2 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    same, diff = net(a, a), net(a, b)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-7)
    assert (diff > 1e-4).all() and torch.allclose(diff, net(b, a), rtol=1e-5)
    assert (net(a, (a + 0.4 * torch.randn(a.shape, generator=gen)).clamp(0, 1)) > diff).all()
    x = b.clone().requires_grad_(True)
    net(a, x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in net.parameters())


def test_lookup_and_errors(tmp_path: Path) -> None:
    assert find_lpips_weights(tmp_path) is None
    with pytest.raises(UserError, match="LPIPS weights not found"):
        LPIPS.load(tmp_path)
    folder = write_lpips_weights(tmp_path / "alt", ALEXNET_FILES[1], LINEAR_FILES[1])
    assert find_lpips_weights(folder) == (folder / ALEXNET_FILES[1], folder / LINEAR_FILES[1])
    (folder / LINEAR_FILES[1]).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read the LPIPS weights"):
        LPIPS.load(folder)


def test_training_uses_lpips_only_with_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGSTALKER_CACHE", str(tmp_path / "empty_cache"))
    data = make_dataset(tmp_path / "subject", frames=12, size=32, fps=4)
    net = ["--triplane_resolutions", "8", "--triplane_channels", "4", "--token_dim", "8", "--kan_hidden", "4"]
    common = ["-s", str(data), "--init_points", "300", *net, "--iterations", "6"]
    common += ["--coarse_iterations", "3", "--eval_every", "100"]
    assert train.main([*common, "-m", str(tmp_path / "off")]) == 0
    weights = write_lpips_weights(tmp_path / "lpips")
    assert train.main([*common, "-m", str(tmp_path / "on"), "--lpips_dir", str(weights)]) == 0
    runs = (tmp_path / "off", tmp_path / "on")
    saved = [torch.load(p / "chkpnt6.pth", weights_only=False)["config"] for p in runs]
    assert saved[0]["lpips_weights"] is None and saved[1]["lpips_weights"] == str(weights)
    losses = [json.loads((p / "metrics.jsonl").read_text().splitlines()[-1])["loss"] for p in runs]
    assert losses[1] > losses[0]
    with pytest.raises(UserError, match="LPIPS weights not found"):
        train.main([*common, "-m", str(tmp_path / "bad"), "--lpips_dir", str(tmp_path / "nothing")])
