"""Photometric refinement of the tracked head poses (an optional preprocessing stage).

The landmark tracker's poses drift by about half a degree, slowly, with expression and pose. This stage fits
a static Gaussian head (no audio, no deformation) to every frame of the clip at low resolution, together with
one rigid correction per frame, the way a 3DMM tracker fits texture and pose together. The corrections go
into the cameras of both splits. The avatar trained later starts afresh and never sees these Gaussians.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

import train
from scene.pose_correction import correct_viewmats
from utils.atomic import atomic_write_json


@dataclass
class PoseRefineConfig:
    """Settings of the static fit that refines the poses."""

    steps: int = 1500
    size: int = 128
    init_points: int = 3000
    max_gaussians: int = 9000
    lr_pose: float = 5e-4
    seed: int = 0


def fit_corrections(root: Path, cfg: PoseRefineConfig, device: torch.device) -> Tensor:
    """Fit a static head with per-frame pose corrections to all frames of the dataset at `root` (train frames,
    then val) -> corrections [T,6] (axis-angle, translation in scene units), zero mean over the frames. Runs
    the trainer's loop, optimisers and densification on the static (coarse) stage only, with an L1 loss
    outside the mouth box."""
    cfg_train = train.TrainConfig(
        source_path=str(root),
        train_split="all",
        iterations=cfg.steps,
        coarse_iterations=cfg.steps,
        resolution=cfg.size,
        init_points=cfg.init_points,
        max_gaussians=cfg.max_gaussians,
        lr_pose=cfg.lr_pose,
        lambda_mouth=-1.0,  # cancels the mouth box's share of the L1: a static head cannot open its mouth
        lambda_dssim=0.0,
        lambda_lpips=0.0,
        seed=cfg.seed,
        eval_every=cfg.steps,
        preview_every=cfg.steps,
        save_every=cfg.steps + 1,
        num_eval_frames=1,
    )
    with tempfile.TemporaryDirectory(prefix="pose_refine_") as scratch:
        cfg_train.model_path = scratch
        trainer = train.setup(cfg_train, {}, False, device)
        train.run(trainer)
        return trainer.pose.centred().detach().cpu().double()


def apply_corrections(root: Path, corrections: Tensor) -> None:
    """Rewrite the camera-to-world matrices of transforms_train.json then transforms_val.json at `root` with
    corrections [T,6] (in that frame order) applied."""
    start = 0
    for split in ("train", "val"):
        path = root / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        frames = meta["frames"]
        c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float64)
        part = corrections[start : start + len(frames)]
        refined = torch.linalg.inv(correct_viewmats(torch.linalg.inv(c2w), part))
        for frame, matrix in zip(frames, refined, strict=True):
            frame["transform_matrix"] = matrix.tolist()
        atomic_write_json(path, meta)
        start += len(frames)


def correction_summary(corrections: Tensor, num_val: int) -> dict[str, float]:
    """Mean rotation in degrees of corrections [T,6] over the training and the validation (last num_val)
    frames."""
    deg = torch.rad2deg(corrections[:, :3].norm(dim=-1))
    split = len(deg) - num_val
    return {
        "pose_refine_train_deg": float(deg[:split].mean()),
        "pose_refine_val_deg": float(deg[split:].mean()),
    }
