"""The end of a training run: train_summary.json and the summary lines of train.sh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scene.dataset import read_json
from scene.trainer import Trainer
from utils.atomic import atomic_write_json


def novel_pose_note(source_path: Path) -> str | None:
    """A one-line note when the dataset's preprocess report counts validation frames in head poses that no
    training frame shows (their PSNR measures novel views), else None."""
    quality = read_json(source_path, "preprocess.json").get("quality", {})
    novel, gap = quality.get("val_frames_novel_pose", 0), quality.get("val_pose_gap_max_deg", 0.0)
    if not novel:
        return None
    return (
        f"note: {novel} validation frames turn the head up to {gap:.1f} deg beyond every training pose;"
        " their PSNR measures novel views (preprocess.json, val_pose_gap_*)"
    )


def summarize(
    trainer: Trainer, last_val: dict[str, Any], checkpoint: Path, started_at: int
) -> dict[str, Any]:
    """Write train_summary.json and print the summary lines; return the summary."""
    steps = trainer.step - started_at
    summary = {
        "iterations": trainer.step,
        "seconds": round(trainer.elapsed, 2),
        "it_per_s": round(trainer.step / max(trainer.elapsed, 1e-9), 2),
        "iterations_this_run": steps,
        "num_gaussians": trainer.avatar.gaussians.num_gaussians,
        "model_size_mb": round(checkpoint.stat().st_size / 2**20, 2),
        "checkpoint": str(checkpoint),
        "point_cloud": str(
            trainer.model_path / "point_cloud" / f"iteration_{trainer.step}" / "point_cloud.ply"
        ),
        "model_path": str(trainer.model_path),
        **{k: round(v, 4) for k, v in last_val.items() if k.startswith("val_")},
    }
    atomic_write_json(trainer.model_path / "train_summary.json", summary)
    print(
        f"trained {summary['iterations']} iterations in {summary['seconds']:.1f} s "
        f"({summary['it_per_s']:.1f} it/s); "
        f"{summary['num_gaussians']} Gaussians, {summary['model_size_mb']} MB"
    )
    if "val_psnr" in summary:
        print(
            f"validation: PSNR {summary['val_psnr']:.2f} dB, SSIM {summary['val_ssim']:.4f}; "
            f"face PSNR {summary['val_psnr_face']:.2f} dB, SSIM {summary['val_ssim_face']:.4f}"
        )
        note = novel_pose_note(trainer.train_set.root)
        if note:
            print(note)
    print(f"model: {summary['checkpoint']}\npoint cloud: {summary['point_cloud']}")
    return summary
