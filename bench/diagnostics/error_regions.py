"""Where a trained model's error lies: PSNR by image region on training and validation frames.

    python -m bench.diagnostics.error_regions --model_path output/me --reference_path data/me \
        [--fit_val_poses]

Regions: full frame and face box (scored by evaluation.frames.score_frame, as in the trainer's validation),
head interior, a band along the head-mask edge, everything outside the head, and the mouth box. Two
reference rows per split: the static (coarse) model, and the background composite alone outside the head
(the ceiling that the composite leaves however good the head is). Training frames are rendered with the pose
corrections learned in training when the model has them. `--fit_val_poses` adds a row where each validation
camera is refitted to its frame by a pose-only photometric fit against the frozen model: the error that
remains is the model's, not the tracker's. The row `val_near` keeps only the validation frames whose head
pose is within NOVEL_POSE_DEG of a training pose: the others are novel views.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from bench.report import write_report
from data_utils.quality import NOVEL_POSE_DEG
from evaluation.frames import score_frames
from scene.avatar import Avatar
from scene.checkpoint import load_avatar
from scene.dataset import FrameBatch, TalkingHeadDataset
from scene.pose_correction import correct_viewmats, corrected_if_matching, correction_units
from utils.cli import ArgumentParser, add_model_arguments, run_cli
from utils.rigid import nearest_rotation_gap_deg

REGIONS = ("full", "face", "head_interior", "head_edge", "outside_head", "mouth")
EDGE_FRAC = 9 / 512  # width of the head-edge band, fraction of the image side


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(prog="python -m bench.diagnostics.error_regions", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--frames", type=int, default=25, help="evenly spaced frames per split (default 25)")
    p.add_argument("--batch_size", type=int, default=5, help="frames rendered at once (default 5)")
    p.add_argument("--fit_val_poses", action="store_true", help="also refit the validation cameras")
    p.add_argument("--fit_steps", type=int, default=150, help="Adam steps of the pose fit (default 150)")
    p.add_argument("--out", type=Path, help="report JSON (default MODEL/error_regions.json)")
    return p.parse_args(argv)


def masked_psnr(sq_err: Tensor, mask: Tensor) -> float:
    """PSNR in dB of per-pixel squared errors [H,W] (images in [0,1]) over the pixels where mask [H,W] > 0."""
    weight = mask.float()
    mse = (sq_err * weight).sum() / weight.sum().clamp(min=1)
    return float(-10 * torch.log10(mse.clamp(min=1e-12)))


def region_masks(batch: FrameBatch, edge_px: int) -> dict[str, Tensor]:
    """Bool masks [B,H,W] of the regions of REGIONS past full and face (edge band `edge_px` wide) of a batch
    with targets; full and face are scored by evaluation.frames.score_frame."""
    head = batch.head_mask[..., 0][:, None]
    k = 2 * (edge_px // 2) + 1
    inner = -F.max_pool2d(-head, k, 1, k // 2)[:, 0] > 0.5
    outer = F.max_pool2d(head, k, 1, k // 2)[:, 0] > 0.5
    return {
        "head_interior": inner,
        "head_edge": outer & ~inner,
        "outside_head": ~outer,
        "mouth": batch.mouth_mask[..., 0] > 0.5,
    }


def fit_poses(avatar: Avatar, batch: FrameBatch, steps: int) -> Tensor:
    """World->camera matrices [B,4,4] refitted to the batch's frames by L1 over 6 rigid numbers a frame."""
    unit = correction_units(avatar.scene_scale, batch.viewmat.device)
    delta = torch.zeros(batch.viewmat.shape[0], 6, device=batch.viewmat.device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=2e-3)
    tracked = batch.viewmat
    for step in range(steps):
        if step == steps * 2 // 3:
            optimizer.param_groups[0]["lr"] = 5e-4
        batch.viewmat = correct_viewmats(tracked, delta * unit)
        loss = (avatar.render(batch).image - batch.image).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    batch.viewmat = tracked
    return correct_viewmats(tracked, delta.detach() * unit)


def measure_split(
    avatar: Avatar,
    frames: Tensor,
    ds: TalkingHeadDataset,
    args: argparse.Namespace,
    fit: bool,
) -> tuple[dict[str, list[float]], list[Tensor]]:
    """PSNR per region (+ static model and composite rows) of each of `frames` [F] of the split ->
    ({column: [F] values}, picture strips)."""
    scores: dict[str, list[float]] = {}
    strips = []
    edge_px = max(3, round(EDGE_FRAC * ds.size))
    for chunk in frames.split(args.batch_size):
        batch = ds.get(chunk)
        if fit:
            batch.viewmat = fit_poses(avatar, batch, args.fit_steps)
        with torch.no_grad():
            fine = avatar.render(batch, "fine").image.clamp(0, 1)
            coarse = avatar.render(batch, "coarse").image.clamp(0, 1)
        masks = region_masks(batch, edge_px)
        frame_scores = {  # column prefix -> full frame and face box scores [B]
            "": score_frames(fine, batch.image, batch.face_rect),
            "static_": score_frames(coarse, batch.image, batch.face_rect),
        }
        fine_err = (fine - batch.image).square().mean(-1)
        composite_err = (batch.background - batch.image).square().mean(-1)
        for j in range(len(chunk)):
            row = {"full": frame_scores[""][j].psnr, "face": frame_scores[""][j].face_psnr}
            row.update({name: masked_psnr(fine_err[j], mask[j]) for name, mask in masks.items()})
            row["static_full"] = frame_scores["static_"][j].psnr
            row["static_face"] = frame_scores["static_"][j].face_psnr
            row["composite_outside_head"] = masked_psnr(composite_err[j], masks["outside_head"][j])
            for column, value in row.items():
                scores.setdefault(column, []).append(value)
        if len(strips) < 4:
            heat = ((fine[0] - batch.image[0]).abs().mean(-1, keepdim=True) * 5).clamp(0, 1).expand(-1, -1, 3)
            strips.append(torch.cat([fine[0], batch.image[0], heat], dim=1).cpu())
    return scores, strips


def mean_row(scores: dict[str, list[float]], keep: np.ndarray | None = None) -> dict[str, float]:
    """Mean of each column of per-frame scores over the frames where keep [F] is True (all when None) and
    the value is finite (as evaluation.frames.mean_scores); NaN where none is."""
    row = {}
    for k, v in scores.items():
        values = np.asarray(v, np.float64) if keep is None else np.asarray(v, np.float64)[keep]
        finite = values[np.isfinite(values)]
        row[k] = round(float(finite.mean()), 2) if finite.size else math.nan
    return row


def pose_gaps(val: TalkingHeadDataset, train: TalkingHeadDataset, frames: Tensor) -> np.ndarray:
    """Degrees [F] from the head pose of each validation frame in `frames` to the nearest training pose."""
    rot = lambda ds: ds.viewmats[:, :3, :3].double().cpu()
    return nearest_rotation_gap_deg(rot(val)[frames.cpu()], rot(train)).numpy()


def print_table(report: dict[str, dict[str, float]]) -> None:
    """Print the rows (splits) by columns (regions) as a table."""
    columns = list(next(iter(report.values())))
    print("PSNR dB".ljust(10) + "".join(c.rjust(max(len(c), 6) + 2) for c in columns))
    for split, row in report.items():
        cells = "".join(f"{row.get(c, math.nan):.2f}".rjust(max(len(c), 6) + 2) for c in columns)
        print(split.ljust(10) + cells)


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure, print the table, write the JSON report and the error picture -> exit code."""
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_avatar(args.model_path, device=device)
    avatar = loaded.avatar.eval()
    res = loaded.dataset_meta["resolution"]
    report: dict[str, dict[str, float]] = {}
    data = {
        s: TalkingHeadDataset(args.reference_path, s, res, device, audio_norm=loaded.audio_norm)
        for s in ("train", "val")
    }
    val_frames = data["val"].evenly_spaced(args.frames)
    near = pose_gaps(data["val"], data["train"], val_frames) <= NOVEL_POSE_DEG
    data["train"].viewmats = corrected_if_matching(data["train"].viewmats, loaded.pose_corrections)
    scores, _ = measure_split(avatar, data["train"].evenly_spaced(args.frames), data["train"], args, False)
    report["train"] = mean_row(scores)
    scores, pictures = measure_split(avatar, val_frames, data["val"], args, False)
    report["val"] = mean_row(scores)
    if near.any():
        report["val_near"] = mean_row(scores, near)
    if args.fit_val_poses:
        scores, _ = measure_split(avatar, val_frames, data["val"], args, True)
        report["val_fit"] = mean_row(scores)
    out = args.out or args.model_path / "error_regions.json"
    record = {"model_path": str(args.model_path), "reference_path": str(args.reference_path), "psnr": report}
    record["val_frames_near"] = (
        f"{int(near.sum())} of {len(near)} within {NOVEL_POSE_DEG:.0f} deg of a training pose"
    )
    write_report(out, record, args)
    picture = out.with_suffix(".jpg")
    grid = (torch.cat(pictures, dim=0) * 255).round().byte().numpy()
    Image.fromarray(grid).save(picture, quality=90)
    print_table(report)
    print(f"val_near: {record['val_frames_near']}")
    print(f"report: {out}\npicture (validation: render | ground truth | error x5): {picture}")
    return 0


if __name__ == "__main__":
    run_cli(main)
