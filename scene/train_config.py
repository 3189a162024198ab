"""The training configuration: every setting of train.sh, saved whole with the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

RUN_CONTROL = ("iterations", "stop_at", "eval_every", "preview_every", "save_every", "log_every")


@dataclass
class TrainConfig:
    """Every training setting (saved with the model; run-control fields may change on --resume)."""

    source_path: str = ""
    model_path: str = ""
    iterations: int = 10_000
    batch_size: int = 1
    resolution: int | None = None
    coarse_iterations: int | None = None
    init_points: int = 30_000
    max_gaussians: int = 80_000
    init_opacity: float = 0.1
    seed: int = 0
    eval_every: int = 1000
    preview_every: int = 1000
    save_every: int = 5000
    log_every: int = 50
    stop_at: int | None = None
    num_eval_frames: int = 8
    lr_means: float = 1.6e-4
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_colors: float = 2.5e-3
    lr_deform: float = 1e-3
    lr_pose: float = 0.0
    lr_final_ratio: float = 0.01
    lambda_dssim: float = 0.2
    lambda_mouth: float = 1.0
    lambda_tv: float = 1e-4
    lambda_dxyz: float = 1e-2
    lambda_lpips: float = 1e-2
    lpips_dir: str | None = None
    audio_noise: float = 0.0
    audio_augment: float = 0.0
    lambda_lips: float = 1.0
    refine_start: int = 500
    refine_stop: int | None = None
    refine_every: int = 100
    reset_every: int = 3000
    grow_grad2d: float = 2e-4
    backend: str = "auto"
    bf16: bool = False
    tf32: bool = True
    deform: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> TrainConfig:
        """The config saved with a model; settings this version no longer has (e.g. `compile`) are dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def coarse_steps(self) -> int:
        """Iterations of the static (coarse) stage: the setting, else min(1000, 20 % of iterations)."""
        if self.coarse_iterations is not None:
            return min(self.coarse_iterations, self.iterations)
        return min(1000, self.iterations // 5)

    def refine_until(self) -> int:
        """Last densification step: the setting, else 60 % of iterations."""
        return self.refine_stop if self.refine_stop is not None else int(0.6 * self.iterations)
