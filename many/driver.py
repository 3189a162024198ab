"""The driver of train_many: connects to Ray (a local instance started for the run, or a cluster), sends every
subject through preprocess -> train -> render_direct as Ray tasks, shows progress, survives failures and
Ctrl-C, and writes the final table."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import ray

from many.progress import Board, StageLines, format_duration
from many.stages import STOP_SECONDS, StageOptions, StageResult
from many.subjects import STAGES, Subject, find_videos, is_finished, make_subjects, read_status, write_status
from many.summary import markdown_table, subject_row, write_summary
from many.tasks import Resources, submit
from utils.atomic import atomic_write_json
from utils.cli import UserError
from utils.output_policy import OutputKind, check_output, claim_output
from utils.paths import REPO_ROOT

# bench.train_many_throughput on one H200 (docs/train_many.md): 4 subjects at once give 2.5x the subjects per
# hour of one, in 44 GB; 6 give the same (52.2 against 51.9 per hour) in 70 GB, each subject 1.5x slower.
DEFAULT_PER_GPU = 4
RUN_FOLDER = OutputKind("run", "--out", ("train_many.json",))
TICK_SECONDS = 2.0


@dataclass
class ManyConfig:
    """Every setting of a train_many run (the Python API's argument; ./train_many.sh fills it from flags)."""

    videos: list[Path]
    out: Path
    per_gpu: int = DEFAULT_PER_GPU
    address: str | None = None  # Ray cluster; None: $RAY_ADDRESS, else a local instance for this run
    iterations: int = 10_000
    preprocess_args: list[str] = field(default_factory=list)
    train_args: list[str] = field(default_factory=list)
    render_args: list[str] = field(default_factory=list)
    cpus_per_task: int = 2
    num_cpus: int | None = None  # CPUs of the local instance (default: all)
    progress_every: float = 30.0  # seconds between training lines when the output is not a terminal

    def stage_options(self) -> StageOptions:
        """The settings the steps of every subject share."""
        return StageOptions(
            self.iterations, tuple(self.preprocess_args), tuple(self.train_args), tuple(self.render_args)
        )


def _commit() -> str | None:
    """The repository's commit, or None outside git."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or None


@contextmanager
def ray_session(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Use the Ray connection already made, else connect to `address` (or $RAY_ADDRESS), else start a
    local instance for the with-block; the connection this made is closed at the end."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}, **quiet)
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot start or reach Ray ({address or 'local'}): {first}") from err
    try:
        yield
    finally:
        ray.shutdown()


def ray_error_line(err: ray.exceptions.RayError) -> str:
    """One line for a Ray failure (a worker or node lost, killed for memory, an exception in the task)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


class Scheduler:
    """Sends the subjects through the steps, at most a CPU budget of them preprocessing at once."""

    def __init__(self, subjects: list[Subject], cfg: ManyConfig, resources: Resources, board: Board) -> None:
        self.subjects, self.cfg, self.resources, self.board = subjects, cfg, resources, board
        self.opts = cfg.stage_options()
        self.status = {s.name: read_status(s) for s in subjects}
        self.inflight: dict[Any, tuple[Subject, str, float]] = {}
        self.lines = StageLines()
        cpus = ray.cluster_resources().get("CPU", 0)
        if cfg.cpus_per_task > cpus:
            raise UserError(f"--cpus_per_task {cfg.cpus_per_task} exceeds the {cpus:g} CPUs of the cluster")
        reserved = min(resources.gpu_slots(), len(subjects))  # one CPU for each training that runs
        self.preprocess_limit = max(1, int((cpus - reserved) // cfg.cpus_per_task))

    def _set(self, subject: Subject, **changes: Any) -> None:
        """Update and write the subject's status.json."""
        status = self.status[subject.name]
        status.update(changes)
        write_status(subject, status)

    def _start(self, subject: Subject, stage: str) -> None:
        """Submit one step of `subject`."""
        self._set(subject, status="running", stage=stage, error="")
        self.inflight[submit(stage, subject, self.opts, self.resources)] = (subject, stage, time.monotonic())

    def _finish(self, ref: Any) -> None:
        """Take the result of a finished step: start the next one, or mark the subject finished or failed."""
        subject, stage, started = self.inflight.pop(ref)
        try:
            result: StageResult = ray.get(ref)
        except ray.exceptions.RayError as err:
            elapsed = time.monotonic() - started
            result = StageResult(stage, ok=False, seconds=elapsed, error=ray_error_line(err))
        seconds = dict(self.status[subject.name].get("seconds", {}))
        seconds[stage] = round(seconds.get(stage, 0.0) + result.seconds, 2)
        if not result.ok:
            self._set(subject, status="failed", error=result.error, seconds=seconds)
            self.board.set(subject.name, f"failed at {stage}: {result.error}")
        elif stage == STAGES[-1]:
            self._set(subject, status="finished", seconds=seconds)
            row = subject_row(subject, self.status[subject.name])
            psnr = f", held-out PSNR {row['psnr']:.2f} dB" if row["psnr"] is not None else ""
            self.board.set(subject.name, f"finished in {format_duration(row['seconds'])}{psnr}")
        else:
            self.status[subject.name]["seconds"] = seconds
            self._start(subject, STAGES[STAGES.index(stage) + 1])

    def _refresh(self) -> None:
        """Update the progress text of every running subject."""
        for subject, stage, started in self.inflight.values():
            self.board.set(subject.name, self.lines.line(subject, stage, started, self.cfg.iterations), stage)
        self.board.show()

    def _stop(self, waiting: deque[Subject]) -> None:
        """Cancel the running steps (each stops its tool cleanly) and wait for them; a second Ctrl-C kills."""
        refs = list(self.inflight)
        for ref in refs:
            ray.cancel(ref)
        try:
            ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS + 30)
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref, force=True)
        for subject, stage, started in self.inflight.values():
            seconds = dict(self.status[subject.name].get("seconds", {}))
            seconds[stage] = round(seconds.get(stage, 0.0) + time.monotonic() - started, 2)
            self._set(subject, status="interrupted", seconds=seconds)
            self.board.set(subject.name, "interrupted; a rerun continues")
        for subject in waiting:
            self.board.set(subject.name, "not started")
        self.inflight.clear()

    def run(self) -> None:
        """Run every unfinished subject to its end (finished, failed or interrupted)."""
        waiting: deque[Subject] = deque()
        for subject in self.subjects:
            if is_finished(subject, self.cfg.iterations):
                self.status[subject.name] = {**self.status[subject.name], "status": "skipped"}
                self.board.set(subject.name, "finished earlier; skipped")
            else:
                waiting.append(subject)
        self.board.show()
        try:
            while waiting or self.inflight:
                preprocessing = sum(stage == "preprocess" for _, stage, _ in self.inflight.values())
                for _ in range(min(len(waiting), self.preprocess_limit - preprocessing)):
                    self._start(waiting.popleft(), STAGES[0])
                ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=TICK_SECONDS)
                for ref in ready:
                    self._finish(ref)
                self._refresh()
        except KeyboardInterrupt:
            self._stop(waiting)
            self.board.show()
            raise

    def rows(self) -> list[dict[str, Any]]:
        """The final table, one row per subject in the order given."""
        return [subject_row(s, self.status[s.name]) for s in self.subjects]


def run_info(cfg: ManyConfig, resources: Resources | None) -> dict[str, Any]:
    """The settings of the run as train_many.json and summary.json record them."""
    info = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "videos"}
    info.update(commit=_commit(), started=time.strftime("%Y-%m-%d %H:%M:%S"))
    if resources is not None:
        info["cluster_gpus"] = resources.cluster_gpus
    return info


def run_many(cfg: ManyConfig, stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Run every video of `cfg` through preprocess -> train -> render_direct as Ray tasks; return the rows of
    the final table (also in OUT/summary.json and OUT/summary.md). A KeyboardInterrupt stops the running
    steps cleanly, writes the table and is raised again; a rerun continues where this one stopped."""
    if cfg.per_gpu < 1 or cfg.iterations < 1 or cfg.cpus_per_task < 1:
        raise UserError("--per_gpu, --iterations and --cpus_per_task must be at least 1")
    videos = find_videos(cfg.videos)
    out = Path(cfg.out).absolute()
    check_output(out, True, RUN_FOLDER, videos)
    with claim_output(out):
        check_output(out, True, RUN_FOLDER, videos)
        out.mkdir(exist_ok=True)
        subjects = make_subjects(videos, out)
        atomic_write_json(out / "train_many.json", run_info(cfg, None))
        board = Board([s.name for s in subjects], stream, cfg.progress_every)
        with ray_session(cfg.address, cfg.num_cpus):
            gpus = ray.cluster_resources().get("GPU", 0.0)
            resources = Resources(cfg.per_gpu, cfg.cpus_per_task, gpus)
            scheduler = Scheduler(subjects, cfg, resources, board)
            try:
                scheduler.run()
            finally:
                rows = scheduler.rows()
                write_summary(out, rows, run_info(cfg, resources))
                board.stream.write("\n" + markdown_table(rows) + f"\ntable: {out / 'summary.md'}\n")
                board.stream.flush()
    return rows
