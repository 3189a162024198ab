"""The three steps of one subject as the single-subject tools run them: preprocess.sh, train.sh and
render_direct.sh, each a subprocess of scripts/launch.py whose output is appended to the subject's log.txt.

What each step does is decided from what is on disk when it starts, so a rerun (or a retry on another
node) continues: a complete dataset, model or render is kept, a model with a checkpoint is resumed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from many.subjects import Subject, rendered_iteration, trained_iterations
from scene.checkpoint import list_checkpoints
from utils.paths import REPO_ROOT

STOP_SECONDS = 120.0  # how long a stopped step may take to save its checkpoint and clean up
POLL_SECONDS = 0.5
MODULES = {"preprocess": ("data_utils.process",), "train": ("train",), "render": ("predict", "--direct")}


@dataclass(frozen=True)
class StageOptions:
    """The pipeline settings every subject shares: training length and extra flags of each tool."""

    iterations: int = 10_000
    preprocess_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()
    render_args: tuple[str, ...] = ()


@dataclass
class StageResult:
    """What one step of one subject came to."""

    stage: str
    ok: bool
    skipped: bool = False
    seconds: float = 0.0
    error: str = ""


def preprocess_args(subject: Subject, opts: StageOptions) -> list[str] | None:
    """preprocess.sh arguments, or None when the dataset is complete (its preprocess.json is written last)."""
    if (subject.data / "preprocess.json").is_file():
        return None
    return [str(subject.video), str(subject.data), *opts.preprocess_args]


def train_args(subject: Subject, opts: StageOptions) -> list[str] | None:
    """train.sh arguments: None when trained far enough, --resume from a checkpoint, --force over a run
    stopped before its first checkpoint, else a fresh run."""
    if trained_iterations(subject) >= opts.iterations:
        return None
    base = ["-s", str(subject.data), "--model_path", str(subject.model), "--iterations", str(opts.iterations)]
    if list_checkpoints(subject.model):
        return [*base, "--resume", *opts.train_args]
    if subject.model.exists():
        return [*base, "--force", *opts.train_args]
    return [*base, *opts.train_args]


def render_args(subject: Subject, opts: StageOptions) -> list[str] | None:
    """render_direct.sh arguments, or None when results/ was rendered from the final model."""
    rendered = rendered_iteration(subject)
    if rendered and rendered >= trained_iterations(subject):
        return None
    base = ["--model_path", str(subject.model), "--reference_path", str(subject.data)]
    base += ["--output_dir", str(subject.results), *opts.render_args]
    return [*base, "--force"] if subject.results.exists() else base


PLANS = {"preprocess": preprocess_args, "train": train_args, "render": render_args}


def command(stage: str, args: list[str]) -> list[str]:
    """The command line of `stage` with `args`, as its shell wrapper runs it."""
    return [sys.executable, str(REPO_ROOT / "scripts" / "launch.py"), *MODULES[stage], *args]


def step_env() -> dict[str, str]:
    """The environment of a step: the repository on PYTHONPATH, unbuffered output, a quiet progress bar."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TQDM_MININTERVAL", "30")  # a bar line every 30 s in log.txt, not every 0.1 s
    return env


def _child_setup() -> None:
    """In the child before exec: default Ctrl-C and SIGTERM handling (Ray workers ignore SIGINT, which a
    child would inherit) and, on Linux, SIGTERM when the Ray worker that started it dies."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(proc: subprocess.Popen) -> None:
    """Send SIGTERM (train.sh saves a checkpoint, the others remove their temporaries, as on Ctrl-C) and
    wait for the process to end, killing it after STOP_SECONDS; further interrupts meanwhile are ignored."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            proc.wait(timeout=POLL_SECONDS)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def run_logged(cmd: list[str], log: Path) -> int:
    """Run `cmd` from the repository root with its output appended to `log`; return its exit code.

    A KeyboardInterrupt meanwhile (Ctrl-C, or ray.cancel of the task) stops the process cleanly (see stop)
    and is raised again."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=step_env(), stdout=out, stderr=subprocess.STDOUT, preexec_fn=_child_setup
        )
        try:
            while True:
                try:
                    return proc.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    continue
        except KeyboardInterrupt:
            stop(proc)
            raise


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")
ERROR_CHARS = 200  # the longest one-line reason kept from an exception


def error_line(text: str, code: int) -> str:
    """The one-line reason a step failed: its 'error: ...' line, else the exception that ended its
    traceback (cut at ERROR_CHARS: CUDA's out-of-memory message lists every process), else how it exited."""
    lines = [x.strip() for x in re.split(r"[\r\n]+", text) if x.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1].rstrip() + "…"
    if code < 0:
        name = signal.Signals(-code).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exited with code {code}; see the log"


def run_step(stage: str, subject: Subject, opts: StageOptions) -> StageResult:
    """Run one step of one subject (or skip it when its output is complete) -> what it came to."""
    args = PLANS[stage](subject, opts)
    if args is None:
        return StageResult(stage, ok=True, skipped=True)
    start = time.perf_counter()
    offset = subject.log.stat().st_size if subject.log.exists() else 0
    code = run_logged(command(stage, args), subject.log)
    seconds = round(time.perf_counter() - start, 2)
    if code == 0:
        return StageResult(stage, ok=True, seconds=seconds)
    with open(subject.log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return StageResult(stage, ok=False, seconds=seconds, error=error_line(text, code))
