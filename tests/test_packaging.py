"""pyproject.toml: a setuptools build and console entry points that resolve to callables."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from utils import console

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_builds_with_setuptools() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    for name in project["tool"]["setuptools"]["py-modules"]:
        importlib.import_module(name)


def test_every_entry_point_resolves_to_a_callable_that_runs_a_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert {"egstalker-preprocess", "egstalker-train", "egstalker-predict", "egstalker-render-direct"} <= set(
        scripts
    )
    launched = []
    monkeypatch.setattr(console, "_launch", lambda module, *fixed: launched.append((module, fixed)))
    for target in scripts.values():
        module, attr = target.split(":")
        entry = getattr(importlib.import_module(module), attr)
        assert callable(entry)
        entry()
    for module, _ in launched:
        assert callable(importlib.import_module(module).main)
    assert len(launched) == len(scripts)
