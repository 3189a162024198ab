"""Audio input/output: decode any format ffmpeg reads to mono float32, write PCM16 WAV."""

from __future__ import annotations

import re
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from utils.cli import UserError

SAMPLE_RATE = 16000  # Hz: every waveform the project decodes, stores and computes features from

_BYTES_PER_SAMPLE = 4


def _check_exists(path: Path) -> None:
    """Raise UserError unless `path` is an existing file."""
    if not path.is_file():
        raise UserError(f"audio file '{path}' not found; check the path")


def _decode_error(path: Path, stderr: str) -> UserError:
    """Turn ffmpeg's stderr for a failed decode of `path` into a one-line UserError."""
    if "matches no streams" in stderr:
        return UserError(f"no audio stream in '{path}'; supply a file that contains audio")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[-1] if lines else "unknown error"
    return UserError(
        f"cannot decode audio from '{path}' (ffmpeg: {detail}); supply an audio or video file ffmpeg can read"
    )


def iter_audio_chunks(path: Path, sr: int = SAMPLE_RATE, chunk_seconds: float = 10.0) -> Iterator[np.ndarray]:
    """Stream `path` decoded to mono at `sr` Hz as float32 chunks [<= chunk_seconds*sr] in [-1, 1]."""
    path = Path(path)
    _check_exists(path)
    chunk_bytes = max(1, round(chunk_seconds * sr)) * _BYTES_PER_SAMPLE
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(sr), "-"]
    total = 0
    with tempfile.TemporaryFile() as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc:
        assert proc.stdout is not None
        while data := proc.stdout.read(chunk_bytes):
            usable = len(data) - len(data) % _BYTES_PER_SAMPLE
            total += usable
            yield np.clip(np.frombuffer(data[:usable], dtype="<f4"), -1.0, 1.0).astype(np.float32)
        code = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if code != 0:
        raise _decode_error(path, stderr)
    if total == 0:
        raise UserError(f"no audio samples in '{path}'; supply a file that contains audio")


def load_audio(path: Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of `path` (any ffmpeg format) to mono float32 [n] in [-1, 1] at `sr`."""
    return np.concatenate(list(iter_audio_chunks(path, sr, chunk_seconds=60.0)))


def write_wav(path: Path, wav: np.ndarray, sr: int) -> None:
    """Write mono float `wav` [n] (values in [-1, 1]) to `path` as 16-bit PCM WAV at `sr` Hz."""
    pcm = (np.clip(np.asarray(wav, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sr)
        f.writeframes(pcm.tobytes())


def audio_duration(path: Path) -> float:
    """Return the duration in seconds of `path` (from the container header, else by decoding)."""
    path = Path(path)
    _check_exists(path)
    if path.suffix.lower() == ".wav":
        try:
            with wave.open(str(path), "rb") as f:
                return f.getnframes() / f.getframerate()
        except (wave.Error, EOFError):
            pass
    proc = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", proc.stderr)
    if match and "Audio:" in proc.stderr:
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    sr = SAMPLE_RATE
    return sum(len(chunk) for chunk in iter_audio_chunks(path, sr)) / sr
