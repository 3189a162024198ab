"""Lip-sync score of a face video against speech: phones of the audio against the lip opening of the video.

    python -m bench.lipsync --video VIDEO [--audio AUDIO] [--out report.json] [--syncnet syncnet_v2.model]

Prints the score and what it rests on, and writes the report as JSON with the score as its top-level `score`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report import write_report
from evaluation.lipsync import LAG_SECONDS, NULL_MIN_SHIFT_SECONDS, score_video, summary_lines
from utils.cli import ArgumentParser, UserError, run_cli

SCALE = (
    "The score lies in [-1, 1], higher is better: 0 is chance (what the same video scores against the same "
    f"phones moved by over {NULL_MIN_SHIFT_SECONDS:g} s), 1 means every frame where the audio has an open "
    "vowel shows a wider mouth than every frame where it has a labial consonant (P B M F V W), at the best "
    f"lag within ±{LAG_SECONDS:g} s. Real talking-head clips with their own audio score about 0.65-1.0; "
    "another speaker's audio or the own audio moved by 0.5 s about -0.6 to 0.4. Any language; the phones "
    "come from pocketsphinx's English phone model."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = ArgumentParser(
        prog="python -m bench.lipsync",
        description="Score how well the mouth of a face video follows a speech track. " + SCALE,
        allow_abbrev=False,
    )
    p.add_argument("--video", type=Path, required=True, help="face video (any ffmpeg format)")
    p.add_argument(
        "--audio", type=Path, help="speech the mouth should follow (default: the video's own track)"
    )
    p.add_argument("--out", type=Path, help="write the report here as JSON")
    p.add_argument(
        "--syncnet",
        type=Path,
        help="syncnet_v2.model for LSE-C/LSE-D (default: the one in ~/.cache/egstalker/syncnet, if there)",
    )
    p.add_argument(
        "--strip", type=Path, help="write a PNG of the mouth at open-vowel and labial moments here"
    )
    p.add_argument(
        "--reference_video",
        type=Path,
        help="a video of the person speaking --audio: also report how closely the mouth follows theirs "
        "(best-lag correlation of the lip openings, -1..1; reads no phones)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Score one video; returns the exit code."""
    args = parse_args(argv)
    if not args.video.is_file():
        raise UserError(f"video '{args.video}' not found; pass an existing file with --video")
    if args.audio is not None and not args.audio.is_file():
        raise UserError(f"audio '{args.audio}' not found; pass an existing file with --audio")
    if args.reference_video is not None and not args.reference_video.is_file():
        raise UserError(
            f"video '{args.reference_video}' not found; pass an existing file with --reference_video"
        )
    report = score_video(args.video, args.audio, args.syncnet, args.strip, args.reference_video)
    print("\n".join(summary_lines(report)))
    if args.out:
        write_report(args.out, report, args)
        print(f"report: {args.out}")
    if args.strip:
        shown = report["strip"]["path"] is not None
        print(f"strip: {args.strip}" if shown else "strip: not written (no open-vowel or labial moment)")
    return 0


if __name__ == "__main__":
    run_cli(main)
