"""Audio window encoders: conv1d over time, temporal self-attention and learned-query pooling (AudioEncoder),
or a linear map of the window (LinearAudioEncoder, for the lip predictors)."""

import torch
from torch import Tensor, nn


def check_window(audio: Tensor, channels: int, window: int) -> None:
    """ValueError unless audio features are shaped [B,channels,window]."""
    if audio.dim() != 3 or audio.shape[1:] != (channels, window):
        raise ValueError(f"audio features must be [B,{channels},{window}], got {list(audio.shape)}")


class AudioEncoder(nn.Module):
    """Encode a window of audio features [B,C,W] into one audio token [B,dim]."""

    def __init__(self, in_channels: int, window: int, dim: int, heads: int = 4) -> None:
        """Build the encoder for features with `in_channels` channels and `window` time steps."""
        super().__init__()
        self.in_channels = in_channels
        self.window = window
        self.conv = nn.Sequential(
            nn.Conv1d(in_channels, dim, kernel_size=3, padding=1),
            nn.LeakyReLU(0.02),
            nn.Conv1d(dim, dim, kernel_size=3, padding=1),
            nn.LeakyReLU(0.02),
        )
        self.pos = nn.Parameter(torch.randn(window, dim) * 0.02)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_pool = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pool_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, dim)

    def forward(self, audio: Tensor) -> Tensor:
        """Encode audio features [B,C,W] (normalised per channel) -> audio token [B,dim]."""
        check_window(audio, self.in_channels, self.window)
        x = self.conv(audio).transpose(1, 2) + self.pos  # [B,W,dim]
        h = self.norm_self(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm_pool(x)
        pooled = self.pool_attn(self.query.expand(x.shape[0], -1, -1), h, h, need_weights=False)[0]
        return self.out(pooled[:, 0])


class LinearAudioEncoder(nn.Module):
    """A linear map of a window of audio features [B,C,W] to a token [B,dim]: with no hidden layer, a clip's
    few seconds can teach it only how much each sound at each offset of the window moves the lips, not the
    frame it came from."""

    def __init__(self, in_channels: int, window: int, dim: int) -> None:
        """Build the map for features with `in_channels` channels and `window` time steps."""
        super().__init__()
        self.in_channels = in_channels
        self.window = window
        self.linear = nn.Linear(in_channels * window, dim)

    def forward(self, audio: Tensor) -> Tensor:
        """Map audio features [B,C,W] (normalised per channel) -> token [B,dim]."""
        check_window(audio, self.in_channels, self.window)
        return self.linear(audio.flatten(1))


# How the lip predictors read the audio: all by attention, all linearly, or the corpus predictor linearly and
# the clip's own by attention (with one predictor, no corpus: attention)
LIP_ENCODERS = ("attention", "linear", "linear_corpus")


def encoder_kinds(setting: str, predictors: int) -> list[str]:
    """The encoder ('attention' or 'linear') of each of `predictors` lip predictors, the clip's own first and
    then the corpus one, under the lip_encoder `setting` (LIP_ENCODERS)."""
    if setting == "linear_corpus":
        return ["attention", "linear"][:predictors]
    return [setting] * predictors


def lip_encoder(kind: str, in_channels: int, window: int, dim: int, heads: int) -> nn.Module:
    """The audio encoder of a lip predictor: AudioEncoder ('attention', `heads` heads) or LinearAudioEncoder
    ('linear'), for windows [B,in_channels,window] -> [B,dim]."""
    if kind == "linear":
        return LinearAudioEncoder(in_channels, window, dim)
    return AudioEncoder(in_channels, window, dim, heads)
