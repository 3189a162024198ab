"""The preprocessing configuration tree: every setting of preprocess.sh (one flag per leaf field,
utils.config_cli), the trackers' included, saved whole in preprocess.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_utils.audio_features import available_extractors
from data_utils.tracker_config import BFMFitConfig, LandmarkFitConfig
from utils.config_cli import option, section


@dataclass(frozen=True)
class PreprocessConfig:
    """Every preprocessing setting (the flags of preprocess.sh, one field each)."""

    video: Path = option(
        Path(),
        "input video (any ffmpeg format), at least 2 s (a minute or two is best), one face",
        positional=True,
        metavar="VIDEO",
    )
    out_dir: Path = option(
        Path(), "dataset folder to create, e.g. data/<subject>", positional=True, metavar="OUT_DIR"
    )
    fps: float = option(25.0, "frame rate of the dataset", default_text="25")
    size: int = option(512, "side of the square frames in pixels")
    tracker: str = option(
        "mediapipe", "head tracker: mediapipe (landmark fit) or bfm (after ./download_bfm.sh)", metavar="NAME"
    )
    audio: Path | None = option(None, "audio to use instead of the video's own track", metavar="FILE")
    audio_extractor: str = option(
        "visemes",
        f"audio features: {', '.join(available_extractors())}",
        metavar="NAME",
        default_text="visemes: pocketsphinx's phones as 12 mouth shapes and the loudness, needs no download",
    )
    extractor_model: Path | None = option(
        None,
        "model folder or HuggingFace hub name (hubert, wav2vec2; e.g. facebook/hubert-base-ls960, fetched "
        "once, online) or file (deepspeech) for extractors that need one",
        metavar="PATH",
    )
    align_audio: bool = option(
        False,
        "shift the audio features by the clip's audio-video offset (the quality report's lip-sync offset, "
        "when judged), so that each training frame's mouth meets its own sound; experimental: not yet shown "
        "to help the renders",
    )
    max_gap_frames: int = option(10, "interpolate runs of up to N frames without a face", metavar="N")
    force: bool = option(False, "replace OUT_DIR if it already exists")
    preview: bool = option(
        True,
        "write preview.jpg: frame, landmarks, masks and crop side by side",
        default_text="on",
        off_help="do not write preview.jpg",
    )
    tracking: LandmarkFitConfig = section(
        LandmarkFitConfig, "head tracking (--tracker mediapipe)", prefix="track_"
    )
    bfm: BFMFitConfig = section(BFMFitConfig, "BFM head tracking (--tracker bfm)", prefix="bfm_")


def saved_settings(cfg: PreprocessConfig) -> dict[str, Any]:
    """The whole tree as preprocess.json's "settings": dataclasses.asdict with paths as strings."""

    def plain(value: Any) -> Any:
        """`value` with every Path inside it a string."""
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return str(value) if isinstance(value, Path) else value

    return plain(dataclasses.asdict(cfg))
