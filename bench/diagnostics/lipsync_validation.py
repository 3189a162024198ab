"""Does the lip-sync score tell a clip's own audio from other speech? One row per real clip.

    python -m bench.diagnostics.lipsync_validation --videos CLIP.mp4 ... --audio OTHER.wav ... \
        [--out report.json]

Each clip is scored (evaluation.lipsync) against its own audio, against its own audio moved later and earlier
by --shift seconds (silence fills the gap), and against each other speaker, looped to the clip's length so
that every score rests on the same frames. The clip passes when its own score is judged and above every other
one by at least --margin. MediaPipe runs once per clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.report import write_report
from data_utils.audio_io import SAMPLE_RATE, load_audio
from data_utils.video_io import probe_video
from evaluation.landmarks import read_video_frames, video_landmarks
from evaluation.lipsync import score_lipsync
from utils.cli import ArgumentParser, UserError, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = ArgumentParser(
        prog="python -m bench.diagnostics.lipsync_validation",
        description="Score real clips against their own audio, their own audio shifted, and other speakers.",
        allow_abbrev=False,
    )
    p.add_argument("--videos", type=Path, nargs="+", required=True, help="real talking-head clips with audio")
    p.add_argument("--audio", type=Path, nargs="+", required=True, help="speech of other speakers")
    p.add_argument("--shift", type=float, default=0.5, help="seconds the own audio is moved (default 0.5)")
    p.add_argument("--margin", type=float, default=0.2, help="own score must exceed the others by this")
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    return p.parse_args(argv)


def shifted(wav: np.ndarray, seconds: float) -> np.ndarray:
    """`wav` [n] at SAMPLE_RATE moved later by `seconds` (earlier when negative), silence filling in."""
    k = min(round(abs(seconds) * SAMPLE_RATE), wav.size)
    pad = np.zeros(k, np.float32)
    return np.concatenate([pad, wav[: wav.size - k]]) if seconds > 0 else np.concatenate([wav[k:], pad])


def looped(wav: np.ndarray, length: int) -> np.ndarray:
    """`wav` [n] repeated (or cut) to `length` samples -> [length]."""
    return np.tile(wav, -(-length // max(wav.size, 1)))[:length]


def validate_clip(video: Path, others: dict[str, np.ndarray], shift: float) -> dict:
    """Scores of one clip against its own, shifted and other audio -> {name: LipSyncScore dict}."""
    fps = probe_video(video).fps
    lms = video_landmarks(read_video_frames(video))
    own = load_audio(video, SAMPLE_RATE)
    tracks = {
        "own": own,
        f"own {shift:+g} s": shifted(own, shift),
        f"own {-shift:+g} s": shifted(own, -shift),
    }
    tracks.update({name: looped(wav, own.size) for name, wav in others.items()})
    return {name: score_lipsync(lms, wav, SAMPLE_RATE, fps).to_dict() for name, wav in tracks.items()}


def _num(value: float | None) -> str:
    """A score for the table, or 'n/a'."""
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Score every clip and print the table; returns 0 when every clip passes, else 1."""
    args = parse_args(argv)
    for path in [*args.videos, *args.audio]:
        if not path.is_file():
            raise UserError(f"'{path}' not found; pass existing files to --videos and --audio")
    others = {path.stem: load_audio(path, SAMPLE_RATE) for path in args.audio}
    rows = {video.stem: validate_clip(video, others, args.shift) for video in args.videos}
    names = list(next(iter(rows.values())))
    print(f"{'clip':<28}" + "".join(f"{name[:14]:>15}" for name in names) + f"{'margin':>8}  pass")
    passed = {}
    for clip, scores in rows.items():
        own = scores["own"]["score"]
        rest = [s["score"] for name, s in scores.items() if name != "own" and s["score"] is not None]
        margin = own - max(rest) if own is not None and rest else None
        passed[clip] = margin is not None and margin >= args.margin and scores["own"]["judged"]
        cells = "".join(f"{_num(s['score']):>15}" for s in scores.values())
        print(f"{clip[:27]:<28}{cells}{_num(margin):>8}  {passed[clip]}")
    if args.out:
        write_report(args.out, {"shift_seconds": args.shift, "margin": args.margin, "clips": rows}, args)
        print(f"report: {args.out}")
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    run_cli(main)
