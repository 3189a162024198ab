"""A dataset's fingerprint (source video, crop, focal length), recorded with a model so that prediction can
tell whether a reference dataset is the one the model was trained on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

FOCAL_RTOL = 1e-3


def _read(path: Path) -> dict[str, Any]:
    """The JSON object at `path`, or {} when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def dataset_fingerprint(root: Path) -> dict[str, Any]:
    """{video, video_bytes, crop, focal} of the dataset at `root` from preprocess.json and
    transforms_train.json; unknown entries are None."""
    root = Path(root)
    pre = _read(root / "preprocess.json")
    focal = _read(root / "transforms_train.json").get("focal_len")
    video = pre.get("video")
    return {
        "video": Path(video).name if video else None,
        "video_bytes": (pre.get("source") or {}).get("bytes"),
        "crop": pre.get("crop"),
        "focal": float(focal) if focal is not None else None,
    }


def fingerprint_differences(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """'name: saved vs current' for each entry known on both sides that differs (empty when they match)."""
    diffs = []
    for key, was in (saved or {}).items():
        now = current.get(key)
        if was is None or now is None:
            continue
        same = math.isclose(was, now, rel_tol=FOCAL_RTOL) if key == "focal" else was == now
        if not same:
            diffs.append(f"{key} {was!r} vs {now!r}")
    return diffs
