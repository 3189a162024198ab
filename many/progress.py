"""Progress of a train_many run: one line per subject (stage, iterations per second, ETA), redrawn in place
on a terminal and printed when it changes (training lines at most every `every` seconds) otherwise."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import TextIO

from many.subjects import Subject

TAIL_BYTES = 4096
RATE_WINDOW = 120.0  # seconds of training progress the iterations per second are measured over


def format_duration(seconds: float | None) -> str:
    """'1h02m', '12m05s' or '42s' ('?' for None)."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def training_progress(subject: Subject) -> tuple[int, float] | None:
    """(iteration, iterations per second) of the last line of the subject's model/metrics.jsonl, or None."""
    path = subject.model / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(f.seek(0, 2) - TAIL_BYTES, 0))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "it_per_s" in record:
            return int(record["iteration"]), float(record["it_per_s"])
    return None


class StageLines:
    """The progress text of running subjects; a training's rate is measured over the last RATE_WINDOW
    seconds of the iterations its metrics.jsonl reached (validation and checkpoints included), so the ETA
    does not jump with the momentary rate of one log line."""

    def __init__(self) -> None:
        self.samples: dict[str, deque[tuple[float, int]]] = {}

    def _rate(self, name: str, step: int, logged_rate: float) -> float:
        """Iterations per second of subject `name` at `step`, the logged rate until a window is seen."""
        now = time.monotonic()
        samples = self.samples.setdefault(name, deque())
        if not samples or samples[-1][1] != step:
            samples.append((now, step))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        (t0, s0), (t1, s1) = samples[0], samples[-1]
        return (s1 - s0) / (t1 - t0) if s1 > s0 and t1 > t0 else logged_rate

    def line(self, subject: Subject, stage: str, started: float, iterations: int) -> str:
        """The progress text of `subject` in `stage` since `started` (time.monotonic)."""
        progress = training_progress(subject) if stage == "train" else None
        if progress is None:
            self.samples.pop(subject.name, None)
            return f"{stage}, {format_duration(time.monotonic() - started)}"
        step, logged = progress
        rate = self._rate(subject.name, step, logged)
        eta = (iterations - step) / rate if rate > 0 else None
        return f"train {step}/{iterations}, {rate:.1f} it/s, ETA {format_duration(eta)}"


class Board:
    """The progress lines of all subjects, written to `stream`."""

    def __init__(self, names: list[str], stream: TextIO | None = None, every: float = 30.0) -> None:
        self.names = names
        self.stream = stream or sys.stdout
        self.every = every
        self.width = max((len(n) for n in names), default=0)
        self.lines = dict.fromkeys(names, "waiting")
        self.keys = dict.fromkeys(names, "waiting")
        self.printed: dict[str, tuple[str, str, float]] = {}
        self.tty = self.stream.isatty()
        self.drawn = 0

    def set(self, name: str, text: str, key: str | None = None) -> None:
        """Change the progress text of subject `name`; `key` (default: the text) names its state, so that a
        log gets a line at once when the key changes and at most every `every` seconds while it does not."""
        self.lines[name], self.keys[name] = text, text if key is None else key

    def _row(self, i: int, name: str) -> str:
        """One output row: '[ 3/12] alice  train 400/10000, ...'."""
        n = len(self.names)
        return f"[{i + 1:>{len(str(n))}}/{n}] {name:<{self.width}}  {self.lines[name]}"

    def show(self) -> None:
        """Redraw every line (terminal) or print the lines that changed (a log)."""
        if self.tty:
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            rows = [f"{self._row(i, n)}\x1b[K" for i, n in enumerate(self.names)]
            self.stream.write(up + "\n".join(rows) + "\n")
            self.drawn = len(rows)
        else:
            now = time.monotonic()
            for i, name in enumerate(self.names):
                text, key = self.lines[name], self.keys[name]
                last_text, last_key, last_time = self.printed.get(name, ("", "", -1e9))
                if key != last_key or (text != last_text and now - last_time >= self.every):
                    self.stream.write(self._row(i, name) + "\n")
                    self.printed[name] = (text, key, now)
        self.stream.flush()
