"""Deformation network: canonical Gaussians + per-frame conditions -> per-frame Gaussian offsets."""

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from data_utils import landmark_indices as li
from data_utils.lips import LIP_MEASURES
from scene.attention import SpatialAudioAttention
from scene.audio_encoder import LIP_ENCODERS, AudioEncoder, encoder_kinds, lip_encoder
from scene.kan import KANHeads
from scene.triplane import TriPlane
from utils.config_cli import unknown_settings

DELTA_DIMS = {"xyz": 3, "rot": 4, "scale": 3, "opacity": 1, "color": 3}
AUDIO_SCOPES = ("everywhere", "mouth", "mouth_only", "lower_face")
AUDIO_CODES = ("free", "lips")
LIP_PREDICTORS = (1, 2)  # 2: the mean of one learnt from the clip's frames and one also from a lip corpus
TOKENS = ("audio", "eye", "camera", "null")
MIN_REGION_WEIGHT = 1e-4  # audio_scope 'mouth': the audio token's weight floor away from the mouth
MOUTH_REGION_SCALE = 1.2  # radius of the mouth region over the mouth width: lips, jaw and chin
# audio_scope 'lower_face': how far the audio reaches from the nearest lip or jaw-line point, in mouth widths
LOWER_FACE_REACH = 0.6
# What a model saved before audio_scope, audio_code and lip_encoder existed ran with (defaults may differ).
SAVED_BEFORE_SETTINGS = {"audio_scope": "everywhere", "audio_code": "free", "lip_encoder": "attention"}


def mouth_region(shape: np.ndarray) -> dict[str, object]:
    """DeformConfig fields of the mouth region of tracked 3D landmarks `shape` [478,3] (the canonical space):
    the centre of the outer lips, MOUTH_REGION_SCALE times the mouth-corner distance, and the outer-lip and
    jaw-line points (flattened x, y, z) that audio_scope 'lower_face' measures from."""
    shape = np.asarray(shape, np.float64)
    width = float(np.linalg.norm(shape[li.MOUTH_CORNERS[0]] - shape[li.MOUTH_CORNERS[1]]))
    centre = shape[li.LIPS_OUTER].mean(axis=0)
    anchors = shape[np.concatenate([li.LIPS_OUTER, li.JAW_LINE])].reshape(-1)
    return {
        "mouth_centre": tuple(float(v) for v in centre),
        "mouth_radius": MOUTH_REGION_SCALE * width,
        "mouth_anchors": tuple(float(v) for v in anchors),
    }


def mean_lips(each: Tensor) -> Tensor:
    """The lip measures that drive the mouth: the mean of the predictors' [P,B,3] -> [B,3] (a single
    predictor's own, as it is)."""
    return each[0] if len(each) == 1 else each.mean(dim=0)


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
    audio_scope: str = "mouth"
    audio_code: str = "lips"
    lip_predictors: int = 1
    lip_encoder: str = "attention"
    mouth_centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mouth_radius: float = 0.0
    mouth_anchors: tuple[float, ...] = ()  # [3K] flattened lip and jaw-line points (audio_scope 'lower_face')
    scale_xyz: float = 0.1
    scale_rot: float = 0.1
    scale_scale: float = 0.1
    scale_opacity: float = 0.1
    scale_color: float = 0.1

    def __post_init__(self) -> None:
        """Check the choices; ValueError names a bad one."""
        if self.audio_scope not in AUDIO_SCOPES:
            raise ValueError(f"audio_scope must be one of {AUDIO_SCOPES}, got {self.audio_scope!r}")
        if self.audio_code not in AUDIO_CODES:
            raise ValueError(f"audio_code must be one of {AUDIO_CODES}, got {self.audio_code!r}")
        if self.lip_predictors not in LIP_PREDICTORS:
            raise ValueError(f"lip_predictors must be one of {LIP_PREDICTORS}, got {self.lip_predictors!r}")
        if self.lip_encoder not in LIP_ENCODERS:
            raise ValueError(f"lip_encoder must be one of {LIP_ENCODERS}, got {self.lip_encoder!r}")

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of all fields."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DeformConfig":
        """Rebuild from to_dict() output; missing keys take defaults (those of SAVED_BEFORE_SETTINGS: the
        models saved before they existed); unknown keys: the UserError that every saved config gives
        (utils.config_cli.unknown_settings); a bad choice: ValueError."""
        names = {f.name for f in fields(cls)}
        unknown_settings("the model's deformation network", sorted(set(d) - names))
        d = {**SAVED_BEFORE_SETTINGS, **d}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Deltas:
    """Per-frame additive offsets: position, quaternion (w,x,y,z), log-scale, opacity and colour logits."""

    d_xyz: Tensor  # [B,N,3]
    d_rot: Tensor  # [B,N,4]
    d_scale: Tensor  # [B,N,3]
    d_opacity: Tensor  # [B,N,1]
    d_color: Tensor  # [B,N,3]


class Spatial(NamedTuple):
    """What the network needs of the canonical positions (cacheable while they do not change)."""

    feat: Tensor  # [N,D] tri-plane features
    token_bias: Tensor | None  # [N,K] added to the attention logits of the TOKENS (None: no bias)


def _token_mlp(in_dim: int, dim: int) -> nn.Sequential:
    """Small MLP mapping [..., in_dim] -> [..., dim]."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))


class DeformationNetwork(nn.Module):
    """Tri-plane spatial features + condition tokens (TOKENS) -> ESAA -> KAN delta heads."""

    def __init__(self, cfg: DeformConfig, bounds: Tensor) -> None:
        """Build the network for scene `bounds` [2,3]; untrained it outputs zero deltas. ValueError for
        an audio_scope other than 'everywhere' without a mouth region (a positive mouth_radius, set from the
        dataset), and 'lower_face' without its mouth_anchors."""
        super().__init__()
        if cfg.audio_scope != "everywhere" and cfg.mouth_radius <= 0:
            raise ValueError(f"audio_scope {cfg.audio_scope!r} needs a positive mouth_radius")
        if cfg.audio_scope == "lower_face" and (not cfg.mouth_anchors or len(cfg.mouth_anchors) % 3):
            raise ValueError("audio_scope 'lower_face' needs mouth_anchors (x, y, z of each point)")
        self.cfg = cfg
        dim = cfg.token_dim
        self.triplane = TriPlane(
            bounds, cfg.triplane_resolutions, cfg.triplane_channels, cfg.triplane_combine
        )
        self.spatial_proj = nn.Sequential(
            nn.LayerNorm(self.triplane.out_dim), _token_mlp(self.triplane.out_dim, dim)
        )
        if cfg.audio_code == "free":
            self.audio_encoder = AudioEncoder(cfg.audio_channels, cfg.audio_window, dim, cfg.heads)
        else:
            shape = (cfg.audio_channels, cfg.audio_window, dim, cfg.heads)
            kinds = encoder_kinds(cfg.lip_encoder, cfg.lip_predictors)
            self.audio_encoder = lip_encoder(kinds[0], *shape)
            self.lip_head = nn.Linear(dim, len(LIP_MEASURES))
            if cfg.lip_predictors == 2:  # the second predictor, which also learns from a lip corpus
                self.corpus_audio_encoder = lip_encoder(kinds[1], *shape)
                self.corpus_lip_head = nn.Linear(dim, len(LIP_MEASURES))
            self.lip_mlp = _token_mlp(len(LIP_MEASURES), dim)
        self.eye_mlp = _token_mlp(1, dim)
        self.cam_mlp = _token_mlp(cfg.camera_dim, dim)
        self.null_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.attention = SpatialAudioAttention(dim, cfg.heads)
        self.heads = KANHeads(
            dim, tuple(cfg.kan_hidden), DELTA_DIMS, cfg.kan_grids, tuple(cfg.kan_grid_range)
        )
        self.out_scales = {name: float(getattr(cfg, f"scale_{name}")) for name in DELTA_DIMS}

    def mouth_log_weight(self, xyz: Tensor) -> Tensor:
        """Log of the mouth-region membership exp(-(|x - mouth_centre| / mouth_radius)^4) of xyz [N,3] -> [N]
        (-(d / r)^4: 0 at the centre, -1 at the radius, -16 at twice it)."""
        centre = xyz.new_tensor(self.cfg.mouth_centre)
        return -(((xyz - centre).norm(dim=-1) / self.cfg.mouth_radius) ** 4)

    def lower_face_log_weight(self, xyz: Tensor) -> Tensor:
        """-(d / reach)^4 of xyz [N,3] -> [N]: d the distance to the nearest lip or jaw-line point
        (mouth_anchors), reach LOWER_FACE_REACH mouth widths (0 on lips and jaw, -13 or less at the eyes)."""
        anchors = xyz.new_tensor(self.cfg.mouth_anchors).view(-1, 3)
        reach = LOWER_FACE_REACH * self.cfg.mouth_radius / MOUTH_REGION_SCALE
        nearest = (xyz[:, None, :] - anchors[None]).norm(dim=-1).amin(dim=-1)  # in the dtype of xyz
        return -((nearest / reach) ** 4)

    def mouth_weight(self, xyz: Tensor) -> Tensor:
        """Mouth-region membership exp(-(|x - mouth_centre| / mouth_radius)^4) of xyz [N,3] -> [N]."""
        return torch.exp(self.mouth_log_weight(xyz))

    def spatial_features(self, xyz: Tensor) -> Spatial:
        """Per-Gaussian features of canonical positions xyz [N,3]: tri-plane features [N,D] and, unless
        audio_scope is 'everywhere', the bias [N,K] of the audio token's attention logit away from the mouth:
        log(mouth_weight + MIN_REGION_WEIGHT) with 'mouth' (a floor a learnt logit can overcome), the
        unfloored log weight with 'mouth_only' (-(d / r)^4, which none can at a few radii), and with
        'lower_face' the same measured from the nearest lip or jaw-line point (so that eyes and nose, which a
        sphere about the mouth takes in before the jaw, are out)."""
        feat = self.spatial_proj(self.triplane(xyz))
        if self.cfg.audio_scope == "everywhere":
            return Spatial(feat, None)
        xyz = xyz.detach()
        if self.cfg.audio_scope == "mouth":
            audio_bias = torch.log(self.mouth_weight(xyz) + MIN_REGION_WEIGHT)
        elif self.cfg.audio_scope == "mouth_only":
            audio_bias = self.mouth_log_weight(xyz)
        else:
            audio_bias = self.lower_face_log_weight(xyz)
        bias = torch.zeros(xyz.shape[0], len(TOKENS), device=xyz.device, dtype=feat.dtype)
        bias[:, TOKENS.index("audio")] = audio_bias
        return Spatial(feat, bias)

    def lip_predictions(self, audio: Tensor) -> Tensor:
        """Each lip predictor's standardised lip measures (LIP_MEASURES) from audio features [B,C,W] ->
        [P,B,3], P = lip_predictors: the clip's own predictor first, then the corpus one (audio_code lips)."""
        own = self.lip_head(self.audio_encoder(audio))
        if self.cfg.lip_predictors == 1:
            return own[None]
        return torch.stack([own, self.corpus_lip_head(self.corpus_audio_encoder(audio))])

    def lip_predictor_parameters(self) -> list[nn.Parameter]:
        """The parameters of the lip predictors (audio encoders and lip heads; audio_code 'lips')."""
        modules = [self.audio_encoder, self.lip_head]
        if self.cfg.lip_predictors == 2:
            modules += [self.corpus_audio_encoder, self.corpus_lip_head]
        return [p for m in modules for p in m.parameters()]

    def predict_lips(self, audio: Tensor) -> Tensor:
        """Standardised lip measures predicted from audio features [B,C,W]: the mean of lip_predictions ->
        [B,3] (audio_code 'lips' only)."""
        return mean_lips(self.lip_predictions(audio))

    def audio_token(self, audio: Tensor, lips: Tensor | None = None) -> Tensor:
        """The audio token [B,D]: the encoded audio [B,C,W] (audio_code 'free'), or, with 'lips', a code of
        the lip measures: `lips` [B,3] when given (tracked ones, in training), else predicted from audio."""
        if self.cfg.audio_code == "free":
            return self.audio_encoder(audio)
        return self.lip_mlp(self.predict_lips(audio) if lips is None else lips)

    def condition_tokens(self, audio: Tensor, eye: Tensor, cam: Tensor, lips: Tensor | None = None) -> Tensor:
        """Tokens (audio, eye, camera or null, null) from audio [B,C,W], eye [B,1], cam [B,12] -> [B,4,D]."""
        null = self.null_token.expand(eye.shape[0], -1)
        cam_token = self.cam_mlp(cam) if self.cfg.use_camera else null
        return torch.stack([self.audio_token(audio, lips), self.eye_mlp(eye), cam_token, null], dim=1)

    def forward_with_features(
        self, spatial: Spatial, audio: Tensor, eye: Tensor, cam: Tensor, lips: Tensor | None = None
    ) -> Deltas:
        """Deltas for spatial features (spatial_features) under conditions of batch B -> Deltas of [B,N,*]."""
        tokens = self.condition_tokens(audio, eye, cam, lips)
        h = self.attention(spatial.feat, tokens, spatial.token_bias)
        out = {name: delta * self.out_scales[name] for name, delta in self.heads(h).items()}
        return Deltas(out["xyz"], out["rot"], out["scale"], out["opacity"], out["color"])

    def forward(
        self, xyz: Tensor, audio: Tensor, eye: Tensor, cam: Tensor, lips: Tensor | None = None
    ) -> Deltas:
        """Deltas for positions xyz [N,3], audio [B,C,W], eye [B,1], cam [B,12] (lips [B,3] to drive the
        mouth by tracked lip measures instead of the audio's prediction) -> Deltas of [B,N,*]."""
        return self.forward_with_features(self.spatial_features(xyz), audio, eye, cam, lips)

    def regularization(self) -> Tensor:
        """Scalar regulariser to add to the loss: tri-plane total variation."""
        return self.triplane.tv_loss()
