"""Tests of the built-in sample clip: format, a detectable face in every frame, real lip sync."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from data_utils.audio_io import audio_duration, load_audio
from data_utils.sample import generate_speech, main, mouth_envelope
from utils.cli import UserError


def _decode_frames(path: Path, size: int) -> np.ndarray:
    """Decode all frames of `path` to RGB uint8 [T, size, size, 3] with ffmpeg."""
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(path),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3)


def _probe(path: Path) -> str:
    """Return ffmpeg's description of the streams of `path`."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True).stderr


@pytest.fixture(scope="module")
def frames(sample_video: Path) -> np.ndarray:
    """The sample clip's frames [T, 192, 192, 3]."""
    return _decode_frames(sample_video, 192)


@pytest.fixture(scope="module")
def landmarks(frames: np.ndarray) -> list[np.ndarray | None]:
    """MediaPipe face-mesh landmarks [478, 2] (pixels) per frame, None where no face was found."""
    import mediapipe as mp

    out: list[np.ndarray | None] = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, refine_landmarks=True, max_num_faces=1
    ) as fm:
        for frame in frames:
            result = fm.process(frame)
            found = result.multi_face_landmarks
            out.append(np.array([[p.x, p.y] for p in found[0].landmark]) * 192 if found else None)
    return out


def test_sample_format(sample_video: Path, frames: np.ndarray) -> None:
    info = _probe(sample_video)
    assert "h264" in info and "yuv420p" in info and "25 fps" in info and "Audio:" in info
    assert frames.shape == (75, 192, 192, 3)
    assert abs(audio_duration(sample_video) - 3.0) < 0.1
    assert abs(len(load_audio(sample_video)) / 16000 - 3.0) < 0.1
    assert frames.std(axis=0).mean() > 1.0, "the clip must move"


def test_face_in_every_frame(landmarks: list[np.ndarray | None]) -> None:
    found = sum(lms is not None for lms in landmarks)
    assert found >= 0.95 * len(landmarks)


def test_lip_sync(sample_video: Path, landmarks: list[np.ndarray | None]) -> None:
    wav = load_audio(sample_video)
    envelope = mouth_envelope(wav, 16000, 25, len(landmarks))
    keep = [i for i, lms in enumerate(landmarks) if lms is not None]
    opening = np.array([np.linalg.norm(landmarks[i][13] - landmarks[i][14]) for i in keep])
    assert opening.max() - opening.min() > 3.0, "the mouth must visibly open and close"
    assert np.corrcoef(opening, envelope[keep])[0, 1] > 0.5


def test_generate_speech(tmp_path: Path) -> None:
    path = generate_speech(tmp_path / "s.wav", seconds=1.5)
    wav = load_audio(path)
    assert len(wav) == 24000
    assert 0.3 < np.abs(wav).max() <= 1.0
    assert (np.abs(wav) > 0.05).mean() > 0.1, "mostly speech, not silence"


def test_generate_speech_without_espeak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("data_utils.sample.shutil.which", lambda name: None)
    wav = load_audio(generate_speech(tmp_path / "s.wav", seconds=2.0, seed=3))
    assert len(wav) == 32000
    assert "espeak-ng not available" in caplog.text
    envelope = mouth_envelope(wav, 16000, 25, 50)
    assert envelope.max() > 0.9 and envelope.min() < 0.3, "syllables must come and go"


def test_cli_refuses_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(UserError, match="--force"):
        main([str(out), "--seconds", "1"])
    assert out.read_bytes() == b"keep me"


def test_cli_force(tmp_path: Path) -> None:
    out = tmp_path / "x.mp4"
    out.write_bytes(b"old")
    assert main([str(out), "--seconds", "1", "--size", "128", "--fps", "10", "--force"]) == 0
    assert _decode_frames(out, 128).shape[0] == 10
