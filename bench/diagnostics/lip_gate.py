"""What a perfect mouth gate would give a lip-code model on its held-out frames: the PSNR of its render (the
predicted lips), of the same frames with the tracked lips, and of the predicted render with everything beyond
the mouth taken from the tracked one (evaluation.lip_reach.mouth_only_composite), beside how much of the lip
code's change lies away from the mouth (evaluation.lip_reach.lip_reach).

    python -m bench.diagnostics.lip_gate --reference_path data/me --predicted VAL --tracked VAL_TRACKED

VAL and VAL_TRACKED: `render_direct.sh` output folders of the model, without and with `--tracked_lips`
(`bench.ab` makes them as val/<run> and val_tracked/<run>). PSNR is of the decoded videos against the
dataset's held-out frames (evaluation.frames.score_frames), so it is below render_direct's own figure by what
the video codec loses; the three rows share that loss. A composite far above the render says the lip code
costs PSNR by moving what is not the mouth, which `train.sh --audio_scope mouth_only` or `lower_face` is built
to stop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.evaluate import rendered_video
from bench.report import write_report
from evaluation.frames import mean_scores, score_frames
from evaluation.lip_reach import lip_reach, mouth_only_composite, read_render_pair
from scene.dataset import TalkingHeadDataset
from utils.cli import ArgumentParser, UserError, run_cli

ROWS = ("predicted", "tracked", "mouth_only_composite")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(prog="python -m bench.diagnostics.lip_gate", description=__doc__.split("\n\n")[0])
    p.add_argument("--reference_path", required=True, type=Path, help="the model's preprocessed dataset")
    p.add_argument("--predicted", required=True, type=Path, help="render_direct.sh output folder")
    p.add_argument("--tracked", required=True, type=Path, help="the same with --tracked_lips")
    p.add_argument("--out", type=Path, help="report JSON (default PREDICTED/lip_gate.json)")
    return p.parse_args(argv)


def held_out_psnr(renders: np.ndarray, truth: torch.Tensor, face_boxes: torch.Tensor) -> dict[str, float]:
    """Mean full-frame and face PSNR of renders [T,H,W,3] (uint8) against truth [T,H,W,3] (float in [0,1])
    with face_boxes [T,4] -> {psnr, face_psnr}."""
    scores = mean_scores(score_frames(torch.as_tensor(renders).float() / 255, truth, face_boxes))
    return {"psnr": round(scores["psnr"], 3), "face_psnr": round(scores["face_psnr"], 3)}


def main(argv: list[str] | None = None) -> int:
    """Score the three renders, print them and write the JSON report -> exit code."""
    args = parse_args(argv)
    predicted, tracked, landmarks = read_render_pair(
        rendered_video(args.predicted), rendered_video(args.tracked)
    )
    val = TalkingHeadDataset(args.reference_path, "val", resolution=predicted.shape[1])
    if len(val) != len(predicted):
        raise UserError(
            f"{len(predicted)} rendered frames for {len(val)} held-out frames of '{args.reference_path}'; "
            "render the model's own dataset with render_direct.sh"
        )
    batch = val.get(torch.arange(len(val)))
    renders = dict(
        zip(ROWS, (predicted, tracked, mouth_only_composite(predicted, tracked, landmarks)), strict=True)
    )
    psnr = {name: held_out_psnr(r, batch.image, batch.face_rect) for name, r in renders.items()}
    reach = lip_reach(predicted, tracked, landmarks)
    out = args.out or args.predicted / "lip_gate.json"
    record = {
        "reference_path": str(args.reference_path),
        "frames": len(val),
        "psnr": psnr,
        "lip_reach": reach,
    }
    write_report(out, record, args)
    print(f"held-out frames: {len(val)} (decoded videos)\n{'render':<22} {'PSNR':>7} {'face':>7}")
    for name, row in psnr.items():
        print(f"{name:<22} {row['psnr']:7.2f} {row['face_psnr']:7.2f}")
    share = "n/a (no face found)" if reach["far_share"] is None else f"{reach['far_share']:.2f}"
    print(f"share of the lip code's change beyond the mouth: {share}\nreport: {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
