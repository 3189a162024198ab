"""Speaker augmentation of log-mel windows: the mel axis stretch moves spectral peaks the right way, the gain
shifts every band alike, strength 0 changes nothing."""

import torch

from scene.audio_augment import perturb_speaker


def _norm(channels: int) -> dict:
    """A per-channel normalisation that is not the identity."""
    mean, std = torch.linspace(-3, 1, channels), torch.linspace(0.5, 2, channels)
    return {"mean": mean.tolist(), "std": std.tolist()}


def test_strength_zero_is_the_identity() -> None:
    audio = torch.randn(3, 20, 4)
    out = perturb_speaker(audio, _norm(20), 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, audio)


def test_stretch_moves_a_formant_and_stays_within_the_strength() -> None:
    channels, norm = 40, _norm(40)
    bands = torch.arange(channels, dtype=torch.float32)
    raw = torch.exp(-((bands - 20) ** 2) / 4)[None, :, None].expand(64, -1, 3)  # one peak at band 20
    mean, std = torch.tensor(norm["mean"])[:, None], torch.tensor(norm["std"])[:, None]
    out = perturb_speaker((raw - mean) / std, norm, 0.1, torch.Generator().manual_seed(1)) * std + mean
    out = out - out.amin(dim=1, keepdim=True)  # the gain shifts every band alike: remove it
    peaks = out[:, :, 0].argmax(dim=1).float()
    assert peaks.min() >= 18 - 1 and peaks.max() <= 22 + 1  # 20 * (1 +- 0.1), one band of rounding
    assert peaks.std() > 0.5  # the factor differs per window
    torch.testing.assert_close(out[:, :, 0], out[:, :, 2])  # one factor for the whole window
