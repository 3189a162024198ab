"""The preprocess.sh command line: flags generated from the PreprocessConfig tree and their checks."""

from __future__ import annotations

import argparse
import dataclasses

from data_utils.preprocess_config import PreprocessConfig
from data_utils.tracker_config import FitConfig
from utils.cli import ArgumentParser, UserError
from utils.config_cli import add_flags, with_values

MIN_SIZE = 64
POSITIVE = ("focal_init", "huber_px")  # tracker settings that must be above 0; the other floats may be 0


def build_parser() -> argparse.ArgumentParser:
    """The preprocess.sh command line: one flag per PreprocessConfig setting (defaults and help from it)."""
    p = ArgumentParser(
        prog="preprocess.sh",
        description="Turn a talking-head video into a training dataset: square face crops at a constant "
        "frame rate, landmarks, parsing masks, background, torso images, head poses, audio features and a "
        "quality report. Nothing is downloaded.",
        epilog="example: ./preprocess.sh my_video.mp4 data/me --fps 25 --size 512",
        argument_default=argparse.SUPPRESS,
    )
    add_flags(p, PreprocessConfig, "video and dataset")
    return p


def parse_args(argv: list[str] | None) -> PreprocessConfig:
    """The PreprocessConfig of a preprocess.sh command line; UserError for a value out of range."""
    cfg = with_values(PreprocessConfig(), vars(build_parser().parse_args(argv)))
    if cfg.fps <= 0 or cfg.size < MIN_SIZE or cfg.max_gap_frames < 0:
        raise UserError(f"--fps must be > 0, --size >= {MIN_SIZE} and --max_gap_frames >= 0; see --help")
    for prefix, fit in (("track_", cfg.tracking), ("bfm_", cfg.bfm)):
        check_fit(prefix, fit)
    return cfg


def check_fit(prefix: str, fit: FitConfig) -> None:
    """UserError naming the first tracker setting of `fit` (flags `prefix`...) that is out of range."""
    for name, value in dataclasses.asdict(fit).items():
        if name == "steps":
            ok, need = value >= 1, "at least 1"
        elif name in POSITIVE:
            ok, need = value > 0, "above 0"
        elif name == "rigid_share":
            ok, need = 0 <= value <= 1, "between 0 and 1"
        else:
            ok, need = value >= 0, "0 or more"
        if not ok:
            raise UserError(f"--{prefix}{name} must be {need}, got {value}")
