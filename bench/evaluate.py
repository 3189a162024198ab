"""Measure one clip end to end (preprocess, train, render, predict): speed and quality into one JSON report.

Usage: python -m bench.evaluate --video CLIP.mp4 --audio OTHER_SPEECH.wav [--iterations N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import report as report_meta
from data_utils.audio_io import SAMPLE_RATE, load_audio
from data_utils.video_io import probe_video
from evaluation.frames import FrameScores, load_ground_truth, mean_scores, score_frame
from evaluation.landmarks import (
    landmark_distances,
    mouth_opening,
    read_video_frames,
    video_landmarks,
)
from evaluation.lipsync import score_lipsync, score_video
from scene.dataset import read_transforms, split_audio
from scene.prediction import default_batch_size, saved_lip_code_opening
from utils.cli import ArgumentParser, UserError, run_cli
from utils.lpips import LPIPS, default_lpips_dir, find_lpips_weights
from utils.metrics import best_lag_correlation
from utils.paths import REPO_ROOT
from utils.plots import plot_mouth_opening, plot_training_curves, read_jsonl
from utils.versions import package_version

EXTRAPOLATE_ITERATIONS = 10_000
MAX_LAG_SECONDS = 0.2
CPU_RENDER_VARIANTS = ("fp32", "cache")
PLOTS = {
    "training": "training_curves.png",
    "mouth_val": "mouth_opening_val.png",
    "strip_cross": "lipsync_strip_cross.png",
}
PACKAGES = ("numpy", "mediapipe", "opencv-contrib-python", "gsplat", "imageio-ffmpeg")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line of the benchmark."""
    parser = ArgumentParser(
        prog="python -m bench.evaluate",
        description="Run preprocess, train, render_direct and predict on one clip; write a JSON report "
        "of speed and quality, plots next to it, and print a summary table.",
    )
    parser.add_argument("--video", required=True, help="talking-head clip to preprocess and train on")
    parser.add_argument("--audio", required=True, help="other speech (any format ffmpeg reads) for lip sync")
    parser.add_argument("--iterations", type=int, default=10_000, help="training iterations (default 10000)")
    parser.add_argument("--batch_size", type=int, help="training batch size (default: train.sh's)")
    parser.add_argument("--resolution", type=int, help="training resolution (default: train.sh's)")
    parser.add_argument("--size", type=int, help="preprocess frame size in pixels (default: preprocess.sh's)")
    parser.add_argument(
        "--train_args",
        default="",
        help="extra train.sh arguments as one string, e.g. '--eval_every 500 --bf16'",
    )
    parser.add_argument(
        "--output_dir",
        help="where data, model and renders go (kept; existing stage outputs there are overwritten); "
        "default: a temporary folder deleted at the end unless --keep",
    )
    parser.add_argument(
        "--out", help="report path (default results/bench/<clip>/report.json); PNGs go beside it"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    return parser.parse_args(argv)


@dataclass
class StageRun:
    """Wall time and peak resident memory of one pipeline subprocess."""

    seconds: float
    peak_rss_mb: float
    peak_gpu_mb: float | None = None


@dataclass
class GpuMemoryPoller:
    """Background thread sampling the GPU memory in use (MiB) with nvidia-smi; no-op without nvidia-smi."""

    interval_s: float = 0.5
    peak_mb: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> float | None:
        """Memory used on GPU 0 in MiB, or None when nvidia-smi fails."""
        cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"]
        try:
            return float(subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.split()[0])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def _loop(self) -> None:
        """Sample until stopped, keeping the maximum."""
        while not self._stop.is_set():
            used = self._sample()
            if used is not None:
                self.peak_mb = max(self.peak_mb or 0.0, used)
            self._stop.wait(self.interval_s)

    @contextmanager
    def running(self) -> Iterator[GpuMemoryPoller]:
        """Poll while the block runs (only when nvidia-smi is on PATH)."""
        if shutil.which("nvidia-smi") is None:
            yield self
            return
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def run_stage(name: str, cmd: list[str]) -> StageRun:
    """Run one pipeline command with its output streamed to the terminal; UserError if it fails."""
    print(f"\n=== {name}: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with GpuMemoryPoller().running() as gpu:
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": path})
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        how = f"exit {proc.returncode}" if proc.returncode > 0 else f"killed by signal {-proc.returncode}"
        raise UserError(f"{name} failed ({how}); see its output above")
    return StageRun(seconds, usage.ru_maxrss / 1024.0, gpu.peak_mb)


def read_json(path: Path) -> dict:
    """Load a JSON file written by a pipeline stage; UserError naming it if absent."""
    if not path.is_file():
        raise UserError(f"expected output '{path}' is missing; the stage that writes it did not finish")
    return json.loads(path.read_text())


def _finite(value: float) -> float | None:
    """`value` as a float rounded to 4 decimals, or None when NaN/inf (JSON has neither)."""
    return round(float(value), 4) if value is not None and math.isfinite(value) else None


def _clean(obj: Any) -> Any:
    """Recursively replace non-finite floats by None and numpy scalars by Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _finite(float(obj))
    return obj


def machine_info() -> dict:
    """CPU, GPU, library versions and git commit of this run, flat (bench.report's metadata is the form every
    report carries; this one stays for callers that nest it under their own key)."""
    host, found = report_meta.machine(), report_meta.versions()
    return {
        "cpu_model": host["cpu"],
        "cpu_cores": host["cores"],
        "gpus": host["gpus"],
        "platform": host["platform"],
        "python": found["python"],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "git_commit": report_meta.git_commit(),
        "git_dirty": report_meta.git_dirty(),
    }


def _latest(paths: list[Path], pattern_prefix: str) -> Path | None:
    """The path whose name ends in the largest integer after `pattern_prefix`, or None."""
    numbered = [(int(p.name[len(pattern_prefix) :].split(".")[0]), p) for p in paths]
    return max(numbered)[1] if numbered else None


def model_files(model: Path) -> dict:
    """Sizes (MB) of the latest checkpoint and point-cloud PLY of a trained model."""
    chkpnt = _latest(list(model.glob("chkpnt*.pth")), "chkpnt")
    ply_dir = _latest(list((model / "point_cloud").glob("iteration_*")), "iteration_")
    ply = ply_dir / "point_cloud.ply" if ply_dir else None
    sizes = {
        "checkpoint_mb": chkpnt.stat().st_size / 2**20 if chkpnt else None,
        "ply_mb": ply.stat().st_size / 2**20 if ply and ply.is_file() else None,
    }
    sizes["total_mb"] = sum(v for v in sizes.values() if v is not None)
    sizes["checkpoint"] = chkpnt.name if chkpnt else None
    return sizes


def training_speed(model: Path, run: StageRun, iterations: int) -> dict:
    """Training speed: median logged it/s (first log skipped as warm-up), wall it/s, time to 10k its."""
    rows = read_jsonl(model / "metrics.jsonl") if (model / "metrics.jsonl").is_file() else []
    rates = [float(r["it_per_s"]) for r in rows if isinstance(r.get("it_per_s"), int | float)]
    steady = rates[1:] if len(rates) > 1 else rates
    it_per_s = float(np.median(steady)) if steady else iterations / run.seconds
    summary_path = model / "train_summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    gpu_key = next((k for k in summary if "gpu" in k.lower() and "mem" in k.lower()), None)
    if gpu_key is not None:
        peak_gpu, gpu_source = summary[gpu_key], f"train_summary.{gpu_key}"
    else:
        peak_gpu, gpu_source = run.peak_gpu_mb, "nvidia-smi (whole GPU)" if run.peak_gpu_mb else None
    last_val = next((r for r in reversed(rows) if "val_psnr" in r), {})
    return {
        "wall_seconds": run.seconds,
        "iterations": iterations,
        "it_per_s": it_per_s,
        "it_per_s_wall": iterations / run.seconds,
        f"seconds_to_{EXTRAPOLATE_ITERATIONS}_iterations": EXTRAPOLATE_ITERATIONS / it_per_s,
        "peak_rss_mb": run.peak_rss_mb,
        "peak_gpu_mb": peak_gpu,
        "peak_gpu_mb_source": gpu_source,
        "last_val": {k: v for k, v in last_val.items() if k.startswith("val_") or k == "iteration"},
        "summary": summary,
    }


def render_speed(model: Path, data: Path, resolution: int, out_json: Path) -> dict:
    """fps at batch 1 and in batches from bench/render_speed.py (CPU: batch 4, one run, no torch.compile)."""
    cuda = torch.cuda.is_available()
    batch = default_batch_size(torch.device("cuda" if cuda else "cpu"))
    cmd = [sys.executable, "-m", "bench.render_speed", "--model_path", str(model)]
    cmd += ["--reference_path", str(data), "--resolution", str(resolution), "--out", str(out_json)]
    cmd += ["--batch_sizes", "1", str(batch)]
    if not cuda:
        cmd += ["--warmup", "0", "--runs", "1", "--variants", *CPU_RENDER_VARIANTS]
    run = run_stage("render speed", cmd)
    result = read_json(out_json)
    return {
        "batch_1_fps": result["best"]["single"],
        "batched_fps": result["best"]["batch"],
        "batched_size": batch,
        "resolution": result.get("resolution"),
        "device": result.get("device"),
        "num_gaussians": result.get("num_gaussians"),
        "results": result.get("results"),
        "peak_gpu_mb_nvidia_smi": run.peak_gpu_mb,
    }


def _gt_frames(data: Path, ids: list[int], size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Ground-truth frames gt_imgs/<id>.jpg at `size` (width, height), resized as the dataset does."""
    width, height = size
    for i in ids:
        yield load_ground_truth(data / "gt_imgs" / f"{i}.jpg", height, width)


def load_lpips_metric() -> tuple[LPIPS | None, str]:
    """(LPIPS-alex network, "alex") when its weights are in the LPIPS folder, else (None, why not)."""
    if find_lpips_weights() is None:
        return None, f"not measured: no LPIPS weights in {default_lpips_dir()} (nothing is downloaded)"
    return LPIPS.load(), "alex"


def _video_size(video: Path) -> tuple[int, int]:
    """(width, height) of a video's first frame."""
    first = next(iter(read_video_frames(video)), None)
    if first is None:
        raise UserError(f"rendered video '{video}' has no frames")
    return first.shape[1], first.shape[0]


def image_quality(video: Path, data: Path, frames: list[dict], data_size: int) -> dict:
    """PSNR/SSIM (full frame and face box) and LPIPS of rendered validation frames vs ground truth, scored
    by evaluation.frames.score_frame at the video's size."""
    width, height = _video_size(video)
    scale = np.array([width, height, width, height]) / data_size
    ids = [f["img_id"] for f in frames]
    net, lpips_note = load_lpips_metric()
    scores: list[FrameScores] = []
    pairs = zip(read_video_frames(video), _gt_frames(data, ids, (width, height)), frames, strict=False)
    for render, gt, frame in pairs:
        box = np.asarray(frame["face_rect"], np.float64) * scale
        scores.append(score_frame(render, gt, box, lpips=net))
    result: dict[str, Any] = mean_scores(scores)
    result.setdefault("lpips", lpips_note if net is None else float("nan"))
    result.update(frames_compared=len(scores), frames_expected=len(ids), size=[width, height])
    return result


def _max_lag(fps: float) -> int:
    """Largest lag searched, in frames: MAX_LAG_SECONDS at `fps`."""
    return int(MAX_LAG_SECONDS * fps)


def _lipsync(lms: np.ndarray, wav: np.ndarray, fps: float) -> dict:
    """The lip-sync report (evaluation.lipsync) of landmarks [T,478,2] against speech `wav` [n] at 16 kHz."""
    return score_lipsync(lms, wav, SAMPLE_RATE, fps).to_dict()


def _face_ratio(lms: np.ndarray) -> float:
    """Fraction of frames [T,478,2] with a detected face."""
    return float(np.isfinite(lms[:, 0, 0]).mean()) if len(lms) else 0.0


def self_driven_quality(video: Path, data: Path, meta: dict, report_dir: Path) -> dict:
    """Quality of render_direct on the validation frames: images, landmarks, mouth motion vs GT and audio."""
    frames = read_transforms(data, "val")["frames"]
    fps = float(meta.get("fps", 25))
    result = image_quality(video, data, frames, int(meta["size"]))
    render_lms = video_landmarks(read_video_frames(video))
    gt_lms = video_landmarks(_gt_frames(data, [f["img_id"] for f in frames], tuple(result["size"])))
    n = min(len(render_lms), len(gt_lms))
    render_lms, gt_lms = render_lms[:n], gt_lms[:n]
    render_open, gt_open = mouth_opening(render_lms), mouth_opening(gt_lms)
    series = {"render": render_open, "ground truth": gt_open}
    plot_mouth_opening(series, fps, report_dir / PLOTS["mouth_val"])
    best_corr, best_lag = best_lag_correlation(gt_open, render_open, _max_lag(fps))
    wav = split_audio(data, frames[:n], fps)
    result.update(
        **{f"lmd_{k}_px": v for k, v in landmark_distances(render_lms, gt_lms).items()},
        render_frames_with_face=_face_ratio(render_lms),
        gt_frames_with_face=_face_ratio(gt_lms),
        mouth_opening_corr=best_lag_correlation(gt_open, render_open, 0)[0],
        mouth_opening_best_lag={"corr": best_corr, "lag_frames": best_lag},
        lipsync_render=_lipsync(render_lms, wav, fps),
        lipsync_gt=_lipsync(gt_lms, wav, fps),
        note="images decoded from the rendered video (lossy codec); landmark distances in pixels of the "
        "rendered size, MediaPipe on render and GT alike; lip sync by evaluation.lipsync (0 = chance)",
    )
    return result


def real_clip_lipsync(data: Path, meta: dict) -> dict:
    """Lip-sync report of the dataset's own frames (gt_imgs, MediaPipe as on renders) against its audio."""
    count = int(meta["frames"])
    size = int(meta["size"])
    lms = video_landmarks(_gt_frames(data, list(range(count)), (size, size)))
    return _lipsync(lms, load_audio(data / "aud.wav"), float(meta.get("fps", 25)))


def cross_driven_lipsync(
    video: Path, audio: Path, data: Path, meta: dict, report_dir: Path, real: dict | None = None
) -> dict:
    """Lip sync of a render driven by other speech (evaluation.lipsync.score_video: LSE-C/LSE-D too when
    SyncNet weights are found, and a strip of the mouth at the audio's open vowels and labials in
    `report_dir`), with the real clip and its own audio as reference (`real`: a real_clip_lipsync report
    already computed for this dataset). When `audio` is a video of its speaker, the render's opening is also
    compared with that speaker's (`video_reference`). When predict.sh saved the lip code beside the video,
    `lip_code` holds its score and how closely the render follows it."""
    reference = audio if has_video_stream(audio) else None
    strip = report_dir / PLOTS["strip_cross"]
    code = saved_lip_code_opening(video.parent)
    render = score_video(video, audio, strip=strip, reference_video=reference, lip_code=code)
    real = real or real_clip_lipsync(data, meta)
    ratio = render["score"] / real["score"] if render["score"] is not None and real["score"] else None
    return {
        "render": render,
        "reference_real_clip": real,
        "ratio_to_real_clip": ratio,
        "method": "evaluation.lipsync: open-vowel vs labial AUC of the outer-lip opening against "
        "pocketsphinx phones, chance-corrected (0 = chance, 1 = perfect)",
    }


def has_video_stream(path: Path) -> bool:
    """Whether the media file at `path` holds a video stream (a speech file given as a video of its
    speaker), not only audio."""
    try:
        probe_video(path)
    except UserError:
        return False
    return True


def output_video(summary: dict, results: Path) -> Path:
    """The rendered video named by a predict summary.json (relative paths are inside `results`; an absolute
    one that is gone, as in a folder copied from another machine, is looked for in `results` by name)."""
    video = Path(summary["video"])
    if not video.is_absolute():
        return results / video
    return results / video.name if not video.is_file() and (results / video.name).is_file() else video


def rendered_video(results: Path) -> Path:
    """The rendered video of a predict.sh or render_direct.sh output folder `results` (its summary.json)."""
    return output_video(read_json(results / "summary.json"), results)


def wrapper(name: str) -> list[str]:
    """Command prefix running one of the repository's .sh entry points."""
    return ["bash", str(REPO_ROOT / name)]


def _optional(flag: str, value: int | None) -> list[str]:
    """[flag, value] when value is set, else []."""
    return [flag, str(value)] if value is not None else []


def run_benchmark(args: argparse.Namespace, video: Path, audio: Path, work: Path, report_dir: Path) -> dict:
    """Run every stage in `work` and return the report dict (plots written into `report_dir`)."""
    data, model = work / "data" / video.stem, work / "model"
    render_dir, predict_dir = work / "render_val", work / "predict_cross"
    shutil.rmtree(model, ignore_errors=True)
    for name in PLOTS.values():
        (report_dir / name).unlink(missing_ok=True)
    started = time.time()

    prep_cmd = [*wrapper("preprocess.sh"), str(video), str(data), *_optional("--size", args.size), "--force"]
    prep = run_stage("preprocess", prep_cmd)
    meta = read_json(data / "preprocess.json")
    train_cmd = [*wrapper("train.sh"), "-s", str(data), "--model_path", str(model)]
    train_cmd += ["--iterations", str(args.iterations), *_optional("--batch_size", args.batch_size)]
    train_cmd += [*_optional("--resolution", args.resolution), *shlex.split(args.train_args)]
    train = run_stage("train", train_cmd)
    if (model / "metrics.jsonl").is_file():
        plot_training_curves(model / "metrics.jsonl", report_dir / PLOTS["training"])
    resolution = args.resolution or int(meta["size"])
    speed_render = render_speed(model, data, resolution, work / "render_speed.json")
    direct_cmd = [*wrapper("render_direct.sh"), "--model_path", str(model), "--reference_path", str(data)]
    direct = run_stage("render_direct", [*direct_cmd, "--output_dir", str(render_dir), "--force"])
    direct_summary = read_json(render_dir / "summary.json")
    pred_cmd = [*wrapper("predict.sh"), "--model_path", str(model), "--reference_path", str(data)]
    pred_cmd += ["--audio_path", str(audio), "--output_dir", str(predict_dir), "--force"]
    pred = run_stage("predict", pred_cmd)
    pred_summary = read_json(predict_dir / "summary.json")

    print("\n=== measuring quality (MediaPipe on renders and ground truth)", file=sys.stderr, flush=True)
    quality = self_driven_quality(output_video(direct_summary, render_dir), data, meta, report_dir)
    direct_metrics = render_dir / "metrics.json"
    quality["render_direct_metrics"] = read_json(direct_metrics) if direct_metrics.is_file() else None
    lipsync = cross_driven_lipsync(output_video(pred_summary, predict_dir), audio, data, meta, report_dir)
    gpu_peaks = [r.peak_gpu_mb for r in (prep, train, direct, pred) if r.peak_gpu_mb is not None]
    return {
        "clip": {
            "video": str(video),
            "audio": str(audio),
            "frames": meta.get("frames"),
            "fps": meta.get("fps"),
        },
        "settings": {
            k: getattr(args, k) for k in ("iterations", "batch_size", "resolution", "size", "train_args")
        },
        "speed": {
            "preprocess": {
                "wall_seconds": prep.seconds,
                "peak_rss_mb": prep.peak_rss_mb,
                "stages": meta.get("timings", {}),
            },
            "train": training_speed(model, train, args.iterations),
            "render": {
                **speed_render,
                "render_direct": {
                    "wall_seconds": direct.seconds,
                    "render_fps": direct_summary.get("render_fps"),
                },
                "predict": {
                    "wall_seconds": pred.seconds,
                    "render_fps": pred_summary.get("render_fps"),
                    "end_to_end_fps": pred_summary.get("end_to_end_fps"),
                    "frames": pred_summary.get("frames"),
                },
            },
            "peak_cpu_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
            "peak_gpu_mb_nvidia_smi": max(gpu_peaks, default=None),
            "model_size": model_files(model),
            "total_wall_seconds": time.time() - started,
        },
        "quality": {"self_driven": quality, "cross_driven": lipsync, "preprocess": meta.get("quality", {})},
        "plots": [name for name in PLOTS.values() if (report_dir / name).is_file()],
    }


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """Format a number for the table ('-' when missing or not a number)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.{digits}f}{unit}"
    return "-"


def summary_lines(report: dict) -> list[str]:
    """A short human-readable table of the (JSON-cleaned) report."""
    speed, quality = report["speed"], report["quality"]
    train, render = speed["train"], speed["render"]
    lines = [f"{'stage':<28}{'seconds':>10}{'fps':>10}"]
    for stage, t in speed["preprocess"]["stages"].items():
        lines.append(f"{'preprocess/' + stage:<28}{_fmt(t.get('seconds')):>10}{_fmt(t.get('fps')):>10}")
    lines.append(f"{'preprocess (wall)':<28}{_fmt(speed['preprocess']['wall_seconds']):>10}")
    steps = f"train ({train['iterations']} it)"
    lines.append(f"{steps:<28}{_fmt(train['wall_seconds']):>10}{_fmt(train['it_per_s'], ' it/s'):>14}")
    to_10k = train[f"seconds_to_{EXTRAPOLATE_ITERATIONS}_iterations"]
    lines.append(f"  -> {EXTRAPOLATE_ITERATIONS} iterations: {_fmt(to_10k and to_10k / 60, ' min', 1)}")
    lines.append(
        f"render fps: batch 1 {_fmt(render['batch_1_fps'])}, "
        f"batch {render['batched_size']} {_fmt(render['batched_fps'])}"
        f", predict end-to-end {_fmt(render['predict']['end_to_end_fps'])}"
    )
    lines.append(
        f"peak CPU RSS {_fmt(speed['peak_cpu_rss_mb'], ' MB', 0)}, "
        f"peak GPU {_fmt(train['peak_gpu_mb'], ' MB', 0)} (train), "
        f"model {_fmt(speed['model_size']['total_mb'], ' MB', 1)}"
    )
    sd = quality["self_driven"]
    lpips = _fmt(sd["lpips"], "", 3) if not isinstance(sd["lpips"], str) else "not measured"
    lines.append(
        f"val PSNR {_fmt(sd['psnr'])} dB (face {_fmt(sd['face_psnr'])}), SSIM {_fmt(sd['ssim'], '', 3)} "
        f"(face {_fmt(sd['face_ssim'], '', 3)}), LPIPS {lpips}"
    )
    lines.append(
        f"LMD mouth {_fmt(sd['lmd_mouth_px'])} px (shape {_fmt(sd['lmd_mouth_shape_px'])}, offset "
        f"{_fmt(sd['lmd_mouth_offset_px'])}), face {_fmt(sd['lmd_face_px'])} px, "
        f"mouth-opening corr render vs GT {_fmt(sd['mouth_opening_corr'], '', 3)}"
    )
    ren, ref = quality["cross_driven"]["render"], quality["cross_driven"]["reference_real_clip"]
    lines.append(
        f"lip sync (0 = chance, 1 = perfect): other speech {_fmt(ren['score'])}, "
        f"real clip {_fmt(ref['score'])}; "
        f"validation render {_fmt(sd['lipsync_render']['score'])}, its ground truth "
        f"{_fmt(sd['lipsync_gt']['score'])}"
    )
    return lines


@contextmanager
def work_folder(output_dir: str | None, keep: bool) -> Iterator[Path]:
    """Yield the given work folder, or a temporary one removed afterwards unless `keep`."""
    if output_dir:
        path = Path(output_dir).resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="egstalker-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"work folder kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: check inputs, run the benchmark, write the report and print the table."""
    args = parse_args(argv)
    video, audio = Path(args.video).resolve(), Path(args.audio).resolve()
    if not video.is_file():
        raise UserError(f"video '{args.video}' not found; pass an existing clip with --video")
    if not audio.is_file():
        raise UserError(f"audio '{args.audio}' not found; pass an existing speech file with --audio")
    if args.iterations < 1:
        raise UserError("--iterations must be at least 1")
    out = Path(args.out or REPO_ROOT / "results" / "bench" / video.stem / "report.json").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with work_folder(args.output_dir, args.keep) as work:
        report = _clean(run_benchmark(args, video, audio, work, out.parent))
        report["output_dir"] = str(work) if args.output_dir or args.keep else None
    report = report_meta.write_report(out, report, args)
    print("\n" + "\n".join(summary_lines(report)))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
