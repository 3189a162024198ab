"""The subjects of a train_many run: which videos, their folder names, and what each folder holds on disk.

Each subject lives in OUT/<name>/: data/ (preprocess.sh), model/ (train.sh), results/ (render_direct.sh),
log.txt (every stage's output) and status.json (the driver's record of the last run)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.atomic import atomic_write_json
from utils.cli import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
STAGES = ("preprocess", "train", "render")


@dataclass(frozen=True)
class Subject:
    """One video and the folder of everything made from it."""

    name: str
    video: Path
    folder: Path

    @property
    def data(self) -> Path:
        """The dataset folder (preprocess.sh OUT_DIR)."""
        return self.folder / "data"

    @property
    def model(self) -> Path:
        """The model folder (train.sh --model_path)."""
        return self.folder / "model"

    @property
    def results(self) -> Path:
        """The held-out render folder (render_direct.sh --output_dir)."""
        return self.folder / "results"

    @property
    def log(self) -> Path:
        """The log of every stage's output."""
        return self.folder / "log.txt"

    @property
    def status_path(self) -> Path:
        """The driver's record of the subject (status.json)."""
        return self.folder / "status.json"


def find_videos(paths: list[Path]) -> list[Path]:
    """The video files named by `paths` (a folder stands for the videos directly inside it), absolute and
    without repeats, in the order given; UserError for a path that does not exist or a folder with none."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).absolute()
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not inside:
                raise UserError(f"folder '{path}' holds no video ({', '.join(VIDEO_SUFFIXES)})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"video '{path}' does not exist")
    return list(dict.fromkeys(found))


def _clean(stem: str) -> str:
    """A folder-safe subject name from a file stem."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "subject"


def subject_names(videos: list[Path]) -> list[str]:
    """One folder name per video: its cleaned stem, plus a short hash of its path where stems collide."""
    stems = [_clean(v.stem) for v in videos]
    counts = Counter(stems)
    return [
        s if counts[s] == 1 else f"{s}-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}"
        for s, v in zip(stems, videos, strict=True)
    ]


def make_subjects(videos: list[Path], out: Path) -> list[Subject]:
    """The subjects of `videos` under `out`; UserError when a subject folder was made from another video."""
    subjects = [Subject(n, v, Path(out) / n) for n, v in zip(subject_names(videos), videos, strict=True)]
    for subject in subjects:
        recorded = read_status(subject).get("video")
        if recorded is not None and Path(recorded) != subject.video:
            raise UserError(
                f"'{subject.folder}' was made from '{recorded}', not '{subject.video}'; "
                "rename the video or choose another --out"
            )
    return subjects


def read_json_file(path: Path) -> dict[str, Any]:
    """The JSON object in `path`, or {} when it is missing or unreadable."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def read_status(subject: Subject) -> dict[str, Any]:
    """The subject's status.json, or {} before its first run."""
    return read_json_file(subject.status_path)


def write_status(subject: Subject, status: dict[str, Any]) -> None:
    """Write the subject's status.json atomically."""
    atomic_write_json(subject.status_path, {"subject": subject.name, "video": str(subject.video), **status})


def trained_iterations(subject: Subject) -> int:
    """Iterations of the finished training (train_summary.json), 0 when there is none."""
    return int(read_json_file(subject.model / "train_summary.json").get("iterations", 0))


def rendered_iteration(subject: Subject) -> int:
    """Iteration of the model that results/ was rendered from, 0 when there are no results."""
    return int(read_json_file(subject.results / "summary.json").get("iteration", 0))


def is_finished(subject: Subject, iterations: int) -> bool:
    """True when the subject's held-out render comes from a model trained for at least `iterations`."""
    return rendered_iteration(subject) >= iterations and trained_iterations(subject) >= iterations


def finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number, else None (NaN scores of undetected faces)."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def result_scores(subject: Subject) -> dict[str, float | int | str | None]:
    """Gaussians, held-out PSNR, mouth LMD and lip-sync score of the subject's results/summary.json; the score
    only when it was judged, else None with the scorer's reason in "lipsync_note" (e.g. too short)."""
    summary = read_json_file(subject.results / "summary.json")
    metrics, lipsync = summary.get("metrics", {}), summary.get("lipsync", {})
    judged = bool(lipsync.get("judged"))
    return {
        "gaussians": summary.get("num_gaussians"),
        "psnr": finite(metrics.get("psnr")),
        "lmd_mouth": finite(metrics.get("lmd_mouth")),
        "lipsync": finite(lipsync.get("score")) if judged else None,
        "lipsync_note": "" if judged or not lipsync else str(lipsync.get("reason", "")),
    }
