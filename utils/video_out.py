"""Stream RGB frames to ffmpeg and mux an audio track: a .mov (H.264 + AAC) and a .mp4 remux beside it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import imageio_ffmpeg
import numpy as np

from utils.cli import UserError

PROBE_RATE = 8000  # Hz the audio is decoded at to measure its length (any rate would do)

PREFERRED_CODECS = ("libx264", "mjpeg")


def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg binary shipped with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def available_video_encoders() -> set[str]:
    """Return the names of the video encoders this ffmpeg build offers."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=True
    ).stdout
    return {m.group(1) for m in re.finditer(r"^\s*V\S*\s+(\S+)", out, flags=re.MULTILINE)}


def pick_codec() -> str:
    """Return H.264 (libx264) when this ffmpeg has it, else MJPEG."""
    encoders = available_video_encoders()
    return next((c for c in PREFERRED_CODECS if c in encoders), "mjpeg")


def _codec_args(codec: str) -> list[str]:
    """Return the ffmpeg output arguments of one video codec."""
    if codec == "libx264":
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
    if codec == "mjpeg":
        return ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p"]
    return ["-c:v", codec]


def _run_ffmpeg(args: list[str], what: str) -> None:
    """Run ffmpeg with `args`; raise RuntimeError with the end of its log on failure."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"ffmpeg failed to {what}: {' | '.join(tail)}")


class VideoWriter:
    """Context manager: `write(frames)` streams RGB uint8 frames [H,W,3] or [B,H,W,3] to ffmpeg.

    On a clean exit the audio (if any) is muxed, trimmed or padded to the video length, into `path` (.mov)
    and the same streams are remuxed to `path.with_suffix('.mp4')`; both appear only when complete.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        audio_path: str | Path | None = None,
        codec: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.mp4_path = self.path.with_suffix(".mp4")
        self.fps = float(fps)
        self.width, self.height = int(width), int(height)
        self.audio_path = Path(audio_path) if audio_path is not None else None
        self.codec = codec or pick_codec()
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._tmpdir: Path | None = None

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.stem}.tmp-", dir=self.path.parent))
        self._log = open(self._tmpdir / "ffmpeg.log", "wb")  # noqa: SIM115 - closed in __exit__
        size = f"{self.width}x{self.height}"
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
        ]
        cmd += ["-s", size, "-r", f"{self.fps:g}", "-i", "-", "-an", *_codec_args(self.codec)]
        cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", str(self._tmpdir / "video.mov")]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append RGB uint8 frames [H,W,3] or [B,H,W,3] to the video."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 frames [B,{self.height},{self.width},3], got {frames.dtype} {frames.shape}"
            )
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError as err:
            raise RuntimeError(f"ffmpeg stopped while encoding: {self._log_tail()}") from err
        self.frames_written += len(frames)

    def _log_tail(self) -> str:
        """Return the last lines of the encoder's log."""
        self._log.flush()
        text = (self._tmpdir / "ffmpeg.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-3:])

    def _finish(self) -> None:
        """Close the encoder, mux the audio into the .mov and remux it to .mp4."""
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg failed to encode the video: {self._log_tail()}")
        if self.frames_written == 0:
            raise RuntimeError("no frames were written to the video")
        video = self._tmpdir / "video.mov"
        mov = self._tmpdir / f"out{self.path.suffix or '.mov'}"
        mp4 = self._tmpdir / "out.mp4"
        if self.audio_path is None:
            os.replace(video, mov)
        else:
            seconds = f"{self.frames_written / self.fps:.6f}"
            args = ["-i", str(video), "-i", str(self.audio_path), "-map", "0:v:0", "-map", "1:a:0"]
            args += [
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-b:a",
                "192k",
                "-ar",
                "48000",
                "-af",
                "apad",
                "-t",
                seconds,
                str(mov),
            ]
            _run_ffmpeg(args, f"mux the audio '{self.audio_path}'")
        _run_ffmpeg(
            ["-i", str(mov), "-map", "0", "-c", "copy", "-movflags", "+faststart", str(mp4)], "remux mp4"
        )
        os.replace(mov, self.path)
        os.replace(mp4, self.mp4_path)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            self._log.close()
            for f in self._tmpdir.iterdir():
                f.unlink()
            self._tmpdir.rmdir()


@dataclass
class MediaInfo:
    """What ffmpeg reports about a media file: decoded video frames, fps, durations, audio presence."""

    frames: int
    fps: float
    video_seconds: float
    has_audio: bool
    audio_seconds: float
    video_codec: str
    audio_codec: str


def probe_media(path: str | Path) -> MediaInfo:
    """Decode `path` fully and return its frame count, fps and video/audio durations (s)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file '{path}'")
    head = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    ).stderr
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*?, ([\d.]+) fps", head)
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+)", head)
    frames = 0
    if video:
        log = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
            capture_output=True,
            text=True,
        ).stderr
        counts = re.findall(r"frame=\s*(\d+)", log)
        frames = int(counts[-1]) if counts else 0
    audio_seconds = 0.0
    if audio:
        pcm = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1"]
            + ["-ar", str(PROBE_RATE), "-f", "s16le", "-"],
            capture_output=True,
        ).stdout
        audio_seconds = len(pcm) / 2 / PROBE_RATE
    fps = float(video.group(2)) if video else 0.0
    return MediaInfo(
        frames=frames,
        fps=fps,
        video_seconds=frames / fps if fps else 0.0,
        has_audio=audio is not None,
        audio_seconds=audio_seconds,
        video_codec=video.group(1) if video else "",
        audio_codec=audio.group(1) if audio else "",
    )
