"""The head trackers by name: "mediapipe" (landmark fit, data_utils.tracking) or "bfm" (data_utils.bfm)."""

from __future__ import annotations

from data_utils.bfm.tracker import BFMTracker
from data_utils.tracker_config import BFMFitConfig, LandmarkFitConfig
from data_utils.tracking import LandmarkFitTracker, Tracker
from utils.cli import UserError


def get_tracker(
    name: str, tracking: LandmarkFitConfig | None = None, bfm: BFMFitConfig | None = None
) -> Tracker:
    """Return the tracker called `name`: "mediapipe" (landmark fit, settings `tracking`) or "bfm" (needs
    ./download_bfm.sh, settings `bfm`); None = the defaults."""
    if name == "mediapipe":
        return LandmarkFitTracker(tracking)
    if name == "bfm":
        return BFMTracker(bfm)
    raise UserError(f"unknown tracker '{name}'; choose 'mediapipe' or 'bfm'")
