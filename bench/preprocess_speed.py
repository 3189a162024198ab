"""Preprocessing benchmark: run preprocess.sh on each clip, print speed and quality per clip, write JSON."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_report
from utils.cli import ArgumentParser, UserError, run_cli
from utils.paths import REPO_ROOT

DEFAULT_VIDEOS = REPO_ROOT.parent / "shared" / "data" / "videos"
STAGES = (
    "detect",
    "crop_parse_write",
    "background",
    "refine_parsing",
    "smooth",
    "track",
    "transforms",
    "audio",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the benchmark's command line."""
    p = ArgumentParser(
        prog="python -m bench.preprocess_speed",
        description="Time preprocess.sh on talking-head clips and report quality.",
    )
    p.add_argument("--videos", nargs="+", type=Path, help=f"clips to run (default: {DEFAULT_VIDEOS}/*.mp4)")
    p.add_argument("--out", type=Path, default=Path("bench_preprocess.json"), help="JSON results file")
    p.add_argument("--size", type=int, default=512, help="dataset frame size (default 512)")
    p.add_argument("--fps", type=float, default=25.0, help="dataset frame rate (default 25)")
    return p.parse_args(argv)


def run_clip(video: Path, size: int, fps: float) -> dict:
    """Preprocess one clip into a temporary folder; return its timings, quality and wall/CPU seconds."""
    with tempfile.TemporaryDirectory(prefix="bench_pre_") as tmp:
        out = Path(tmp) / "data"
        cmd = [str(REPO_ROOT / "preprocess.sh"), str(video), str(out), "--size", str(size), "--fps", str(fps)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        record = {
            "clip": video.name,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "exit_code": proc.returncode,
        }
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            record["error"] = lines[-1] if lines else "unknown error"
            return record
        meta = json.loads((out / "preprocess.json").read_text())
    duration = meta["source"]["duration"]
    record.update(
        seconds=duration,
        frames=meta["frames"],
        timings=meta["timings"],
        quality=meta["quality"],
        realtime_factor=round(wall / max(duration, 1e-9), 2),
    )
    return record


def format_table(records: list[dict]) -> str:
    """Return a fixed-width table: clip, length, frames, wall, stage fps, face %, reprojection, warnings."""
    short = {"crop_parse_write": "crop", "background": "bg", "refine_parsing": "refine", "transforms": "xf"}
    stage_cols = [short.get(s, s) for s in STAGES]
    head = f"{'clip':<28} {'sec':>5} {'frames':>6} {'wall s':>7} {'cpu s':>6} " + " ".join(
        f"{c:>7}" for c in stage_cols
    )
    lines = [head + f" {'face %':>6} {'reproj':>6}  warnings", "-" * (len(head) + 30)]
    for r in records:
        if "error" in r:
            lines.append(f"{r['clip']:<28} failed (exit {r['exit_code']}): {r['error']}")
            continue
        fps = " ".join(f"{r['timings'].get(s, {}).get('fps', 0.0):7.1f}" for s in STAGES)
        q = r["quality"]
        warnings = "; ".join(q["warnings"]) or "-"
        lines.append(
            f"{r['clip']:<28} {r['seconds']:5.1f} {r['frames']:6d} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} "
            f"{fps} {100 * q['frames_with_face']:6.1f} {q['reproj_err_px']:6.2f}  {warnings}"
        )
    lines.append("stage columns are frames per second (dataset frames / stage wall seconds)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark over the clips, print the table and write the JSON file."""
    args = parse_args(argv)
    videos = args.videos or sorted(DEFAULT_VIDEOS.glob("*.mp4"))
    if not videos:
        raise UserError(f"no clips found in {DEFAULT_VIDEOS}; pass them with --videos")
    records = []
    for video in videos:
        print(f"preprocessing {video} ...", file=sys.stderr, flush=True)
        records.append(run_clip(video, args.size, args.fps))
    print(format_table(records))
    write_report(args.out, {"size": args.size, "fps": args.fps, "clips": records}, args)
    print(f"results written to {args.out}")
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    run_cli(main)
