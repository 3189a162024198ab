"""Subjects per hour of ./train_many.sh on one GPU for several --per_gpu values, and the GPU memory each
subject needs; the --per_gpu default follows from these figures.

    python -m bench.train_many_throughput --videos ../shared/data/videos \\
        --output_dir bench_out/train_many --per_gpu 1 2 4 6 [--iterations 10000] [--subjects N] \\
        [--out report.json]

The clips are preprocessed once (CPU, not timed; reused by later runs with the same --output_dir). Then for
each K of --per_gpu, a fresh train_many run trains and renders (render_direct, held-out metrics and lip sync)
`--subjects` subjects (default K: one full wave, the clips repeated as needed) with --per_gpu K on a local Ray
instance; its wall time gives subjects per hour. Meanwhile nvidia-smi is polled every second for the peak
memory of each GPU process (one per training or render, CUDA context included) and of the whole GPU. The
recommended --per_gpu is the smallest K whose K subjects fit in 90 % of the GPU and whose subjects per hour
are within 5 % of the most that fit: beyond that, packing more only costs memory and each subject's time.

The report is rewritten after every K ("complete": false until the last), so a job cut short keeps the K
values it finished; a rerun with the same --out keeps those measured at the same --iterations and measures
only the others (a K whose run was cut is measured again from its start). --force measures every K again.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray

from bench.evaluate import machine_info
from bench.report import write_report
from many.driver import ManyConfig, run_many
from many.stages import StageOptions, run_step
from many.subjects import Subject, find_videos, read_json_file, subject_names
from utils.atomic import atomic_write_json
from utils.cli import ArgumentParser, UserError, run_cli

MEMORY_HEADROOM = 0.9  # share of the GPU's memory the subjects of one GPU may fill
THROUGHPUT_TOLERANCE = 0.05  # a smaller K within this share of the best subjects per hour is preferred
POLL_SECONDS = 1.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(prog="python -m bench.train_many_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", nargs="+", type=Path, required=True, help="clips, or folders of clips")
    p.add_argument(
        "--output_dir", type=Path, required=True, help="work folder (datasets/, per_gpu_<K>/, report)"
    )
    p.add_argument("--per_gpu", nargs="+", type=int, default=[1, 2, 4, 6], help="K values (default 1 2 4 6)")
    p.add_argument("--iterations", type=int, default=10_000, help="training iterations (default 10000)")
    p.add_argument("--subjects", type=int, help="subjects of each run (default K: one full wave)")
    p.add_argument("--preprocess_args", default="", help="extra preprocess.sh flags, quoted")
    p.add_argument("--train_args", default="", help="extra train.sh flags, quoted")
    p.add_argument("--render_args", default="", help="extra render_direct.sh flags, quoted")
    p.add_argument("--out", type=Path, help="JSON report (default OUTPUT_DIR/throughput.json)")
    p.add_argument(
        "--force",
        action="store_true",
        help="measure every K again (default: keep the K values already in --out)",
    )
    args = p.parse_args(argv)
    if min(args.per_gpu) < 1 or args.iterations < 1 or (args.subjects is not None and args.subjects < 1):
        p.error("--per_gpu values, --iterations and --subjects must be at least 1")
    return args


def _smi(query: str) -> list[list[str]]:
    """Rows of an nvidia-smi CSV query (no header, no units); [] when nvidia-smi is missing or fails."""
    try:
        proc = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[c.strip() for c in line.split(",")] for line in proc.stdout.splitlines() if line.strip()]


class MemoryWatch:
    """Polls nvidia-smi in a thread: peak MiB of each GPU process and of the whole GPU, mean utilisation."""

    def __init__(self) -> None:
        self.per_process: dict[str, float] = {}
        self.total_peak = 0.0
        self.utilisation: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        """Sample until stopped."""
        while not self.stop.wait(POLL_SECONDS):
            for pid, used in _smi("--query-compute-apps=pid,used_memory"):
                self.per_process[pid] = max(self.per_process.get(pid, 0.0), float(used))
            gpus = _smi("--query-gpu=memory.used,utilization.gpu")
            if gpus:
                self.total_peak = max(self.total_peak, sum(float(g[0]) for g in gpus))
                self.utilisation.append(sum(float(g[1]) for g in gpus) / len(gpus))

    def __enter__(self) -> MemoryWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def figures(self) -> dict[str, Any]:
        """Peak memory per process (max and median), of the GPU, and the mean utilisation."""
        peaks = sorted(self.per_process.values())
        return {
            "gpu_processes": len(peaks),
            "peak_mib_per_subject": max(peaks, default=None),
            "median_peak_mib_per_subject": peaks[len(peaks) // 2] if peaks else None,
            "peak_mib_total": self.total_peak or None,
            "mean_gpu_utilisation_pct": round(sum(self.utilisation) / len(self.utilisation), 1)
            if self.utilisation
            else None,
        }


def preprocess_clips(clips: list[Path], datasets: Path, opts: StageOptions) -> dict[str, float]:
    """Preprocess every clip once into datasets/<name>/data (kept when complete) -> seconds per clip."""
    subjects = [Subject(n, c, datasets / n) for n, c in zip(subject_names(clips), clips, strict=True)]
    with ThreadPoolExecutor(max(1, min(len(subjects), (os.cpu_count() or 2) // 2))) as pool:
        results = list(pool.map(lambda s: run_step("preprocess", s, opts), subjects))
    failed = [f"{s.name}: {r.error}" for s, r in zip(subjects, results, strict=True) if not r.ok]
    if failed:
        raise UserError(f"preprocessing failed ({'; '.join(failed)}); see {datasets}/<clip>/log.txt")
    return {s.name: r.seconds for s, r in zip(subjects, results, strict=True)}


def stage_run(clips: list[Path], datasets: Path, folder: Path, count: int) -> list[Path]:
    """Videos (links to the clips, repeated as needed) of a run in `folder`, each subject's data/ already
    holding a hard-linked copy of its clip's dataset, so that the run only trains and renders (the run
    folder is marked as train_many's with the train_many.json that the run then rewrites)."""
    names = subject_names(clips)
    videos_dir, run = folder / "videos", folder / "run"
    videos_dir.mkdir(parents=True)
    videos = []
    for i in range(count):
        clip, name = clips[i % len(clips)], names[i % len(clips)]
        link = videos_dir / f"{name}-r{i // len(clips) + 1}{clip.suffix}"
        link.symlink_to(clip)
        shutil.copytree(datasets / name / "data", run / link.stem / "data", copy_function=os.link)
        videos.append(link)
    atomic_write_json(run / "train_many.json", {"staged_by": "bench.train_many_throughput"})
    return videos


def measure(args: argparse.Namespace, clips: list[Path], per_gpu: int) -> dict[str, Any]:
    """One train_many run with --per_gpu `per_gpu` -> its figures."""
    folder = args.output_dir / f"per_gpu_{per_gpu}"
    if folder.exists():  # a run cut short, or one that --force measures again: a wave cannot resume mid-way
        shutil.rmtree(folder)
    count = args.subjects or per_gpu
    videos = stage_run(clips, args.output_dir / "datasets", folder, count)
    cfg = ManyConfig(
        videos=videos,
        out=folder / "run",
        per_gpu=per_gpu,
        iterations=args.iterations,
        train_args=shlex.split(args.train_args),
        render_args=shlex.split(args.render_args),
    )
    with open(folder / "progress.log", "w") as log, MemoryWatch() as watch:
        start = time.perf_counter()
        rows = run_many(cfg, log)
        wall = time.perf_counter() - start
    finished = [r for r in rows if r["status"] == "finished"]
    rates = [read_json_file(Path(r["folder"]) / "model" / "train_summary.json").get("it_per_s") for r in rows]
    return {
        "per_gpu": per_gpu,
        "iterations": args.iterations,
        "subjects": count,
        "finished": len(finished),
        "wall_s": round(wall, 1),
        "subjects_per_hour": round(len(finished) / wall * 3600, 2),
        "train_it_per_s_sum": round(sum(r for r in rates if r), 1),
        **watch.figures(),
        "mean_psnr": round(sum(r["psnr"] for r in finished) / len(finished), 2) if finished else None,
        "errors": {r["subject"]: r["error"] for r in rows if r["status"] == "failed"},
    }


def recommend(results: list[dict[str, Any]], gpu_mib: float | None) -> int | None:
    """The smallest K whose K subjects fit in MEMORY_HEADROOM of the GPU and whose subjects per hour are
    within THROUGHPUT_TOLERANCE of the most that fit; None when no run finished all its subjects."""
    fitting = [
        r
        for r in results
        if r["finished"] == r["subjects"]
        and (gpu_mib is None or (r["peak_mib_per_subject"] or 0) * r["per_gpu"] <= MEMORY_HEADROOM * gpu_mib)
    ]
    if not fitting:
        return None
    best = max(r["subjects_per_hour"] for r in fitting)
    return min(r["per_gpu"] for r in fitting if r["subjects_per_hour"] >= (1 - THROUGHPUT_TOLERANCE) * best)


def table(results: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table."""
    head = (
        "--per_gpu",
        "subjects",
        "wall",
        "subjects/hour",
        "sum it/s",
        "peak MiB per subject",
        "peak MiB GPU",
    )
    lines = ["| " + " | ".join((*head, "GPU util %")) + " |", "|---" * (len(head) + 1) + "|"]
    for r in results:
        cells = (
            r["per_gpu"], f"{r['finished']}/{r['subjects']}", f"{r['wall_s']:.0f} s", r["subjects_per_hour"],
            r["train_it_per_s_sum"], r["peak_mib_per_subject"], r["peak_mib_total"],
            r["mean_gpu_utilisation_pct"],
        )  # fmt: skip
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def earlier_results(path: Path, iterations: int) -> dict[int, dict[str, Any]]:
    """The per-K figures of an earlier report at `path` measured at `iterations` -> {K: figures}; {} when
    there is none (or it cannot be read)."""
    results = read_json_file(path).get("results", [])
    return {r["per_gpu"]: r for r in results if r.get("iterations") == iterations and "per_gpu" in r}


def build_report(
    clips: list[Path], preprocess_seconds: dict[str, float], results: list[dict[str, Any]], complete: bool
) -> dict[str, Any]:
    """The report's figures: host, clips, per-K results (ascending K), the recommendation, completeness."""
    memory = _smi("--query-gpu=memory.total")
    gpu_mib = float(memory[0][0]) if memory else None
    results = sorted(results, key=lambda r: r["per_gpu"])
    return {
        "host": {**machine_info(), "ray": ray.__version__, "gpu_memory_mib": gpu_mib},
        "clips": [str(c) for c in clips],
        "preprocess_seconds": preprocess_seconds,
        "complete": complete,
        "results": results,
        "recommended_per_gpu": recommend(results, gpu_mib),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each K not already in the report, rewriting the report after each; print the table."""
    args = parse_args(argv)
    args.output_dir = args.output_dir.absolute()
    path = args.out or args.output_dir / "throughput.json"
    clips = find_videos(args.videos)
    kept = {} if args.force else earlier_results(path, args.iterations)
    results = [r for k, r in kept.items() if k in args.per_gpu]
    todo = [k for k in args.per_gpu if k not in kept]
    if results:
        print(f"kept from {path}: --per_gpu {' '.join(str(r['per_gpu']) for r in results)} (--force: again)")
    preprocess_seconds: dict[str, float] = {}
    if todo:
        opts = StageOptions(preprocess_args=tuple(shlex.split(args.preprocess_args)))
        print(
            f"preprocessing {len(clips)} clips into {args.output_dir / 'datasets'} (once; not timed)",
            flush=True,
        )
        preprocess_seconds = preprocess_clips(clips, args.output_dir / "datasets", opts)
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            gpus = ray.cluster_resources().get("GPU", 0)
            if gpus != 1:
                print(
                    f"note: the Ray instance sees {gpus:g} GPUs; the figures are meant for one",
                    file=sys.stderr,
                )
            for per_gpu in todo:
                print(f"--per_gpu {per_gpu}: training {args.subjects or per_gpu} subjects ...", flush=True)
                results.append(measure(args, clips, per_gpu))
                print(table(results[-1:]).splitlines()[-1], flush=True)
                complete = len(results) == len(args.per_gpu)
                report = write_report(path, build_report(clips, preprocess_seconds, results, complete), args)
        finally:
            ray.shutdown()
    else:
        report = write_report(path, build_report(clips, preprocess_seconds, results, True), args)
    print("\n" + table(report["results"]))
    print(f"recommended --per_gpu: {report['recommended_per_gpu']}; report: {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
