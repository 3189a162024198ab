"""The training configuration tree: every setting of train.sh (one flag per leaf field, utils.config_cli),
saved whole with the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gaussian_renderer import BACKENDS
from scene.audio_encoder import LIP_ENCODERS
from scene.deformation import AUDIO_CODES, AUDIO_SCOPES, SAVED_BEFORE_SETTINGS, DeformConfig
from utils.config_cli import flat, from_dict, option, section, unknown_settings, with_values

RUN_CONTROL = ("iterations", "stop_at", "eval_every", "preview_every", "save_every", "log_every")
REMOVED_SETTINGS = ("compile", "train_split")  # saved by older versions; dropped on load


@dataclass
class ScheduleConfig:
    """How long and on what the training runs."""

    iterations: int = option(10_000, "total training iterations")
    batch_size: int = option(1, "frames per iteration")
    resolution: int | None = option(None, "train at this square size in pixels", default_text="data size")
    coarse_iterations: int | None = option(
        None,
        "iterations of the coarse stage (static: no deformation) before the fine (audio-driven) one",
        default_text="min(1000, 20% of iterations)",
    )
    stop_at: int | None = option(None, "stop after this iteration with a checkpoint (resume later)")
    seed: int = option(0, "random seed")
    backend: str = option("auto", "rasterizer", choices=BACKENDS)
    bf16: bool = option(False, "bf16 autocast for the deformation network on CUDA")
    tf32: bool = option(
        True,
        "TF32 tensor cores for the float32 matmuls on CUDA (the deformation network)",
        default_text="on",
        off_help="keep those matmuls in full float32",
    )

    def coarse_steps(self) -> int:
        """Iterations of the static (coarse) stage: the setting, else min(1000, 20 % of iterations)."""
        if self.coarse_iterations is not None:
            return min(self.coarse_iterations, self.iterations)
        return min(1000, self.iterations // 5)

    def fine_steps(self) -> int:
        """Iterations of the audio-driven (fine) stage, at least 1: what the network's learning rate decays
        over."""
        return max(self.iterations - self.coarse_steps(), 1)


@dataclass
class LogConfig:
    """Validation, previews, metrics lines and checkpoints."""

    eval_every: int = option(1000, "validate every K iterations")
    preview_every: int = option(1000, "preview JPEG every K iterations")
    save_every: int = option(5000, "checkpoint every K iterations")
    log_every: int = option(50, "metrics line every K iterations")
    num_eval_frames: int = option(8, "validation frames")


@dataclass
class InitConfig:
    """The initial Gaussians on the tracked face."""

    init_points: int = option(30_000, "initial Gaussians on the face")
    init_opacity: float = option(0.1, "opacity of the initial Gaussians")


@dataclass
class DensifyConfig:
    """Adaptive density control (scene.densify.DensifyStrategy); sizes relative to the scene scale."""

    max_gaussians: int = option(80_000, "cap on the Gaussian count")
    refine_start: int = option(500, "first densification step")
    refine_stop: int | None = option(None, "last densification step", default_text="60% of iterations")
    refine_every: int = option(100, "densify every K steps")
    reset_every: int = option(3000, "opacity reset period")
    grow_grad2d: float = option(2e-4, "gradient threshold to grow")
    grow_scale3d: float = option(0.01, "Gaussians up to this size are cloned to grow, larger ones split")
    prune_scale3d: float = option(0.1, "after the first opacity reset, Gaussians larger than this are pruned")
    prune_opa: float = option(0.005, "Gaussians below this opacity are pruned")

    def refine_until(self, iterations: int) -> int:
        """Last densification step: refine_stop, else 60 % of `iterations`."""
        return self.refine_stop if self.refine_stop is not None else int(0.6 * iterations)


@dataclass
class OptimConfig:
    """Learning rates, loss weights and training-time audio perturbations."""

    lr_means: float = option(1.6e-4, "Adam lr of means")
    lr_scales: float = option(5e-3, "Adam lr of scales")
    lr_quats: float = option(1e-3, "Adam lr of quats")
    lr_opacity: float = option(5e-2, "Adam lr of opacity")
    lr_colors: float = option(2.5e-3, "Adam lr of colors")
    lr_deform: float = option(1e-3, "Adam lr of deform")
    lr_pose: float = option(0.0, "Adam lr of learned per-frame head-pose corrections, e.g. 1e-4; 0 = off")
    lr_final_ratio: float = option(0.01, "final/initial lr of means, deform")
    lambda_dssim: float = option(0.2, "loss weight")
    lambda_mouth: float = option(1.0, "loss weight")
    lambda_tv: float = option(1e-4, "loss weight")
    lambda_dxyz: float = option(1e-2, "loss weight")
    lambda_lpips: float = option(1e-2, "loss weight")
    lpips_dir: str | None = option(
        None,
        "folder of the LPIPS weights (default $EGSTALKER_CACHE/lpips); without them LPIPS is off",
    )
    audio_noise: float = option(
        0.0, "std of Gaussian noise added to the normalised audio features in training"
    )
    audio_augment: float = option(
        0.0,
        "speaker augmentation of log-mel features: mel axis stretched by up to S (e.g. 0.1) and gain "
        "within S*60 dB, in the fine stage; 0 = off",
        metavar="S",
    )
    lambda_lips: float = option(
        1.0, "weight of the audio-to-lip-measure loss when the deformation's audio_code is 'lips'"
    )
    lip_code_noise: float = option(
        0.0,
        "std of Gaussian noise added to the tracked lip measures (standardised) that drive the mouth in the "
        "fine stage (audio_code 'lips'), against the renderer reading them as a frame index; the lip "
        "predictors still learn the clean measures; 0 = off",
        metavar="S",
    )
    lip_corpus: str = option(
        "default",
        "other subjects' audio windows and lip measures for the lip code (audio_code 'lips'): the mouth then "
        "follows the mean of two audio-to-lip predictors, one learnt from the clip's own frames and one also "
        "from the corpus. A file of python -m scene.lip_corpus, 'default' (the one shipped: visemes features "
        "of five development clips, the clip's own recording left out; skipped with a note for other "
        "features) or 'none': one predictor, the clip's frames only "
        "(docs/experiments/2026-12-02-lip-corpus.md)",
        metavar="FILE|default|none",
    )
    lip_corpus_frames: int = option(4, "corpus frames drawn per iteration for that loss")


DEFORM_HELP = {
    "triplane_resolutions": "tri-plane resolutions, one per scale",
    "triplane_channels": "channels of each tri-plane",
    "triplane_combine": "how the three planes' features combine",
    "token_dim": "width of the attention tokens",
    "heads": "attention heads",
    "kan_hidden": "hidden widths of the KAN delta heads",
    "kan_grids": "Gaussian RBF centres of each KAN layer's input",
    "kan_grid_range": "input range the KAN RBF centres span",
    "use_camera": "condition the deformation on a camera token",
    "audio_scope": "where the audio acts: everywhere; mouth (fading out away from the tracked mouth, to a "
    "floor of 1e-4 of its weight); mouth_only (shut out away from it, with no floor); or lower_face (shut "
    "out away from the tracked lips and jaw line, so also from eyes and nose)",
    "audio_code": "the audio token: free (encoded audio), or lips (through the three tracked lip measures)",
    "lip_encoder": "how the lip predictors read the audio window (audio_code lips): attention (convolutions, "
    "self-attention and pooling), linear (a linear map of the window), or linear_corpus (the lip corpus's "
    "predictor linear, the clip's own by attention; docs/experiments/2026-12-03-lip-predictor-linear.md)",
    "scale_xyz": "output scale of the position offsets",
    "scale_rot": "output scale of the rotation offsets",
    "scale_scale": "output scale of the log-scale offsets",
    "scale_opacity": "output scale of the opacity offsets",
    "scale_color": "output scale of the colour offsets",
}
DEFORM_CHOICES = {
    "triplane_combine": ("product", "sum"),
    "audio_scope": AUDIO_SCOPES,
    "audio_code": AUDIO_CODES,
    "lip_encoder": LIP_ENCODERS,
}
# set by the trainer from the dataset (lip_predictors: 2 when it learns from a lip corpus)
DEFORM_FROM_DATA = (
    "audio_channels", "audio_window", "camera_dim", "mouth_centre", "mouth_radius", "mouth_anchors",
    "lip_predictors",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Every training setting (saved with the model; run-control fields may change on --resume)."""

    source_path: str = option("", "preprocessed subject folder data/<subject>", flags=("-s",), required=True)
    model_path: str = option("", "output folder for checkpoints and previews", flags=("-m",), required=True)
    schedule: ScheduleConfig = section(ScheduleConfig, "schedule")
    log: LogConfig = section(LogConfig, "logging and checkpoints")
    init: InitConfig = section(InitConfig, "initial Gaussians")
    densify: DensifyConfig = section(DensifyConfig, "densification")
    optim: OptimConfig = section(OptimConfig, "learning rates and loss weights")
    deform: DeformConfig = section(
        DeformConfig,
        "deformation network",
        DEFORM_HELP,
        choices=DEFORM_CHOICES,
        internal=DEFORM_FROM_DATA,
    )

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainConfig:
        """The config saved with a model (dataclasses.asdict form; the flat form of older versions, whose
        `deform` held only the changed fields, is mapped); UserError names unknown settings."""
        what = "the model's saved training config"
        saved = {k: v for k, v in saved.items() if k not in REMOVED_SETTINGS}
        saved["deform"] = {**SAVED_BEFORE_SETTINGS, **saved.get("deform", {})}
        if set(saved) <= {f.name for f in dataclasses.fields(cls)}:
            return from_dict(cls, saved, what)
        values = {k: v for k, v in saved.items() if k != "deform"}
        deform = saved.get("deform", {})
        known = {f.name for f in dataclasses.fields(DeformConfig)}
        unknown = [*(set(values) - set(flat(cls()))), *(f"deform.{k}" for k in deform if k not in known)]
        unknown_settings(what, sorted(unknown))
        return with_values(from_dict(cls, {"deform": deform}, what), values)

    def with_values(self, values: dict[str, Any]) -> TrainConfig:
        """A copy with the leaf settings `values` {flag name: value}."""
        return with_values(self, values)
