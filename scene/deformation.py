"""Deformation network: canonical Gaussians + per-frame conditions -> per-frame Gaussian offsets."""

from dataclasses import asdict, dataclass, fields

import torch
from torch import Tensor, nn

from scene.attention import SpatialAudioAttention
from scene.audio_encoder import AudioEncoder
from scene.kan import KANHeads
from scene.triplane import TriPlane

DELTA_DIMS = {"xyz": 3, "rot": 4, "scale": 3, "opacity": 1, "color": 3}


@dataclass
class DeformConfig:
    """Sizes of the deformation network; everything needed to rebuild it."""

    triplane_resolutions: tuple[int, ...] = (32, 64, 128)
    triplane_channels: int = 16
    triplane_combine: str = "product"
    token_dim: int = 64
    heads: int = 4
    kan_hidden: tuple[int, ...] = (32,)
    kan_grids: int = 8
    kan_grid_range: tuple[float, float] = (-2.0, 2.0)
    audio_channels: int = 80
    audio_window: int = 16
    camera_dim: int = 12
    use_camera: bool = True
    scale_xyz: float = 0.1
    scale_rot: float = 0.1
    scale_scale: float = 0.1
    scale_opacity: float = 0.1
    scale_color: float = 0.1

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of all fields."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DeformConfig":
        """Rebuild from to_dict() output; missing keys take defaults, unknown keys raise ValueError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown DeformConfig keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Deltas:
    """Per-frame additive offsets: position, quaternion (w,x,y,z), log-scale, opacity and colour logits."""

    d_xyz: Tensor  # [B,N,3]
    d_rot: Tensor  # [B,N,4]
    d_scale: Tensor  # [B,N,3]
    d_opacity: Tensor  # [B,N,1]
    d_color: Tensor  # [B,N,3]


def _token_mlp(in_dim: int, dim: int) -> nn.Sequential:
    """Small MLP mapping [..., in_dim] -> [..., dim]."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))


class DeformationNetwork(nn.Module):
    """Tri-plane spatial features + condition tokens (audio, eye, camera, null) -> ESAA -> KAN delta heads."""

    def __init__(self, cfg: DeformConfig, bounds: Tensor) -> None:
        """Build the network for scene `bounds` [2,3]; untrained it outputs zero deltas."""
        super().__init__()
        self.cfg = cfg
        dim = cfg.token_dim
        self.triplane = TriPlane(
            bounds, cfg.triplane_resolutions, cfg.triplane_channels, cfg.triplane_combine
        )
        self.spatial_proj = nn.Sequential(
            nn.LayerNorm(self.triplane.out_dim), _token_mlp(self.triplane.out_dim, dim)
        )
        self.audio_encoder = AudioEncoder(cfg.audio_channels, cfg.audio_window, dim, cfg.heads)
        self.eye_mlp = _token_mlp(1, dim)
        self.cam_mlp = _token_mlp(cfg.camera_dim, dim)
        self.null_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.attention = SpatialAudioAttention(dim, cfg.heads)
        self.heads = KANHeads(
            dim, tuple(cfg.kan_hidden), DELTA_DIMS, cfg.kan_grids, tuple(cfg.kan_grid_range)
        )
        self.out_scales = {name: float(getattr(cfg, f"scale_{name}")) for name in DELTA_DIMS}

    def spatial_features(self, xyz: Tensor) -> Tensor:
        """Per-Gaussian spatial features of canonical positions [N,3] -> [N,token_dim] (cacheable)."""
        return self.spatial_proj(self.triplane(xyz))

    def condition_tokens(self, audio: Tensor, eye: Tensor, cam: Tensor, use_audio: bool = True) -> Tensor:
        """Tokens (audio or null, eye, camera, null) from audio [B,C,W], eye [B,1], cam [B,12] -> [B,4,D]."""
        batch = eye.shape[0]
        null = self.null_token.expand(batch, -1)
        audio_token = self.audio_encoder(audio) if use_audio else null
        cam_token = self.cam_mlp(cam) if self.cfg.use_camera else null
        return torch.stack([audio_token, self.eye_mlp(eye), cam_token, null], dim=1)

    def forward_with_features(
        self, feat: Tensor, audio: Tensor, eye: Tensor, cam: Tensor, use_audio: bool = True
    ) -> Deltas:
        """Deltas for spatial features feat [N,D] under conditions of batch B -> Deltas of [B,N,*]."""
        tokens = self.condition_tokens(audio, eye, cam, use_audio)
        h, _ = self.attention(feat, tokens)
        out = {name: delta * self.out_scales[name] for name, delta in self.heads(h).items()}
        return Deltas(out["xyz"], out["rot"], out["scale"], out["opacity"], out["color"])

    def forward(self, xyz: Tensor, audio: Tensor, eye: Tensor, cam: Tensor, use_audio: bool = True) -> Deltas:
        """Deltas for positions xyz [N,3], audio [B,C,W], eye [B,1], cam [B,12] -> Deltas of [B,N,*]."""
        return self.forward_with_features(self.spatial_features(xyz), audio, eye, cam, use_audio)

    def attention_weights(self, xyz: Tensor, audio: Tensor, eye: Tensor, cam: Tensor) -> Tensor:
        """Head-averaged ESAA weights over (audio, eye, camera, null) tokens -> [B,N,4] (visualisation)."""
        tokens = self.condition_tokens(audio, eye, cam)
        return self.attention(self.spatial_features(xyz), tokens, return_weights=True)[1]

    def regularization(self) -> Tensor:
        """Scalar regulariser to add to the loss: tri-plane total variation."""
        return self.triplane.tv_loss()
