"""What every bench JSON report carries besides its figures: commit, machine, versions, arguments, time.

    record = with_metadata(report, args)   # or write_report(path, report, args)

adds {"commit", "dirty", "machine", "versions", "arguments", "created"} to a report (the tool's own keys win
where a name is taken), so that a figure in docs/results.md can name the code and the machine it came from.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from utils.atomic import atomic_write_json
from utils.paths import REPO_ROOT
from utils.versions import package_version

METADATA_KEYS = ("commit", "dirty", "machine", "versions", "arguments", "created")
VERSION_PACKAGES = ("torch", "numpy", "gsplat", "mediapipe", "pocketsphinx")


def _command_output(cmd: list[str]) -> str | None:
    """Stripped stdout of `cmd` run in the repository, or None if it cannot run or fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit() -> str | None:
    """The repository's HEAD commit (full hash), or None outside a git checkout."""
    return _command_output(["git", "rev-parse", "HEAD"])


def git_dirty() -> bool | None:
    """Whether tracked files differ from HEAD (the figures may not be the commit's), None when unknown."""
    status = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return None if status is None else bool(status)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, else platform's, else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def gpu_names() -> list[str]:
    """Names of the visible GPUs: torch's when CUDA is up, else nvidia-smi's, [] when there is none."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if shutil.which("nvidia-smi") is None:
        return []
    names = _command_output(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return names.splitlines() if names else []


def machine() -> dict:
    """CPU model, core count, GPU names, host name and OS of this machine."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpus": gpu_names(),
        "host": platform.node(),
        "platform": platform.platform(),
    }


def versions() -> dict:
    """Python and the library versions the figures depend on (None for a package that is not installed)."""
    found = {
        "python": platform.python_version(),
        **{name: package_version(name) for name in VERSION_PACKAGES},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        found["cuda"] = torch.version.cuda
    return found


def _plain(value: Any) -> Any:
    """An argument value as JSON has it: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def arguments(args: argparse.Namespace | dict | None) -> dict:
    """The parsed command-line arguments as a JSON-ready dict, plus the command line as typed."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    return {"argv": sys.argv[1:], **{k: _plain(v) for k, v in values.items()}}


def metadata(args: argparse.Namespace | dict | None = None) -> dict:
    """The metadata block: commit, dirty, machine, versions, arguments and created (UTC, ISO 8601)."""
    return {
        "commit": git_commit(),
        "dirty": git_dirty(),
        "machine": machine(),
        "versions": versions(),
        "arguments": arguments(args),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def with_metadata(report: dict, args: argparse.Namespace | dict | None = None) -> dict:
    """`report` with the metadata block added in front (keys the report already has are kept)."""
    return {**metadata(args), **report}


def write_report(path: Path, report: dict, args: argparse.Namespace | dict | None = None) -> dict:
    """Write `report` with its metadata atomically as JSON to `path`; return what was written."""
    record = with_metadata(report, args)
    atomic_write_json(path, record)
    return record
