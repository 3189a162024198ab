"""Parsing masks, background plate, torso images and the quality report, on synthetic and sample frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data_utils.background import estimate_background, sample_indices
from data_utils.landmark_indices import FACE_OVAL, NOSE_TIP
from data_utils.parsing import (
    BACKGROUND,
    COLOURS,
    HEAD,
    NECK,
    PersonSegmenter,
    PlateRefiner,
    label_regions,
    labels_to_rgb,
)
from data_utils.quality import (
    SHORT_CLIP_SECONDS,
    format_report,
    landmark_jitter,
    pose_coverage,
    quality_report,
    save_preview,
)
from data_utils.torso import torso_rgba
from data_utils.video_io import read_frames

SIZE = 128


def synthetic_face(cx: float = 64.0, cy: float = 50.0, rx: float = 18.0, ry: float = 24.0):
    """Landmarks [478,2] with the face oval on an ellipse, plus a person mask [H,W]: head, neck, torso."""
    lms = np.tile([cx, cy], (478, 1)).astype(np.float64)
    angles = np.linspace(
        -np.pi / 2, 1.5 * np.pi, len(FACE_OVAL), endpoint=False
    )  # starts at the top, clockwise
    lms[FACE_OVAL] = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)
    person = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(person, (int(cx), int(cy - 6)), (int(rx + 4), int(ry + 8)), 0, 0, 360, 1, -1)  # head and hair
    cv2.rectangle(person, (int(cx - 8), int(cy + ry - 2)), (int(cx + 8), int(cy + ry + 14)), 1, -1)  # neck
    cv2.rectangle(person, (int(cx - 50), int(cy + ry + 12)), (int(cx + 50), SIZE - 1), 1, -1)  # shoulders
    return lms, person.astype(bool)


def test_label_regions_places_head_neck_torso_background() -> None:
    lms, person = synthetic_face()
    labels = label_regions(person, lms)
    assert labels[50, 64] == 1, "face centre is head"
    assert labels[50 - 24 - 10, 64] == 1, "hair above the face oval is head"
    assert labels[50 + 24 + 5, 64] == 2, "just below the chin is neck"
    assert labels[SIZE - 3, 20] == 3, "shoulder corner is torso"
    assert labels[5, 5] == 0 and labels[SIZE - 3, 2] == 0, "outside the person is background"
    assert not (labels[~person] > 1).any(), "neck and torso only on person pixels"


def test_face_oval_is_head_even_where_segmentation_misses_it() -> None:
    lms, _ = synthetic_face()
    labels = label_regions(np.zeros((SIZE, SIZE), bool), lms)
    assert labels[50, 64] == 1 and labels[50, 50] == 1
    assert set(np.unique(labels)) == {0, 1}


def test_labels_to_rgb_uses_only_the_four_colour_codes() -> None:
    lms, person = synthetic_face()
    rgb = labels_to_rgb(label_regions(person, lms))
    assert rgb.dtype == np.uint8 and rgb.shape == (SIZE, SIZE, 3)
    colours = {tuple(c) for c in rgb.reshape(-1, 3)}
    assert colours == set(COLOURS)
    assert (rgb != np.array(BACKGROUND, np.uint8)).any(axis=-1).sum() >= person.sum()


def test_parsing_on_sample_video(sample_video: Path) -> None:
    from data_utils.face_mesh import detect_landmarks

    frame = np.array(next(iter(read_frames(sample_video, 25))))
    lms = detect_landmarks(frame)
    assert lms is not None, "the sample frame shows a face"
    with PersonSegmenter() as seg:
        parsing = labels_to_rgb(label_regions(seg.person_mask(frame), lms))
    assert parsing.shape == frame.shape and parsing.dtype == np.uint8
    assert {tuple(c) for c in parsing.reshape(-1, 3)} <= set(COLOURS)
    nx, ny = np.round(lms[NOSE_TIP, :2]).astype(int)
    assert tuple(parsing[ny, nx]) == HEAD


def test_torso_rgba_keeps_torso_and_neck_only() -> None:
    lms, person = synthetic_face()
    parsing = labels_to_rgb(label_regions(person, lms))
    rgb = np.full((SIZE, SIZE, 3), 200, np.uint8)
    rgba = torso_rgba(rgb, parsing)
    assert rgba.shape == (SIZE, SIZE, 4) and rgba.dtype == np.uint8
    head = np.all(parsing == HEAD, axis=-1)
    assert (rgba[..., 3][head] == 0).all(), "head fully transparent"
    assert rgba[SIZE - 5, 64, 3] == 255 and rgba[SIZE - 5, 64, 0] == 200, "torso interior opaque, colour kept"
    neck = np.argwhere(np.all(parsing == NECK, axis=-1))
    y, x = neck[len(neck) // 2]
    assert rgba[y, x, 3] > 0
    assert rgba[5, 5, 3] == 0 and (rgba[5, 5, :3] == 0).all(), "background transparent, colour zeroed"


def _moving_square_clip(
    num: int = 12, size: int = 64
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """A gradient background with a dark square moving across it; returns (plate, frames, person masks)."""
    yy, xx = np.mgrid[0:size, 0:size]
    plate = np.stack([xx * 4 % 256, yy * 4 % 256, (xx + yy) * 2 % 256], axis=-1).astype(np.uint8)
    frames, masks = [], []
    for i in range(num):
        mask = np.zeros((size, size), bool)
        x0 = 2 + i * 4
        mask[20:44, x0 : x0 + 12] = True
        frame = plate.copy()
        frame[mask] = 10
        frames.append(frame)
        masks.append(mask)
    return plate, frames, masks


def test_estimate_background_recovers_the_plate() -> None:
    plate, frames, masks = _moving_square_clip()
    bc = estimate_background(frames, masks, dilate_frac=0.02)
    assert bc.shape == plate.shape and bc.dtype == np.uint8
    assert np.abs(bc.astype(int) - plate).max() <= 1, "every pixel is uncovered in some frame"


def test_estimate_background_inpaints_never_seen_pixels_and_reads_folders(tmp_path: Path) -> None:
    plate, frames, _ = _moving_square_clip()
    masks = [np.zeros(plate.shape[:2], bool) for _ in frames]
    for m in masks:
        m[24:40, 24:40] = True  # a static person: this square is never uncovered
    for i, f in enumerate(frames):
        cv2.imwrite(
            str(tmp_path / f"{i}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100]
        )
    bc = estimate_background(tmp_path, masks, max_frames=5)
    assert bc.shape == plate.shape
    assert (bc[30, 30] != 10).any(), "the hole is filled from its surroundings, not the person colour"
    assert np.abs(bc[2:10, 2:10].astype(int) - plate[2:10, 2:10]).mean() < 4


def test_sample_indices_spread_over_the_clip() -> None:
    idx = sample_indices(1000, 100)
    assert len(idx) == 100 and idx[0] == 0 and idx[-1] == 999 and (np.diff(idx) > 0).all()
    assert sample_indices(5, 100).tolist() == [0, 1, 2, 3, 4]


def _report(**over) -> dict:
    t = 50
    lms = np.tile(np.linspace(0, 100, 478)[:, None], (1, 2))[None] + np.arange(t)[:, None, None] * 0.5
    args = {
        "face_counts": np.ones(t, int),
        "filled": np.zeros(t, bool),
        "raw_lms2d": lms,
        "lms2d": lms,
        "reproj_err": np.full(t, 0.8),
        "euler": np.zeros((t, 3)),
        "face_frac": 0.4,
        "upscale": 1.0,
        "luma": np.full(t, 120.0),
        "sharpness": np.full(t, 300.0),
        "rot": np.tile(np.eye(3), (t, 1, 1)),
        "num_val": 5,
        "fps": 1.0,
        "audio_seconds": float(t),
    }
    args.update(over)
    return quality_report(**args)


def test_quality_report_clean_clip_has_no_warnings() -> None:
    rep = _report()
    assert rep["frames_with_face"] == 1.0 and rep["warnings"] == []
    assert rep["landmark_jitter_px"] == pytest.approx(0.0, abs=1e-9), "constant velocity has no jitter"
    assert rep["reproj_err_px"] == pytest.approx(0.8)
    text = format_report(rep)
    assert "frames with a face" in text and "no warnings" in text
    assert "50.0 s (50 frames, 5 held out), audio 50.0 s" in text


def test_quality_report_warns_about_each_problem() -> None:
    t = 50
    counts = np.ones(t, int)
    counts[10:13] = 0
    filled = counts == 0
    euler = np.zeros((t, 3))
    euler[:5, 1] = np.radians(50)
    rep = _report(
        face_counts=counts,
        filled=filled,
        euler=euler,
        face_frac=0.08,
        upscale=3.0,
        luma=np.full(t, 20.0),
        sharpness=np.full(t, 3.0),
    )
    text = " | ".join(rep["warnings"])
    for needle in ("small", "upscaled", "profile", "dark", "blurred", "interpolated"):
        assert needle in text, needle
    assert rep["frames_with_face"] == pytest.approx(47 / 50) and rep["longest_gap_frames"] == 3


def test_quality_report_warns_about_short_clips_and_audio_of_another_length() -> None:
    short = " | ".join(_report(fps=25.0, audio_seconds=2.0)["warnings"])
    assert "the clip lasts 2.0 s" in short and "1-2 minutes" in short
    assert "audio lasts" not in short
    long_clip = _report(fps=50 / SHORT_CLIP_SECONDS, audio_seconds=SHORT_CLIP_SECONDS)
    assert long_clip["seconds"] == pytest.approx(SHORT_CLIP_SECONDS) and long_clip["warnings"] == []
    mismatch = " | ".join(_report(audio_seconds=40.0)["warnings"])
    assert "audio lasts 40.0 s, the video 50.0 s" in mismatch


def test_landmark_jitter_measures_second_differences() -> None:
    lms = np.zeros((10, 478, 2))
    lms[5] += 1.0  # one frame jumps by (1, 1)
    assert landmark_jitter(lms) > 0.3
    assert landmark_jitter(lms[:2]) == 0.0


def test_pose_coverage_measures_validation_poses_beyond_the_training_range() -> None:
    yaw = np.radians(np.concatenate([np.linspace(0.0, 10.0, 20), [5.0, 12.0, 16.0]]))
    rot = Rotation.from_euler("y", yaw).as_matrix()
    cov = pose_coverage(rot, num_val=3)
    assert cov["val_pose_gap_max_deg"] == pytest.approx(6.0, abs=1e-4)
    assert cov["val_pose_gap_mean_deg"] == pytest.approx((0.0 + 2.0 + 6.0) / 3, abs=0.3)
    assert cov["val_frames_novel_pose"] == 1
    rep = _report(rot=rot, num_val=3)
    assert "val pose gap" in format_report(rep) and "6.0 max" in format_report(rep)
    assert any("1 of 3 validation frames turn the head" in w for w in rep["warnings"])


def test_save_preview_writes_one_side_by_side_jpeg(tmp_path: Path) -> None:
    lms, person = synthetic_face()
    parsing = labels_to_rgb(label_regions(person, lms))
    frame = np.full((90, 160, 3), 128, np.uint8)
    crop = np.full((SIZE, SIZE, 3), 90, np.uint8)
    path = tmp_path / "preview.jpg"
    save_preview(path, frame, lms, parsing, crop, crop_rect=(40, 0, 90), height=100)
    img = cv2.imread(str(path))
    assert img.shape[0] == 100 and img.shape[1] == round(160 * 100 / 90) + 3 * 100


def test_plate_refiner_adds_missed_strands_near_the_person_only() -> None:
    rng = np.random.default_rng(0)
    plate = rng.integers(100, 140, size=(96, 96, 3)).astype(np.uint8)
    person = np.zeros((96, 96), bool)
    person[30:70, 30:60] = True
    frame = plate.copy()
    frame[person] = 200
    frame[40:60, 60:64] = 20  # a dark strand just outside the segmented person
    frame[5:15, 85:95] = 250  # something that changed far from the person
    frame[80:90, 10:20] = plate[80:90, 10:20] + 3  # compression-like noise
    refined = PlateRefiner(plate)(person, frame)
    assert refined[person].all()
    assert refined[44:56, 60:63].all()
    assert not refined[5:15, 85:95].any()
    assert not refined[80:90, 10:20].any()
    grown = cv2.dilate(person.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0  # the blur's 3 px halo
    grown[38:62, 60:66] = True
    assert not (refined & ~grown).any()


def test_quality_report_warns_of_a_desynced_track_and_a_mouth_that_does_not_follow() -> None:
    sync = {"score": 0.7, "judged": True, "reason": "", "open_frames": 30, "labial_frames": 12}
    clean = _report(lipsync={**sync, "offset_frames": -1, "offset_ms": -40})
    assert clean["warnings"] == [] and clean["lipsync"]["score"] == 0.7
    table = format_report(clean)
    assert "lip sync of the clip" in table and "the mouth 40 ms ahead of the sound" in table
    ahead = _report(lipsync={**sync, "offset_frames": -4, "offset_ms": -160})
    assert any("runs 4 frames (160 ms) ahead of the speech" in w for w in ahead["warnings"])
    behind = _report(lipsync={**sync, "offset_frames": 3, "offset_ms": 120})
    assert any("behind" in w for w in behind["warnings"])
    weak = _report(lipsync={**sync, "score": 0.05, "offset_frames": 0, "offset_ms": 0})
    assert any("barely follows" in w for w in weak["warnings"])
    unjudged = {
        **sync,
        "score": None,
        "judged": False,
        "reason": "too short to judge: ...",
        "offset_frames": 9,
    }
    rep = _report(lipsync={**unjudged, "offset_ms": 360})
    assert rep["warnings"] == [] and "not judged (too short" in format_report(rep)
