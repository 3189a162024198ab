"""Console entry points that `pip install -e .` installs beside the shell wrappers (which stay the documented
interface): each runs a tool's main() on the command line through utils.cli.run_cli."""

from __future__ import annotations

import importlib
import sys


def _launch(module: str, *fixed: str) -> None:
    """Run `module`.main on `fixed` + the command-line arguments and exit with its code."""
    from utils.cli import run_cli

    run_cli(importlib.import_module(module).main, [*fixed, *sys.argv[1:]])


def preprocess() -> None:
    """egstalker-preprocess: as ./preprocess.sh."""
    _launch("data_utils.process")


def train() -> None:
    """egstalker-train: as ./train.sh."""
    _launch("scene.train_cli")


def predict() -> None:
    """egstalker-predict: as ./predict.sh."""
    _launch("predict")


def render_direct() -> None:
    """egstalker-render-direct: as ./render_direct.sh."""
    _launch("predict", "--direct")


def serve() -> None:
    """egstalker-serve: as ./serve.sh."""
    _launch("serve")


def train_many() -> None:
    """egstalker-train-many: as ./train_many.sh."""
    _launch("train_many")
