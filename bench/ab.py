"""A/B of training settings on several clips at once: every arm trained on every clip (and seed), several runs
sharing one GPU, each model scored as soon as it is trained, on its held-out frames (render_direct.sh) and
driven by other speakers and by silence (bench.cross_driven); one table per clip and arm.

Usage: python -m bench.ab --videos A.mp4 B.mp4 --audio X.wav Y.wav --arm base= \
           --arm free:logmel="--audio_code free --audio_scope everywhere"
An arm is NAME=TRAIN_ARGS or NAME:EXTRACTOR=TRAIN_ARGS (EXTRACTOR: the dataset's --audio_extractor, default
preprocess.sh's, optionally followed by more preprocess.sh flags without '=': NAME:'visemes --align_audio'=).
Every step is skipped when its output is complete, so a rerun continues; a step that fails is reported with
the last line of its log and does not stop the others.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.evaluate import read_json, rendered_video, wrapper
from bench.report import write_report
from data_utils.audio_io import SAMPLE_RATE, write_wav
from data_utils.preprocess_config import PreprocessConfig
from evaluation.landmarks import read_video_frames, video_landmarks
from evaluation.lip_reach import video_lip_reach
from evaluation.lipsync import lip_opening
from many.stages import error_line, run_logged
from utils.atomic import atomic_write_json
from utils.cli import ArgumentParser, UserError, run_cli
from utils.paths import REPO_ROOT

SILENCE_SECONDS = 4.0
HISS_DBFS = -55.0  # a quiet room's hiss: below the -45 dBFS of data_utils.silence; predict.sh refuses -60


@dataclass(frozen=True)
class Arm:
    """One side of the A/B: a name, the audio extractor and extra preprocess.sh flags of its datasets, and the
    extra train.sh arguments."""

    name: str
    extractor: str
    train_args: tuple[str, ...]
    preprocess_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """One training: a clip, an arm and a seed, under the A/B's work folder."""

    clip: str
    arm: Arm
    seed: int
    work: Path

    @property
    def name(self) -> str:
        """Folder name of the run: <clip>__<arm>__s<seed>."""
        return f"{self.clip}__{self.arm.name}__s{self.seed}"

    @property
    def data(self) -> Path:
        """Its dataset, shared by the arms of one extractor and preprocess flags:
        work/data/<clip>__<extractor>[__<flags>]."""
        words = " ".join(a.lstrip("-") for a in self.arm.preprocess_args)
        flags = re.sub(r"[^A-Za-z0-9_.-]+", "_", words).strip("_")
        return self.work / "data" / "__".join(filter(None, (self.clip, self.arm.extractor, flags)))

    @property
    def model(self) -> Path:
        """Its model folder: work/models/<name>."""
        return self.work / "models" / self.name

    @property
    def val(self) -> Path:
        """Its held-out scores (render_direct.sh): work/val/<name>."""
        return self.work / "val" / self.name

    @property
    def val_tracked(self) -> Path:
        """Its held-out frames with the tracked lip measures driving the lip code (render_direct.sh
        --tracked_lips; lip-code models only): work/val_tracked/<name>."""
        return self.work / "val_tracked" / self.name

    @property
    def cross(self) -> Path:
        """Its cross-driven renders and report (bench.cross_driven): work/cross/<name>."""
        return self.work / "cross" / self.name


def parse_arm(text: str) -> Arm:
    """Arm of 'NAME[:[EXTRACTOR] [PREPROCESS_FLAGS]]=TRAIN_ARGS'; UserError for a malformed one."""
    head, sep, args = text.partition("=")
    name, _, dataset = head.partition(":")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(
            f"--arm '{text}' is not NAME=TRAIN_ARGS or NAME:EXTRACTOR=TRAIN_ARGS "
            "(e.g. free:logmel='--audio_code free', aligned:'visemes --align_audio'=)"
        )
    words = shlex.split(dataset)
    extractor = words.pop(0) if words and not words[0].startswith("-") else PreprocessConfig().audio_extractor
    return Arm(name, extractor, tuple(shlex.split(args)), tuple(words))


def plan(videos: list[Path], arms: list[Arm], seeds: list[int], work: Path) -> list[Run]:
    """Every (clip, arm, seed) run under `work`."""
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise UserError(f"arm names must differ, got {names}")
    return [Run(v.stem, arm, seed, work) for v in videos for arm in arms for seed in seeds]


def run_step(cmd: list[str], log: Path) -> str | None:
    """Run cmd with its output in `log` as train_many runs its steps (many.stages.run_logged: Ctrl-C stops
    it cleanly); None on success, else its one-line error (many.stages.error_line)."""
    code = run_logged(cmd, log)
    return None if code == 0 else error_line(log.read_text(errors="replace"), code)


def _report_end(label: str, error: str | None, errors: dict[str, str]) -> None:
    """Print a step's end and keep its error under `label`."""
    print(
        f"  {'FAILED' if error else 'done'}: {label}{': ' + error if error else ''}",
        file=sys.stderr,
        flush=True,
    )
    if error:
        errors[label] = error


def run_parallel(jobs: list[tuple[str, Callable[[], str | None]]], parallel: int) -> dict[str, str]:
    """Run (label, job) pairs `parallel` at a time, printing each end; return {label: error} of the failed."""
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        for future in [pool.submit(lambda lj=lj: _report_end(lj[0], lj[1](), errors)) for lj in jobs]:
            future.result()
    return errors


def run_pipelined(
    runs: list[Run],
    train: Callable[[Run], str | None],
    evaluate: Callable[[Run], str | None],
    is_trained: Callable[[Run], bool],
    parallel: int,
    eval_parallel: int,
) -> dict[str, str]:
    """Train the runs not yet trained (`parallel` at a time) and evaluate each as soon as it is trained
    (`eval_parallel` at a time, beside the trainings), so that what has finished is scored even when the
    machine goes before the last training ends; return {label: error} of the failed steps."""
    errors: dict[str, str] = {}
    slots = {"train": threading.Semaphore(parallel), "evaluate": threading.Semaphore(eval_parallel)}

    def step(kind: str, run: Run, job: Callable[[Run], str | None]) -> None:
        with slots[kind]:
            error = job(run)
        _report_end(f"{kind} {run.name}", error, errors)

    def one(run: Run) -> None:
        if not is_trained(run):
            step("train", run, train)
        if is_trained(run):
            step("evaluate", run, evaluate)

    with ThreadPoolExecutor(max_workers=max(parallel + eval_parallel, 1)) as pool:
        for future in [pool.submit(one, run) for run in runs]:
            future.result()
    return errors


def write_silence(path: Path) -> Path:
    """A SILENCE_SECONDS WAV of faint noise at HISS_DBFS (fixed seed) at `path`, written once."""
    if not path.is_file():
        rng = np.random.default_rng(0)
        amplitude = 10 ** (HISS_DBFS / 20)
        write_wav(
            path,
            (rng.normal(0, amplitude, round(SILENCE_SECONDS * SAMPLE_RATE))).astype(np.float32),
            SAMPLE_RATE,
        )
    return path


def trained(run: Run, iterations: int) -> bool:
    """Whether the run's model finished `iterations` (train_summary.json)."""
    summary = run.model / "train_summary.json"
    return summary.is_file() and int(read_json(summary).get("iterations", 0)) >= iterations


def opening_stats(video: Path) -> dict:
    """Mean, spread and 95th percentile of the lip opening (evaluation.lipsync.lip_opening) of a video."""
    opening = lip_opening(video_landmarks(read_video_frames(video)))
    if not np.isfinite(opening).any():
        return {"mean": None, "std": None, "p95": None}
    return {
        k: round(float(f(opening)), 4)
        for k, f in (("mean", np.nanmean), ("std", np.nanstd), ("p95", lambda o: np.nanpercentile(o, 95)))
    }


def silence_stats_path(run: Run) -> Path:
    """Where evaluate saves the run's lip opening under silence: cross/<name>/silence_opening.json."""
    return run.cross / "silence_opening.json"


def lip_reach_path(run: Run) -> Path:
    """Where evaluate saves how far the run's lip code reaches (lip-code models):
    val_tracked/<name>/lip_reach.json."""
    return run.val_tracked / "lip_reach.json"


def write_lip_reach(run: Run) -> None:
    """Save evaluation.lip_reach of the run's held-out render against the same with the tracked lips."""
    atomic_write_json(
        lip_reach_path(run), video_lip_reach(rendered_video(run.val), rendered_video(run.val_tracked))
    )


def evaluated(run: Run) -> bool:
    """Whether every file run_scores reads of `run` is there."""
    files = [
        run.val / "metrics.json",
        run.cross / "report.json",
        silence_stats_path(run),
        run.model / "train_summary.json",
    ]
    return all(f.is_file() for f in files)


def write_silence_stats(run: Run, silence: Path) -> None:
    """Save opening_stats of the run's render driven by `silence` (the cross-driven step made it)."""
    silence_dir = run.cross / silence.stem
    stats = opening_stats(rendered_video(silence_dir))
    atomic_write_json(silence_stats_path(run), stats)


def run_scores(run: Run, silence: Path) -> dict:
    """The scores of one evaluated run: held-out metrics, cross-driven lip sync per audio, silence stats."""
    val = read_json(run.val / "metrics.json")
    cross = read_json(run.cross / "report.json")
    still = read_json(silence_stats_path(run))
    driving = {name: row["render"] for name, row in cross["audio"].items() if name != silence.name}
    return {
        "val_psnr": val.get("psnr"),
        "val_face_psnr": val.get("face_psnr"),
        "lmd_mouth": val.get("lmd_mouth"),
        "lmd_mouth_shape": val.get("lmd_mouth_shape"),
        "lmd_mouth_tracked_lips": read_json(run.val_tracked / "metrics.json").get("lmd_mouth")
        if (run.val_tracked / "metrics.json").is_file()
        else None,
        "off_mouth_share": read_json(lip_reach_path(run)).get("far_share")
        if lip_reach_path(run).is_file()
        else None,
        "lipsync": {name: render["score"] for name, render in driving.items()},
        "video_corr": {
            name: render["video_reference"]["corr"]
            for name, render in driving.items()
            if "video_reference" in render
        },
        "lip_code_lipsync": {n: r["lip_code"]["score"] for n, r in driving.items() if "lip_code" in r},
        "lip_code_follows": {n: r["lip_code"]["follows"] for n, r in driving.items() if "lip_code" in r},
        "real_clip_lipsync": cross["real_clip"]["score"],
        "real_clip_silence_opening": cross["real_clip"]["silence_opening"],
        "real_clip_speech_opening": cross["real_clip"]["speech_opening"],
        "silence_opening": still,
        "train_seconds": read_json(run.model / "train_summary.json").get("seconds"),
    }


AVERAGED_SCORES = (
    "val_psnr",
    "val_face_psnr",
    "lmd_mouth",
    "lmd_mouth_shape",
    "lmd_mouth_tracked_lips",
    "off_mouth_share",
    "train_seconds",
)


def _mean(values: list[float | None]) -> float | None:
    """Mean of the finite values, None when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def table(rows: dict[str, dict], runs: list[Run]) -> list[dict]:
    """Per (clip, arm), the scores averaged over its seeds (lip sync: mean over speakers and its ratio to the
    real clip's own score)."""
    out = []
    for clip in dict.fromkeys(r.clip for r in runs):
        for arm in dict.fromkeys(r.arm for r in runs if r.clip == clip):
            scores = [rows[r.name] for r in runs if r.clip == clip and r.arm == arm and r.name in rows]
            if not scores:
                continue
            speakers = sorted({s for sc in scores for s in sc["lipsync"]})
            per_speaker = {s: _mean([sc["lipsync"].get(s) for sc in scores]) for s in speakers}
            mean_sync = _mean(list(per_speaker.values()))
            video_corr = _mean([_mean(list(sc.get("video_corr", {}).values())) for sc in scores])
            code, follows = (  # not in older reports
                _mean([_mean(list(sc.get(key, {}).values())) for sc in scores])
                for key in ("lip_code_lipsync", "lip_code_follows")
            )
            real = _mean([sc["real_clip_lipsync"] for sc in scores])
            out.append(
                {
                    "clip": clip,
                    "arm": arm.name,
                    "seeds": len(scores),
                    "lipsync": per_speaker,
                    "lipsync_mean": mean_sync,
                    "real_clip_lipsync": real,
                    "ratio_to_real": round(mean_sync / real, 3) if mean_sync is not None and real else None,
                    "video_corr": video_corr,
                    "lip_code_lipsync_mean": code,
                    "lip_code_follows": follows,
                    **{
                        k: _mean([sc.get(k) for sc in scores])  # the LMD parts: not in older reports
                        for k in AVERAGED_SCORES
                    },
                    "silence_opening": _mean([sc["silence_opening"]["mean"] for sc in scores]),
                    "silence_opening_std": _mean([sc["silence_opening"]["std"] for sc in scores]),
                    "real_clip_silence_opening": _mean([sc["real_clip_silence_opening"] for sc in scores]),
                }
            )
    return out


def markdown(rows: list[dict]) -> str:
    """The table as Markdown: one row per clip and arm."""
    speakers = sorted({s for r in rows for s in r["lipsync"]})
    head = [
        "clip",
        "arm",
        "seeds",
        *speakers,
        "mean",
        "real",
        "ratio",
        "lip code / render follows",
        "video corr",
        "val PSNR / face",
        "LMD mouth (shape) / tracked lips",
        "off-mouth change",
        "silence open (std) / real",
        "train s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    fmt = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"
    for r in rows:
        cells = [
            r["clip"],
            r["arm"],
            str(r["seeds"]),
            *(fmt(r["lipsync"].get(s)) for s in speakers),
            fmt(r["lipsync_mean"]),
            fmt(r["real_clip_lipsync"]),
            fmt(r["ratio_to_real"]),
            f"{fmt(r.get('lip_code_lipsync_mean'))} / {fmt(r.get('lip_code_follows'))}",
            fmt(r.get("video_corr")),
        ]
        cells += [
            f"{fmt(r['val_psnr'])} / {fmt(r['val_face_psnr'])}",
            f"{fmt(r['lmd_mouth'])} ({fmt(r.get('lmd_mouth_shape'))})"
            f" / {fmt(r.get('lmd_mouth_tracked_lips'))}",
            fmt(r.get("off_mouth_share")),
            f"{fmt(r['silence_opening'], 3)} ({fmt(r['silence_opening_std'], 3)})"
            f" / {fmt(r['real_clip_silence_opening'], 3)}",
            fmt(r["train_seconds"], 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = ArgumentParser(
        prog="python -m bench.ab",
        description="Train every arm on every clip (several at once), then score each model on its held-out "
        "frames and driven by other speakers and by silence; print and save one table.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python -m bench.ab --videos ../shared/data/videos/*.mp4 "
        "--audio ../shared/data/audio/*.wav --arm base= "
        "--arm free:logmel='--audio_scope everywhere --audio_code free' --iterations 5000 --parallel 10",
    )
    p.add_argument("--videos", type=Path, nargs="+", required=True, help="talking-head clips")
    p.add_argument(
        "--audio",
        type=Path,
        nargs="+",
        required=True,
        help="other speakers' speech (any ffmpeg format); a video of its speaker (e.g. another of --videos) "
        "also scores how closely the mouth follows theirs (the 'video corr' column, which reads no phones); "
        "a clip never drives its own avatar",
    )
    p.add_argument(
        "--arm",
        action="append",
        required=True,
        metavar="NAME[:EXTRACTOR [FLAGS]]=TRAIN_ARGS",
        help="one side of the A/B (repeat)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--iterations", type=int, default=10_000, help="training iterations (default 10000)")
    p.add_argument(
        "--parallel", type=int, default=6, help="preprocessing and training steps run at once (default 6)"
    )
    p.add_argument(
        "--eval_parallel",
        type=int,
        default=4,
        help="evaluations run at once (each holds a model's renders in GPU memory: 20 at once filled an "
        "H200; default 4)",
    )
    p.add_argument("--preprocess_args", default="", help="extra preprocess.sh arguments as one string")
    p.add_argument("--predict_args", default="", help="extra predict.sh / render_direct.sh arguments")
    p.add_argument(
        "--output_dir", type=Path, default=REPO_ROOT / "results" / "ab", help="data, models and renders"
    )
    p.add_argument("--out", type=Path, help="report path (default OUTPUT_DIR/report.json; .md beside it)")
    p.add_argument(
        "--report_only",
        action="store_true",
        help="run nothing: tabulate the runs already evaluated under OUTPUT_DIR (e.g. their JSON files "
        "copied back from a machine whose time ran out; the videos and audio need not be there)",
    )
    return p.parse_args(argv)


def run_steps(args: argparse.Namespace, runs: list[Run], work: Path, silence: Path) -> dict[str, str]:
    """Preprocess every dataset, then train and evaluate every run (run_pipelined), each step skipped when
    its output is complete; return the failed steps {label: error}."""
    for path in [*args.videos, *args.audio]:
        if not path.is_file():
            raise UserError(f"'{path}' not found; pass existing files to --videos and --audio")
    videos = {v.stem: v.resolve() for v in args.videos}
    audio = [str(a.resolve()) for a in args.audio] + [str(silence)]
    extra_pre, extra_predict = shlex.split(args.preprocess_args), args.predict_args
    errors: dict[str, str] = {}

    datasets = {r.data: (r.clip, r.arm.extractor, r.arm.preprocess_args) for r in runs}
    print(f"[ab] {len(datasets)} datasets, {len(runs)} trainings, {args.parallel} at once", file=sys.stderr)
    errors |= run_parallel(
        [
            (
                f"preprocess {d.name}",
                lambda d=d, c=c, e=e, f=f: run_step(
                    [
                        *wrapper("preprocess.sh"),
                        str(videos[c]),
                        str(d),
                        "--audio_extractor",
                        e,
                        "--force",
                        *extra_pre,
                        *f,
                    ],
                    work / "logs" / f"preprocess_{d.name}.txt",
                ),
            )
            for d, (c, e, f) in datasets.items()
            if not (d / "preprocess.json").is_file()
        ],
        args.parallel,
    )
    ready = [r for r in runs if (r.data / "preprocess.json").is_file()]

    def train(r: Run) -> str | None:
        """train.sh of one run."""
        cmd = [
            *wrapper("train.sh"),
            *("-s", str(r.data), "--model_path", str(r.model), "--iterations", str(args.iterations)),
            *("--seed", str(r.seed), "--force", *r.arm.train_args),
        ]
        return run_step(cmd, work / "logs" / f"train_{r.name}.txt")

    def cross_cmd(r: Run) -> list[str]:
        """The bench.cross_driven command of one run."""
        return [
            sys.executable,
            "-m",
            "bench.cross_driven",
            "--model_path",
            str(r.model),
            "--reference_path",
            str(r.data),
            "--audio",
            *(a for a in audio if Path(a).stem != r.clip),  # a clip is no other speaker to its avatar
            "--output_dir",
            str(r.cross),
            "--out",
            str(r.cross / "report.json"),
            "--predict_args",
            extra_predict,
        ]

    def evaluate(r: Run) -> str | None:
        """render_direct (and, for a lip-code model, render_direct --tracked_lips), cross_driven and the
        silence statistics of one run, each skipped when its output exists."""

        def render_direct(out: Path, *flags: str) -> list[str]:
            """render_direct.sh of the run's model on its dataset into `out`."""
            paths = ("--model_path", str(r.model), "--reference_path", str(r.data), "--output_dir", str(out))
            return [*wrapper("render_direct.sh"), *paths, *flags, "--force", *shlex.split(extra_predict)]

        plain = not (r.val / "metrics.json").is_file()
        if plain and (error := run_step(render_direct(r.val), work / "logs" / f"val_{r.name}.txt")):
            return error
        lip_code = read_json(r.model / "cfg_args").get("deform", {}).get("audio_code") == "lips"
        if lip_code and not (r.val_tracked / "metrics.json").is_file():
            cmd = render_direct(r.val_tracked, "--tracked_lips", "--no_lipsync")
            if error := run_step(cmd, work / "logs" / f"val_tracked_{r.name}.txt"):
                return error
        if lip_code and not lip_reach_path(r).is_file():
            try:
                write_lip_reach(r)
            except Exception as e:  # a step's failure is reported, the other runs go on
                return f"lip reach: {type(e).__name__}: {e}"
        if not (r.cross / "report.json").is_file() and (
            error := run_step(cross_cmd(r), work / "logs" / f"cross_{r.name}.txt")
        ):
            return error
        if not silence_stats_path(r).is_file():
            try:
                write_silence_stats(r, silence)
            except Exception as e:  # a step's failure is reported, the other runs go on
                return f"silence statistics: {type(e).__name__}: {e}"
        return None

    errors |= run_pipelined(
        ready, train, evaluate, lambda r: trained(r, args.iterations), args.parallel, args.eval_parallel
    )
    return errors


def main(argv: list[str] | None = None) -> int:
    """Run the A/B (or, with --report_only, only tabulate it); exit code 1 when some step failed (the table
    then lacks those runs)."""
    args = parse_args(argv)
    if min(args.iterations, args.parallel, args.eval_parallel) < 1:
        raise UserError("--iterations, --parallel and --eval_parallel must be at least 1")
    work = args.output_dir.resolve()
    runs = plan([v.resolve() for v in args.videos], [parse_arm(a) for a in args.arm], args.seeds, work)
    silence = work / "silence.wav"
    errors = {} if args.report_only else run_steps(args, runs, work, write_silence(silence))
    scored = {r.name: run_scores(r, silence) for r in runs if evaluated(r)}
    if args.report_only and not scored:
        raise UserError(f"no run under '{work}' is evaluated; pass the --output_dir of an earlier bench.ab")
    rows = table(scored, runs)
    out = (args.out or work / "report.json").resolve()
    report = {
        "iterations": args.iterations,
        "seeds": args.seeds,
        "arms": list(args.arm),
        "table": rows,
        "runs": scored,
        "errors": errors,
    }
    write_report(out, report, args)
    out.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    for label, error in errors.items():
        print(f"FAILED {label}: {error}")
    print(f"report: {out} (and {out.with_suffix('.md').name})")
    return 1 if errors else 0


if __name__ == "__main__":
    run_cli(main)
