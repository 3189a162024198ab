"""Video probing, constant-fps frame streaming and audio extraction through the bundled ffmpeg."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from data_utils.audio_io import SAMPLE_RATE
from utils.cli import UserError

_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"Stream #\S+.*?: Video: (\w+)[^\n]*?, (\d{2,5})x(\d{2,5})")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)")
_ROTATE_RE = re.compile(r"rotate\s*:\s*(-?\d+)|rotation of (-?\d+(?:\.\d+)?) degrees")


@dataclass
class VideoInfo:
    """What `probe_video` learned about a file; width/height are after ffmpeg's automatic rotation."""

    path: Path
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool
    codec: str


def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg binary shipped with imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def probe_video(path: str | Path) -> VideoInfo:
    """Read size, frame rate, duration, codec and audio presence of a video by parsing `ffmpeg -i` output."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"video '{path}' does not exist")
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace"
    )
    text = proc.stderr
    if "Input #0" not in text:
        raise UserError(f"'{path}' is not a readable video file; supply an MP4/AVI/MOV/MKV video")
    match = _VIDEO_RE.search(text)
    if match is None:
        raise UserError(f"'{path}' has no video stream; supply a video file (MP4/AVI/MOV/MKV)")
    codec, width, height = match.group(1), int(match.group(2)), int(match.group(3))
    video_line = text[match.start() : text.find("\n", match.start())]
    fps_match = _FPS_RE.search(video_line)
    fps = 0.0
    if fps_match is not None:
        fps = float(fps_match.group(1)) * (1000.0 if fps_match.group(2) else 1.0)
    rot = _ROTATE_RE.search(text[match.start() :])
    if rot is not None and round(abs(float(rot.group(1) or rot.group(2)))) % 180 == 90:
        width, height = height, width
    dur = _DURATION_RE.search(text)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else 0.0
    if duration <= 0 or width <= 0 or height <= 0:
        raise UserError(f"'{path}' has an empty or unreadable video stream; re-encode it (e.g. to H.264 MP4)")
    has_audio = re.search(r"Stream #\S+.*?: Audio: ", text) is not None
    return VideoInfo(path, width, height, fps, duration, has_audio, codec)


def count_frames(path: str | Path, fps: float) -> int:
    """Return the number of frames `read_frames(path, fps)` yields (decodes the video once at low cost)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(probe_video(path).path), "-map", "0:v:0"]
    cmd += ["-an", "-vf", f"fps={fps},scale=16:16", "-vsync", "passthrough", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr)
    if proc.returncode != 0 or not counts:
        raise UserError(f"cannot decode '{path}' (ffmpeg failed); re-encode it (e.g. to H.264 MP4)")
    return int(counts[-1])


def _output_size(info: VideoInfo, crop: tuple[int, int, int] | None, size: int | None, max_side: int | None):
    """Return (width, height) of the streamed frames for the given crop/resize options."""
    w, h = (crop[2], crop[2]) if crop is not None else (info.width, info.height)
    if size is not None:
        return size, size
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))
    return w, h


def _filter_chain(info: VideoInfo, fps: float, crop, out_w: int, out_h: int) -> str:
    """Build the ffmpeg -vf chain: constant fps, edge-padded square crop, resize, rgb24."""
    filters = [f"fps={fps}"]
    in_w, in_h = info.width, info.height
    if crop is not None:
        x0, y0, side = (int(v) for v in crop)
        pad = max(0, -x0, -y0, x0 + side - info.width, y0 + side - info.height)
        if pad > 0:
            filters.append(f"pad=w=iw+{2 * pad}:h=ih+{2 * pad}:x={pad}:y={pad}")
            filters.append(f"fillborders=left={pad}:right={pad}:top={pad}:bottom={pad}:mode=smear")
        filters.append(f"crop={side}:{side}:{x0 + pad}:{y0 + pad}")
        in_w = in_h = side
    if (out_w, out_h) != (in_w, in_h):
        flags = "area" if out_w < in_w else "bicubic"
        filters.append(f"scale={out_w}:{out_h}:flags={flags}")
    filters.append("format=rgb24")
    return ",".join(filters)


def read_frames(
    path: str | Path,
    fps: float,
    crop: tuple[int, int, int] | None = None,
    size: int | None = None,
    max_side: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream RGB uint8 frames [H,W,3] at constant `fps`, optionally square-cropped (x0,y0,side), resized.

    `size` resizes to size x size; otherwise `max_side` downscales so the longer side is at most max_side.
    A crop square that leaves the frame is padded by repeating the edge pixels.
    """
    info = probe_video(path)
    out_w, out_h = _output_size(info, crop, size, max_side)
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(info.path)]
    cmd += ["-map", "0:v:0", "-an", "-vf", _filter_chain(info, fps, crop, out_w, out_h)]
    cmd += ["-vsync", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    nbytes = out_w * out_h * 3
    with tempfile.TemporaryFile() as errfile:  # a file, not a pipe: a full stderr pipe would block ffmpeg
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, bufsize=nbytes * 2)
        try:
            while len(buf := proc.stdout.read(nbytes)) == nbytes:
                yield np.frombuffer(buf, np.uint8).reshape(out_h, out_w, 3).copy()
            if proc.wait() != 0:
                errfile.seek(0)
                lines = errfile.read().decode(errors="replace").strip().splitlines() or ["unknown error"]
                raise UserError(f"ffmpeg failed to decode '{path}': {lines[-1]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def extract_audio(path: str | Path, out_wav: str | Path, sr: int = SAMPLE_RATE) -> Path:
    """Write the first audio track of `path` as mono PCM16 WAV at `sr` Hz to `out_wav`; return out_wav."""
    info = probe_video(path)
    if not info.has_audio:
        raise UserError(f"no audio track in '{path}'; supply one with --audio FILE")
    out_wav = Path(out_wav)
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(info.path)]
    cmd += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(sr), "-acodec", "pcm_s16le", str(out_wav)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "unknown error"
        raise UserError(f"cannot extract audio from '{path}': {last}")
    return out_wav
