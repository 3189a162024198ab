"""LPIPS perceptual distance (AlexNet, v0.1 linear heads) from weight files already on disk; never downloads.

Two files are needed, in one folder (default $EGSTALKER_CACHE/lpips, i.e. ~/.cache/egstalker/lpips): the
torchvision AlexNet state dict (`alexnet-owt-7be5be79.pth`, as torchvision caches it, or `alexnet.pth`) and
the LPIPS v0.1 linear layers (`alex.pth` from the lpips package's weights/v0.1 folder, or `lpips_alex.pth`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from utils.cli import UserError
from utils.paths import cache_dir

ALEXNET_FILES = ("alexnet-owt-7be5be79.pth", "alexnet.pth")
LINEAR_FILES = ("alex.pth", "lpips_alex.pth")
CHANNELS = (64, 192, 384, 256, 256)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def default_lpips_dir() -> Path:
    """Folder searched for the LPIPS weights: $EGSTALKER_CACHE/lpips (default ~/.cache/egstalker/lpips)."""
    return cache_dir("lpips")


def find_lpips_weights(directory: Path | None = None) -> tuple[Path, Path] | None:
    """(AlexNet file, linear-heads file) in `directory` (default: default_lpips_dir()); None if one lacks."""
    folder = Path(directory) if directory is not None else default_lpips_dir()
    found = [
        next((folder / n for n in names if (folder / n).is_file()), None)
        for names in (ALEXNET_FILES, LINEAR_FILES)
    ]
    return (found[0], found[1]) if found[0] and found[1] else None


def _alexnet_stages() -> nn.ModuleList:
    """AlexNet's convolutional trunk cut after each ReLU (torchvision layer indices kept for loading)."""
    return nn.ModuleList(
        [
            nn.Sequential(nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU()),
            nn.Sequential(nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(384, 256, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(256, 256, 3, padding=1), nn.ReLU()),
        ]
    )


# torchvision "features.<i>" index of each stage's convolution
_CONV_INDEX = (0, 3, 6, 8, 10)


class LPIPS(nn.Module):
    """Frozen LPIPS-alex: images a, b [B,H,W,3] in [0,1] -> distances [B] (0 for identical images)."""

    def __init__(self, alexnet_state: dict[str, Tensor], linear_state: dict[str, Tensor]) -> None:
        """Build the network from a torchvision AlexNet state dict and the LPIPS v0.1 linear heads."""
        super().__init__()
        self.stages = _alexnet_stages()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        with torch.no_grad():
            for stage, index, head, k in zip(self.stages, _CONV_INDEX, self.heads, range(5), strict=True):
                conv = next(m for m in stage if isinstance(m, nn.Conv2d))
                conv.weight.copy_(alexnet_state[f"features.{index}.weight"])
                conv.bias.copy_(alexnet_state[f"features.{index}.bias"])
                head.weight.copy_(linear_state[f"lin{k}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def load(cls, directory: Path | None = None) -> LPIPS:
        """LPIPS from the weight files in `directory`; UserError naming what is missing or unreadable."""
        folder = Path(directory) if directory is not None else default_lpips_dir()
        files = find_lpips_weights(folder)
        if files is None:
            raise UserError(
                f"LPIPS weights not found in '{folder}': put {ALEXNET_FILES[0]} (torchvision AlexNet) and "
                f"{LINEAR_FILES[0]} (lpips v0.1) there"
            )
        try:
            states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
            return cls(*states)
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as err:
            raise UserError(
                f"cannot read the LPIPS weights in '{folder}' ({err}); replace the files"
            ) from err

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS distance per image of a, b [B,H,W,3] in [0,1] -> [B]."""
        x = torch.cat([a, b]).permute(0, 3, 1, 2) * 2 - 1
        x = (x - self.shift) / self.scale
        total = torch.zeros(a.shape[0], device=a.device, dtype=x.dtype)
        for stage, head in zip(self.stages, self.heads, strict=True):
            x = stage(x)
            fa, fb = (f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10) for f in x.chunk(2))
            total = total + head((fa - fb).square()).mean(dim=(1, 2, 3))
        return total
