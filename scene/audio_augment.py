"""Speaker augmentation of log-mel windows in training: vocal-tract-length perturbation (a random stretch of
the mel axis) and a random gain, so a model of one voice sees a range of voices."""

import math

import torch
from torch import Tensor

GAIN_DB_PER_STRENGTH = 60.0  # strength 0.1 -> gains within +-6 dB


def perturb_speaker(audio: Tensor, norm: dict, strength: float, generator: torch.Generator) -> Tensor:
    """Normalised log-mel windows [B,C,W] (per-channel `norm` {"mean","std"} of C) with each window's mel axis
    stretched by a factor in [1 - strength, 1 + strength] and a gain within +-strength * 60 dB -> [B,C,W]."""
    batch, channels, _ = audio.shape
    mean = audio.new_tensor(norm["mean"])[:, None]
    std = audio.new_tensor(norm["std"])[:, None]
    raw = audio * std + mean  # natural-log mel energies
    uniform = torch.rand(batch, 2, generator=generator, device=audio.device) * 2 - 1
    factor = 1 + strength * uniform[:, 0]
    # Output band c reads input band c / factor: factor > 1 moves formants up, as a shorter vocal tract does.
    src = (torch.arange(channels, device=audio.device)[None] / factor[:, None]).clamp(0, channels - 1)
    low = src.floor().long()
    high = (low + 1).clamp(max=channels - 1)
    frac = (src - low)[:, :, None]
    gather = lambda idx: raw.gather(1, idx[:, :, None].expand(-1, -1, raw.shape[2]))
    warped = gather(low) * (1 - frac) + gather(high) * frac
    gain = strength * GAIN_DB_PER_STRENGTH * uniform[:, 1] * math.log(10) / 10  # dB of power -> nats
    return (warped + gain[:, None, None] - mean) / std
