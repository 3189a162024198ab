"""Lip sync of one trained avatar driven by several other speakers, with the real clip as the reference.

Usage: python -m bench.cross_driven --model_path OUT --reference_path DATA --audio A.wav [B.mp3 ...]
Writes one JSON report (and a strip of the mouth at the open vowels and labials of each audio) and prints a
table. Speech given as a video of its speaker is also scored by how closely the mouth follows theirs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.evaluate import (
    cross_driven_lipsync,
    read_json,
    real_clip_lipsync,
    rendered_video,
    run_stage,
    wrapper,
)
from bench.report import write_report
from utils.cli import ArgumentParser, UserError, add_model_arguments, run_cli
from utils.paths import REPO_ROOT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = ArgumentParser(
        prog="python -m bench.cross_driven",
        description="Drive a trained avatar with each given speech file (predict.sh) and score its lip "
        "sync with evaluation.lipsync (python -m bench.lipsync --help gives the scale: 0 = chance, "
        "1 = perfect), the real clip with its own audio alongside.",
    )
    add_model_arguments(p)
    p.add_argument("--audio", type=Path, nargs="+", required=True, help="speech files (any ffmpeg format)")
    p.add_argument(
        "--output_dir", type=Path, default=REPO_ROOT / "results" / "cross_driven", help="renders go here"
    )
    p.add_argument("--out", type=Path, help="report path (default OUTPUT_DIR/report.json)")
    p.add_argument(
        "--predict_args", default="", help="extra predict.sh arguments as one string, e.g. '--bf16'"
    )
    return p.parse_args(argv)


def _num(value: float | None) -> str:
    """A score for the table, or 'n/a'."""
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Render and score every audio; returns the exit code."""
    args = parse_args(argv)
    for audio in args.audio:
        if not audio.is_file():
            raise UserError(f"audio '{audio}' not found; pass existing speech files with --audio")
    meta = read_json(args.reference_path / "preprocess.json")
    work = args.output_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    real = real_clip_lipsync(args.reference_path, meta)
    for audio in args.audio:
        results = work / audio.stem
        cmd = [*wrapper("predict.sh"), "--model_path", str(args.model_path.resolve())]
        cmd += ["--reference_path", str(args.reference_path.resolve()), "--audio_path", str(audio.resolve())]
        cmd += ["--output_dir", str(results), "--force", *args.predict_args.split()]
        run_stage(f"predict {audio.name}", cmd)
        video = rendered_video(results)
        rows[audio.name] = cross_driven_lipsync(video, audio, args.reference_path, meta, results, real)
    out = (args.out or work / "report.json").resolve()
    write_report(out, {"model_path": str(args.model_path), "real_clip": real, "audio": rows}, args)
    head = f"{'audio':<32}{'score':>7}{'lag':>5}{'judged':>8}{'/ real':>8}{'video corr':>12}"
    print(f"\n{head}{'lip code':>10}{'follows':>9}")
    for name, row in rows.items():
        ren, ratio = row["render"], row["ratio_to_real_clip"]
        corr = _num(ren["video_reference"]["corr"]) if "video_reference" in ren else "-"
        code = ren.get("lip_code", {})  # a free-code model has none
        print(
            f"{name:<32}{_num(ren['score']):>7}{ren['lag_frames']:>5}{str(ren['judged']):>8}{_num(ratio):>8}"
            f"{corr:>12}{_num(code.get('score')) if code else '-':>10}"
            f"{_num(code.get('follows')) if code else '-':>9}"
        )
    print(
        f"{'real clip, own audio':<32}{_num(real['score']):>7}{real['lag_frames']:>5}{str(real['judged']):>8}"
    )
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
