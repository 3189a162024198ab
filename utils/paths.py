"""Where the project's files live: the repository root and the cache of optional downloaded weights."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ENV = "EGSTALKER_CACHE"
DEFAULT_CACHE = Path("~/.cache/egstalker")


def cache_dir(name: str) -> Path:
    """The folder of one kind of optional weights, e.g. 'lpips': $EGSTALKER_CACHE/<name> (default
    ~/.cache/egstalker/<name>)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / name
