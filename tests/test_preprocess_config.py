"""preprocess.sh's config tree: one flag per setting, the old flags and defaults, range checks, and tracker
flags that reach the trackers and preprocess.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_utils import preprocess_cli
from data_utils.bfm.install import install
from data_utils.preprocess_config import PreprocessConfig, saved_settings
from data_utils.process import main
from data_utils.tracker_config import BFMFitConfig
from data_utils.trackers import get_tracker
from data_utils.tracking import LandmarkFitTracker
from tests.bfm_factory import make_tiny_bfm
from utils.cli import UserError
from utils.config_cli import leaves

OLD_DEFAULTS = {
    "fps": 25.0,
    "size": 512,
    "tracker": "mediapipe",
    "audio": None,
    "audio_extractor": "visemes",
    "extractor_model": None,
    "max_gap_frames": 10,
    "force": False,
    "preview": True,
}


def test_every_config_setting_has_exactly_one_flag_and_every_flag_a_setting() -> None:
    parser = preprocess_cli.build_parser()
    dests = [a.dest for a in parser._actions if a.dest != "help"]
    settings = [leaf.name for leaf in leaves(PreprocessConfig, flags_only=True)]
    assert len(settings) == len(set(settings)) == len(list(leaves(PreprocessConfig)))  # none internal
    assert sorted(set(dests)) == sorted(settings)
    assert all(dests.count(name) == 1 for name in settings if name != "preview")  # --preview/--no_preview
    assert {"track_steps", "track_num_expr", "track_w_smooth", "bfm_steps", "bfm_w_id"} <= set(settings)


def test_old_flags_and_defaults_are_kept() -> None:
    cfg = preprocess_cli.parse_args(["v.mp4", "data/x"])
    assert cfg == PreprocessConfig(video=Path("v.mp4"), out_dir=Path("data/x"))
    assert {k: getattr(cfg, k) for k in OLD_DEFAULTS} == OLD_DEFAULTS
    assert cfg.tracking == LandmarkFitTracker().cfg and cfg.tracking.steps == 300 and cfg.bfm.steps == 800
    argv = ["v.mp4", "o", "--fps", "30", "--size", "256", "--tracker", "bfm", "--audio", "a.wav"]
    argv += ["--audio_extractor", "hubert", "--extractor_model", "m", "--max_gap_frames", "3", "--force"]
    cfg = preprocess_cli.parse_args([*argv, "--no_preview"])
    assert (cfg.fps, cfg.size, cfg.tracker, cfg.audio, cfg.extractor_model) == (
        30.0,
        256,
        "bfm",
        Path("a.wav"),
        Path("m"),
    )
    assert cfg.audio_extractor == "hubert" and cfg.max_gap_frames == 3 and cfg.force and not cfg.preview


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--track_steps", "0"], "--track_steps must be at least 1, got 0"),
        (["--bfm_rigid_share", "1.5"], "--bfm_rigid_share must be between 0 and 1"),
        (["--track_huber_px", "0"], "--track_huber_px must be above 0"),
        (["--track_w_expr", "-1"], "--track_w_expr must be 0 or more"),
        (["--size", "32"], "--size >= 64"),
    ],
)
def test_out_of_range_settings_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        preprocess_cli.parse_args(["v.mp4", "o", *flags])


def test_tracker_flags_reach_the_fit_and_preprocess_json(sample_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "rigid"
    argv = [str(sample_video), str(out), "--size", "64", "--no_preview", "--track_num_expr", "0"]
    argv += ["--track_steps", "40"]
    assert main(argv) == 0
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["settings"] == saved_settings(preprocess_cli.parse_args(argv))  # the whole tree
    assert meta["settings"]["tracking"]["num_expr"] == 0 and meta["settings"]["tracking"]["steps"] == 40
    track = torch.load(out / "track_params.pt")
    assert track["expr_basis"].shape[0] == 0 and track["expr_coeffs"].shape == (meta["frames"], 0)
    torch.testing.assert_close(track["reproj_err"], track["reproj_err_rigid"], equal_nan=True)


def test_bfm_flags_reach_the_bfm_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = make_tiny_bfm(tmp_path / "src" / "BFM")
    install(tiny.folder, tmp_path / "bfm")
    monkeypatch.setenv("EGSTALKER_CACHE", str(tmp_path))
    cfg = preprocess_cli.parse_args(
        ["v", "o", "--tracker", "bfm", "--bfm_steps", "30", "--bfm_rigid_share", "1"]
    )
    tracker = get_tracker(cfg.tracker, cfg.tracking, cfg.bfm)
    assert tracker.cfg == cfg.bfm
    mesh = tracker.model.vertices(torch.zeros(1, 80), torch.zeros(1, 64), torch.as_tensor(tiny.mp_vertices))
    pts = mesh[0].double().numpy() + np.array([0.0, 0.0, 5.0])
    frames = np.stack([pts + np.array([0.05 * np.sin(i / 3), 0.0, 0.0]) for i in range(12)])
    lms = 600 * frames[..., :2] / frames[..., 2:3] + 256
    result = tracker.fit(lms, None, 512, 25.0, progress=False)
    assert not result.id_coeff.any() and not result.exp_coeff.any()  # only the rigid stage ran
    moved = get_tracker("bfm", bfm=BFMFitConfig(steps=30)).fit(lms, None, 512, 25.0, progress=False)
    assert moved.exp_coeff.any()
