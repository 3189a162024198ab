"""preprocess.sh end to end on the generated sample clip, and each kind of bad input it must refuse."""

from __future__ import annotations

import json
import math
import subprocess
import wave
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from data_utils import process
from data_utils.parsing import COLOURS, HEAD
from data_utils.process import main, shift_windows
from data_utils.schema import FORMAT_VERSION
from utils.cli import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE = 96
FPS = 25


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly; fail the test if it fails."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    subprocess.run(cmd, check=True)


def siblings(out: Path) -> list[str]:
    """Names next to `out` that belong to it (temporary or old copies included)."""
    return sorted(p.name for p in out.parent.iterdir() if out.name in p.name)


@pytest.fixture(scope="module")
def dataset(
    sample_video: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess]:
    """The sample clip preprocessed once through the shell wrapper at SIZE x SIZE."""
    out = tmp_path_factory.mktemp("pre") / "subject"
    proc = subprocess.run(
        [str(REPO / "preprocess.sh"), str(sample_video), str(out), "--size", str(SIZE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="module")
def silent_clip(sample_video: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2.4 s of the sample without its audio track."""
    path = tmp_path_factory.mktemp("silent") / "silent.mp4"
    ffmpeg("-i", str(sample_video), "-t", "2.4", "-an", "-c:v", "mpeg4", "-q:v", "3", str(path))
    return path


@pytest.fixture(scope="module")
def no_face_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2.4 s of a plain grey picture with a tone: a valid video that shows no face."""
    path = tmp_path_factory.mktemp("noface") / "grey.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:s=96x96:d=2.4:r=25",
        "-f", "lavfi", "-i", "sine=frequency=300:duration=2.4",
        "-c:v", "mpeg4", "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip
    return path


def test_contract_images_and_landmarks(dataset: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = dataset
    meta = json.loads((out / "preprocess.json").read_text())
    t = meta["frames"]
    assert t == 75 and meta["fps"] == FPS and meta["size"] == SIZE
    for sub, ext in (("ori_imgs", "jpg"), ("gt_imgs", "jpg"), ("parsing", "png"), ("torso_imgs", "png")):
        names = sorted(int(p.stem) for p in (out / sub).glob(f"*.{ext}"))
        assert names == list(range(t)), sub
    assert sorted(int(p.stem) for p in (out / "ori_imgs").glob("*.lms")) == list(range(t))
    for i in (0, t // 2, t - 1):
        assert cv2.imread(str(out / "ori_imgs" / f"{i}.jpg")).shape == (SIZE, SIZE, 3)
        lms = np.loadtxt(out / "ori_imgs" / f"{i}.lms")
        assert lms.shape == (478, 2) and (lms > -SIZE).all() and (lms < 2 * SIZE).all()
        parsing = cv2.cvtColor(cv2.imread(str(out / "parsing" / f"{i}.png")), cv2.COLOR_BGR2RGB)
        assert parsing.shape == (SIZE, SIZE, 3)
        assert {tuple(c) for c in parsing.reshape(-1, 3)} <= set(COLOURS)
        assert (np.all(parsing == HEAD, axis=-1)).mean() > 0.05, "a head is labelled"
        torso = cv2.imread(str(out / "torso_imgs" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert torso.shape == (SIZE, SIZE, 4)
        assert (torso[..., 3][np.all(parsing == HEAD, axis=-1)] == 0).all()
    assert cv2.imread(str(out / "bc.jpg")).shape == (SIZE, SIZE, 3)
    assert cv2.imread(str(out / "preview.jpg")) is not None
    assert "quality:" in proc.stdout and str(out) in proc.stdout


def test_contract_tracking_and_transforms(dataset: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = dataset
    t = 75
    track = torch.load(out / "track_params.pt")
    assert track["R"].shape == (t, 3, 3) and track["t"].shape == (t, 3) and track["euler"].shape == (t, 3)
    assert track["lms2d"].shape == (t, 478, 2) and track["reproj_err"].shape == (t,)
    assert track["shape"].shape == (478, 3) and track["focal"] > 0 and track["tracker"] == "mediapipe"
    train = json.loads((out / "transforms_train.json").read_text())
    val = json.loads((out / "transforms_val.json").read_text())
    n_val = max(math.ceil(t / 11), FPS)
    assert len(val["frames"]) == n_val and len(train["frames"]) == t - n_val
    frames = train["frames"] + val["frames"]
    assert [f["img_id"] for f in frames] == list(range(t)) == [f["aud_id"] for f in frames]
    for meta in (train, val):
        assert meta["cx"] == SIZE / 2 and meta["cy"] == SIZE / 2 and meta["w"] == meta["h"] == SIZE
        assert meta["focal_len"] == pytest.approx(track["focal"]) and meta["camera_convention"] == "opencv"
        assert meta["fps"] == FPS
    mats = np.array([f["transform_matrix"] for f in frames])
    assert mats.shape == (t, 4, 4)
    rot = mats[:, :3, :3]
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-4)
    assert np.allclose(np.linalg.det(rot), 1.0, atol=1e-4)
    assert np.allclose(mats[:, 3], [0, 0, 0, 1])
    w2c = np.linalg.inv(mats)
    assert np.allclose(w2c[:, :3, :3], track["R"].numpy(), atol=1e-4)
    assert (w2c[:, 2, 3] > 0).all(), "the head is in front of the camera"
    for f in frames:
        assert 0.0 <= f["eye"] <= 1.0
        for key in ("face_rect", "mouth_rect"):
            x0, y0, x1, y1 = f[key]
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE, key
        assert f["face_rect"][1] < f["mouth_rect"][1] < f["face_rect"][3]


def test_contract_audio_and_metadata(dataset: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, _ = dataset
    meta = json.loads((out / "preprocess.json").read_text())
    t = meta["frames"]
    with wave.open(str(out / "aud.wav")) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert abs(w.getnframes() / 16000 - 3.0) < 0.2
    feats = np.load(out / "aud_visemes.npy")  # the default extractor
    assert feats.dtype == np.float32 and feats.ndim == 3 and feats.shape[0] == t
    assert meta["audio_extractor"]["name"] == "visemes" and isinstance(
        meta["audio_extractor"]["settings"], dict
    )
    assert set(meta["versions"]) >= {"python", "torch", "mediapipe", "numpy", "opencv"}
    assert meta["versions"]["pocketsphinx"]  # the default visemes come from its decoder
    assert set(meta["timings"]) >= {
        "detect",
        "crop_parse_write",
        "background",
        "refine_parsing",
        "track",
        "lipsync",
    }
    assert all(set(st) >= {"seconds", "fps"} for st in meta["timings"].values())
    quality = meta["quality"]
    assert set(quality) >= {"frames_with_face", "landmark_jitter_px", "reproj_err_px", "warnings"}
    assert quality["frames_with_face"] >= 0.9 and quality["reproj_err_px"] < 5.0
    assert 0.0 <= quality["person_px_added_by_plate"] < 0.1
    assert 0.0 <= quality["val_pose_gap_mean_deg"] <= quality["val_pose_gap_max_deg"] < 90.0
    assert any("1-2 minutes" in w for w in quality["warnings"]), "a 3 s clip is short"
    sync = quality["lipsync"]  # the clip's own, measured on its tracked landmarks and audio
    assert {"score", "judged", "reason", "offset_frames", "offset_ms"} <= set(sync)
    assert sync["judged"] or sync["reason"]
    assert meta["settings"]["size"] == SIZE and meta["settings"]["tracker"] == "mediapipe"
    assert meta["format_version"] == FORMAT_VERSION


def test_not_a_video_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    out = tmp_path / "out"
    with pytest.raises(UserError, match="not a readable video"):
        main([str(fake), str(out)])
    assert siblings(out) == []


def test_short_clip_is_refused(sample_video: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    ffmpeg("-i", str(sample_video), "-t", "1.0", "-c:v", "mpeg4", "-c:a", "aac", str(short))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="at least 2 s"):
        main([str(short), str(out)])
    assert siblings(out) == []


def test_missing_audio_track_names_the_flag(silent_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no audio track.*--audio FILE"):
        main([str(silent_clip), str(out)])
    assert siblings(out) == []


def test_no_face_fails_without_leaving_output(no_face_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no face"):
        main([str(no_face_clip), str(out), "--size", "64"])
    assert siblings(out) == [], "no half-written output folder or temporary left behind"


def test_existing_out_dir_needs_force_and_survives_a_failed_run(
    silent_clip: Path, no_face_clip: Path, speech_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a dataset folder this tool wrote"):
        main([str(silent_clip), str(out), "--audio", str(speech_wav), "--force"])
    (out / "preprocess.json").write_text("{}")  # the marker of a dataset folder: --force may replace it
    with pytest.raises(UserError, match="--force"):
        main([str(silent_clip), str(out), "--audio", str(speech_wav)])
    with pytest.raises(UserError, match="no face"):
        main([str(no_face_clip), str(out), "--size", "64", "--force"])
    assert (out / "old.txt").read_text() == "keep me" and siblings(out) == ["out"]
    code = main(
        [str(silent_clip), str(out), "--size", "64", "--no_preview", "--audio", str(speech_wav), "--force"]
    )
    assert code == 0 and siblings(out) == ["out"] and not (out / "old.txt").exists()
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["frames"] == 60 and np.load(out / "aud_visemes.npy").shape[0] == 60
    assert meta["settings"]["audio"] == str(speech_wav) and not (out / "preview.jpg").exists()
    with wave.open(str(out / "aud.wav")) as w:
        assert abs(w.getnframes() / 16000 - 2.0) < 0.05, "aud.wav comes from --audio"


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--tracker", "nope"], "unknown tracker"), (["--audio_extractor", "nope"], "unknown audio extractor")],
)
def test_unknown_tracker_or_extractor_fails_before_any_work(
    sample_video: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        main([str(sample_video), str(out), *flags])
    assert siblings(out) == []


def test_shift_windows_moves_frames_in_time_with_the_edges_repeated() -> None:
    feats = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    ahead = shift_windows(feats, 2)  # out[t] = feats[t + 2]
    assert ahead[:, 0, 0].tolist() == [2, 3, 4, 4, 4]
    assert shift_windows(feats, -1)[:, 0, 0].tolist() == [0, 0, 1, 2, 3]
    assert shift_windows(feats, 0) is not feats and np.array_equal(shift_windows(feats, 0), feats)


def test_align_audio_shifts_the_features_by_the_measured_offset(
    dataset: tuple[Path, subprocess.CompletedProcess],
    sample_video: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync = {"score": 0.7, "judged": True, "reason": "", "open_frames": 9, "labial_frames": 9}
    monkeypatch.setattr(process, "clip_sync", lambda *a: {**sync, "offset_frames": -2, "offset_ms": -80})
    out = tmp_path / "aligned"
    assert main([str(sample_video), str(out), "--size", str(SIZE), "--align_audio", "--no_preview"]) == 0
    meta = json.loads((out / "preprocess.json").read_text())
    assert meta["audio_extractor"]["shift_frames"] == 2  # the mouth 2 frames ahead: frame t hears t + 2
    plain = np.load(dataset[0] / "aud_visemes.npy")
    assert np.array_equal(np.load(out / "aud_visemes.npy"), shift_windows(plain, 2))
    assert "shift_frames" not in json.loads((dataset[0] / "preprocess.json").read_text())["audio_extractor"]
