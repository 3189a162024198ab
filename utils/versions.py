"""Installed versions of the libraries that shape a result, for the reports and datasets that record them."""

from __future__ import annotations

import importlib.metadata


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
