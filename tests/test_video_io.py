"""Tests of video probing, constant-fps frame streaming with crop/resize, and audio extraction."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from data_utils.video_io import count_frames, extract_audio, ffmpeg_exe, probe_video, read_frames
from utils.cli import UserError


def _make_clip(path: Path, *, seconds: float = 2.0, fps: int = 30, audio: bool = True, extra=()) -> Path:
    """Encode a 64x48 test-pattern clip (with a 440 Hz tone unless audio=False) to `path`."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size=64x48:rate={fps}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast"]
    codec = ["-c:v", "mpeg4", "-q:v", "5"] if path.suffix == ".avi" else x264
    cmd += [*codec, "-pix_fmt", "yuv420p", *extra]
    if audio:
        cmd += ["-c:a", "pcm_s16le" if path.suffix == ".avi" else "aac", "-ac", "2"]
    subprocess.run([*cmd, str(path)], check=True)
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv", ".mov"])
def test_probe_and_resample_common_containers(tmp_path: Path, suffix: str) -> None:
    clip = _make_clip(tmp_path / f"clip{suffix}")
    info = probe_video(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.has_audio and abs(info.fps - 30) < 0.01 and abs(info.duration - 2.0) < 0.1
    frames = list(read_frames(clip, 25))
    assert abs(len(frames) - 50) <= 1 and len(frames) == count_frames(clip, 25)
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8


def test_variable_frame_rate_is_resampled_to_constant_fps(tmp_path: Path) -> None:
    vfr = ["-vf", r"select=lt(mod(n\,5)\,3)", "-vsync", "vfr"]
    clip = _make_clip(tmp_path / "vfr.mp4", seconds=2.0, fps=30, extra=vfr)
    frames = list(read_frames(clip, 25))
    assert abs(len(frames) - 50) <= 2 and len(frames) == count_frames(clip, 25)


def test_crop_pads_with_edge_pixels_and_resizes(tmp_path: Path) -> None:
    clip = tmp_path / "red.mp4"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", "color=c=red:size=64x48:rate=25:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv444p"]
    subprocess.run([*cmd, str(clip)], check=True)
    frames = list(read_frames(clip, 25, crop=(-20, -10, 80), size=32))
    assert len(frames) == 25 and frames[0].shape == (32, 32, 3)
    mean = frames[0].reshape(-1, 3).mean(axis=0)
    assert mean[0] > 200 and mean[1] < 40 and mean[2] < 40
    inside = next(read_frames(clip, 25, crop=(8, 4, 40)))
    assert inside.shape == (40, 40, 3)
    small = next(read_frames(clip, 25, max_side=32))
    assert small.shape == (24, 32, 3)


def test_extract_audio_writes_16k_mono_pcm16(tmp_path: Path) -> None:
    clip = _make_clip(tmp_path / "talk.mp4")
    wav_path = extract_audio(clip, tmp_path / "aud.wav")
    with wave.open(str(wav_path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert abs(wav.getnframes() / 16000 - 2.0) < 0.1


def test_errors_are_one_line_user_errors(tmp_path: Path) -> None:
    silent = _make_clip(tmp_path / "silent.mp4", audio=False)
    assert not probe_video(silent).has_audio
    with pytest.raises(UserError, match="no audio track in .*silent.mp4.*--audio FILE"):
        extract_audio(silent, tmp_path / "x.wav")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(UserError, match="not a readable video"):
        probe_video(fake)
    with pytest.raises(UserError, match="does not exist"):
        probe_video(tmp_path / "missing.mp4")
    audio_only = tmp_path / "tone.wav"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.5"]
    subprocess.run([*cmd, str(audio_only)], check=True)
    with pytest.raises(UserError, match="no video stream"):
        probe_video(audio_only)


def test_rotated_phone_video_is_reported_and_read_upright(tmp_path: Path) -> None:
    plain = _make_clip(tmp_path / "plain.mp4", seconds=1.0, audio=False)
    rotated = tmp_path / "rotated.mp4"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(plain), "-c", "copy"]
    subprocess.run([*cmd, "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    info = probe_video(rotated)
    assert (info.width, info.height) == (48, 64)
    assert next(read_frames(rotated, 25)).shape == (64, 48, 3)
    assert next(read_frames(rotated, 25, max_side=32)).shape == (32, 24, 3)
