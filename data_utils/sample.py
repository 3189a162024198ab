"""Built-in sample clip: the scikit-image astronaut photo, animated to speak generated speech (lip-synced)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from scipy import signal

from data_utils import landmark_indices as li
from data_utils.audio_io import SAMPLE_RATE, load_audio, write_wav
from utils.cli import ArgumentParser, UserError, run_cli

log = logging.getLogger(__name__)

DEFAULT_TEXT = (
    "Hello there. I am a digital avatar, made from one single photograph. "
    "My lips open and close with the sound of my voice, and my head moves a little while I speak. "
    "Thank you for listening, and have a wonderful day."
)
CAVITY_RGB = np.array([70.0, 22.0, 28.0], dtype=np.float32)


def _espeak(text: str, out_wav: Path) -> bool:
    """Synthesise `text` with espeak-ng into `out_wav`; False if espeak-ng is unavailable or fails."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    proc = subprocess.run([exe, "-w", str(out_wav), "-s", "150", text], capture_output=True)
    return proc.returncode == 0 and out_wav.is_file() and out_wav.stat().st_size > 1000


def _synth_voice(seconds: float, seed: int) -> np.ndarray:
    """Return a speech-like signal [seconds*16k]: glottal pulses through vowel formants, syllable-rate AM."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120.0 + 15.0 * np.sin(2 * np.pi * 0.7 * t) + rng.normal(0.0, 1.0, n).cumsum() / np.sqrt(n) * 5.0
    phase = np.cumsum(f0) / SAMPLE_RATE
    pulses = np.diff(np.floor(phase), prepend=0.0)
    source = signal.lfilter([1.0], [1.0, -0.95], pulses)
    syllable = 0.25
    n_syl = int(np.ceil(seconds / syllable))
    vowels = [(730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870)]
    out = np.zeros(n)
    for k in range(n_syl):
        a, b = round(k * syllable * SAMPLE_RATE), min(n, round((k + 1) * syllable * SAMPLE_RATE))
        if b <= a or rng.random() < 0.15:
            continue
        seg = source[a:b]
        for formant in vowels[rng.integers(len(vowels))]:
            bb, aa = signal.iirpeak(formant, 5.0, fs=SAMPLE_RATE)
            seg = signal.lfilter(bb, aa, seg)
        out[a:b] = seg * np.sin(np.linspace(0.0, np.pi, b - a)) ** 2
    return (out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def generate_speech(out_wav: Path, seconds: float, text: str | None = None, seed: int = 0) -> Path:
    """Write `seconds` of speech (espeak-ng, else a synthetic voice) to `out_wav`: 16 kHz mono PCM16 WAV."""
    out_wav = Path(out_wav)
    n = round(seconds * SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        if _espeak(text or DEFAULT_TEXT, raw):
            speech = load_audio(raw, SAMPLE_RATE)
        else:
            log.warning("espeak-ng not available; using a synthetic voice for the sample audio")
            speech = _synth_voice(seconds, seed)
    pause = np.zeros(SAMPLE_RATE * 3 // 10, dtype=np.float32)
    reps = int(np.ceil(n / (len(speech) + len(pause))))
    wav = np.concatenate([np.concatenate([speech, pause])] * reps)[:n]
    wav = wav / (np.abs(wav).max() + 1e-9) * 0.8
    write_wav(out_wav, wav, SAMPLE_RATE)
    return out_wav


def mouth_envelope(wav: np.ndarray, sr: int, fps: float, num_frames: int) -> np.ndarray:
    """Return the mouth opening [num_frames] in [0, 1] per video frame from the speech RMS envelope."""
    hop = sr / fps
    centres = (np.arange(num_frames) + 0.5) * hop
    half = round(hop)
    padded = np.pad(wav.astype(np.float64), half)
    cumsum = np.concatenate([[0.0], np.cumsum(padded**2)])
    start = np.clip(np.round(centres).astype(int), 0, len(wav))
    rms = np.sqrt((cumsum[start + 2 * half] - cumsum[start]) / (2 * half))
    rms = np.convolve(np.pad(rms, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")
    ref = np.percentile(rms, 95) + 1e-9
    return np.clip(rms / ref, 0.0, 1.0) ** 0.6


def _detect_landmarks(rgb: np.ndarray) -> np.ndarray:
    """Return the 478 face-mesh landmarks [478, 2] (pixels) of the face in `rgb` [H, W, 3] uint8."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as fm:
        result = fm.process(rgb)
    if not result.multi_face_landmarks:
        raise RuntimeError("MediaPipe found no face in the sample photograph")
    h, w = rgb.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)


def _portrait(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the astronaut photo cropped around the face [size, size, 3] uint8 and its landmarks [478, 2]."""
    from skimage import data

    photo = data.astronaut()
    lms = _detect_landmarks(photo)
    face_h = float(lms[:, 1].max() - lms[:, 1].min())
    side = round(min(2.8 * face_h, *photo.shape[:2]))
    x0 = int(np.clip(round(lms[:, 0].mean() - side / 2), 0, photo.shape[1] - side))
    y0 = int(np.clip(round(lms[:, 1].mean() + 0.25 * face_h - side / 2), 0, photo.shape[0] - side))
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    image = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if size < side else cv2.INTER_CUBIC)
    return image, (lms - np.array([x0, y0], dtype=np.float32)) * (size / side)


def _curve(lms: np.ndarray, idx: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Interpolate the landmark polyline `idx` at abscissae `xs` (same shape), constant beyond its ends."""
    pts = lms[idx]
    order = np.argsort(pts[:, 0])
    return np.interp(xs, pts[order, 0], pts[order, 1])


@dataclass
class _Rig:
    """Per-pixel vertical displacement fields of the canonical portrait and the mouth geometry."""

    mouth: np.ndarray  # [H, W] float32 displacement (px) for a fully open mouth
    blink: np.ndarray  # [H, W] float32 displacement (px) for fully closed eyes
    mouth_x: np.ndarray  # [K] abscissae across the inner mouth
    mouth_y: np.ndarray  # [K] mid-line of the inner lips
    lower_drop: np.ndarray  # [K] lower lip drop (px) when fully open
    upper_lift: np.ndarray  # [K] upper lip lift (px) when fully open


def _build_rig(lms: np.ndarray, size: int) -> _Rig:
    """Build displacement fields that open the jaw/lips and close the eyelids from the landmarks [478, 2]."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    x_left, x_right = lms[78, 0], lms[308, 0]
    half_w = (x_right - x_left) / 2
    u = (xs[0] - (x_left + x_right) / 2) / half_w
    lens = np.sqrt(np.clip(1.0 - u**2, 0.0, None))
    jaw = np.exp(-((u / 2.2) ** 4))
    mid = (_curve(lms, li.UPPER_LIP_INNER_CURVE, xs[0]) + _curve(lms, li.LOWER_LIP_INNER_CURVE, xs[0])) / 2
    s = ys - mid[None, :]
    drop, lift = 0.45 * half_w, 0.1 * half_w
    chin = max(float(lms[li.CHIN, 1] - mid[int(np.clip(lms[li.CHIN, 0], 0, size - 1))]), half_w)
    ramp = np.clip(s / (0.5 * half_w), 0.0, 1.0)
    fade = np.exp(-((np.clip(s - chin, 0.0, None) / (0.7 * chin)) ** 2))
    lower = drop * ((1.0 - ramp) * lens + ramp * jaw) * fade
    upper = -lift * lens * np.exp(-((s / (0.6 * half_w)) ** 2))
    mouth = np.where(s > 0, lower, upper).astype(np.float32)
    blink = np.zeros((size, size), dtype=np.float32)
    for upper_idx, lower_idx in zip(li.UPPER_EYELID_CURVES, li.LOWER_EYELID_CURVES, strict=True):
        lid_low = _curve(lms, lower_idx, xs[0])
        inside = (xs[0] > lms[upper_idx[0], 0]) & (xs[0] < lms[upper_idx[-1], 0])
        height = np.where(inside, np.clip(lid_low - _curve(lms, upper_idx, xs[0]), 0.0, None), 0.0)
        top = max(float(height.max()), 1.0)
        se = ys - lid_low[None, :]
        falloff = np.clip(1.0 + (se + top) / (2.0 * top), 0.0, 1.0)
        blink += np.where(se < 0, height[None, :] * falloff, 0.0).astype(np.float32)
    k = np.linspace(x_left, x_right, 25)
    ku = (k - (x_left + x_right) / 2) / half_w
    k_lens = np.sqrt(np.clip(1.0 - ku**2, 0.0, None))
    k_mid = (_curve(lms, li.UPPER_LIP_INNER_CURVE, k) + _curve(lms, li.LOWER_LIP_INNER_CURVE, k)) / 2
    return _Rig(mouth, blink, k, k_mid, drop * k_lens, lift * k_lens)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, amplitude: float) -> np.ndarray:
    """Return a smooth random signal [len(t)] of roughly `amplitude` built from three slow sinusoids."""
    freqs = rng.uniform(0.1, 0.6, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    weights = rng.uniform(0.5, 1.0, 3)
    wave = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])).sum(0)
    return amplitude * wave / weights.sum() * 1.5


def _blinks(rng: np.random.Generator, t: np.ndarray, seconds: float) -> np.ndarray:
    """Return eyelid closure [len(t)] in [0, 1]: about one blink every 2.5 s, each ~0.2 s long."""
    count = max(1, round(seconds / 2.5))
    times = (np.arange(count) + rng.uniform(0.3, 0.7, count)) * seconds / count
    return np.clip(sum(np.exp(-(((t - tb) / 0.06) ** 2)) for tb in times) * 1.2, 0.0, 1.0)


def _render_frame(
    image: np.ndarray,
    rig: _Rig,
    grid: tuple[np.ndarray, np.ndarray],
    pose: np.ndarray,
    mouth: float,
    eye: float,
) -> np.ndarray:
    """Warp `image` [S, S, 3] with mouth opening and eye closure in [0, 1] and head `pose` (2x3 affine)."""
    inverse = cv2.invertAffineTransform(pose)
    px = (inverse[0, 0] * grid[0] + inverse[0, 1] * grid[1] + inverse[0, 2]).astype(np.float32)
    py = (inverse[1, 0] * grid[0] + inverse[1, 1] * grid[1] + inverse[1, 2]).astype(np.float32)
    field = (mouth * rig.mouth + eye * rig.blink).astype(np.float32)
    dy = cv2.remap(field, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    out = cv2.remap(image, px, (py - dy).astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if mouth > 0.02:
        top = np.stack([rig.mouth_x, rig.mouth_y - mouth * rig.upper_lift], 1)
        bottom = np.stack([rig.mouth_x, rig.mouth_y + mouth * rig.lower_drop], 1)[::-1]
        poly = np.concatenate([top, bottom]) @ pose[:, :2].T + pose[:, 2]
        mask = np.zeros(image.shape[:2], dtype=np.float32)
        cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
        mask = cv2.GaussianBlur(mask, (3, 3), 0.7)[..., None]
        out = (out * (1.0 - mask) + CAVITY_RGB * mask).astype(np.uint8)
    return out


def _encode(frames: Iterable[np.ndarray], out_path: Path, fps: int, size: int, wav_path: Path) -> None:
    """Encode RGB frames (iterable of [size, size, 3] uint8) and `wav_path` into an H.264/AAC MP4."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo"]
    cmd += ["-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(fps), "-i", "-", "-i", str(wav_path)]
    cmd += ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18"]
    cmd += ["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-f", "mp4"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*cmd, str(out_path)], stdin=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None
        try:
            for frame in frames:
                proc.stdin.write(frame.tobytes())
        finally:
            proc.stdin.close()
            code = proc.wait()
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed to encode the sample: {err.read().decode(errors='replace')}")


def generate_sample(
    out_path: Path, seconds: float = 5.0, fps: int = 25, size: int = 512, seed: int = 0
) -> Path:
    """Write a talking-face MP4 (H.264 + AAC, size x size, `fps`, `seconds` long) to `out_path`; return it."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image, lms = _portrait(size)
    rig = _build_rig(lms, size)
    num_frames = round(seconds * fps)
    t = np.arange(num_frames) / fps
    scale = size / 512
    angle = _smooth_noise(rng, t, 2.0)
    shift_x, shift_y = _smooth_noise(rng, t, 4.0 * scale), _smooth_noise(rng, t, 3.0 * scale)
    eyes = _blinks(rng, t, seconds)
    centre = tuple(float(v) for v in lms.mean(0))
    grid = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".mp4", dir=out_path.parent)
    os.close(fd)
    tmp_video = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wav_path = generate_speech(Path(tmp) / "speech.wav", seconds, seed=seed)
            mouth = mouth_envelope(load_audio(wav_path, SAMPLE_RATE), SAMPLE_RATE, fps, num_frames)
            poses = [cv2.getRotationMatrix2D(centre, float(a), 1.0) for a in angle]
            for pose, dx, dy in zip(poses, shift_x, shift_y, strict=True):
                pose[:, 2] += (dx, dy)
            frames = (
                _render_frame(image, rig, grid, poses[i], float(mouth[i]), float(eyes[i]))
                for i in range(num_frames)
            )
            _encode(frames, tmp_video, fps, size, wav_path)
        os.replace(tmp_video, out_path)
    finally:
        tmp_video.unlink(missing_ok=True)
    return out_path


def main(argv: list[str] | None = None) -> int:
    """CLI: write the built-in sample talking-head clip to an MP4 file."""
    parser = ArgumentParser(
        prog="python -m data_utils.sample",
        description="Generate the built-in sample clip: a photo of a real face speaking generated speech.",
    )
    parser.add_argument("out", type=Path, help="output video file (.mp4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="clip length in seconds (default 5)")
    parser.add_argument(
        "--size", type=int, default=512, help="frame width and height in pixels (default 512)"
    )
    parser.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed for head motion and blinks (default 0)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        raise UserError(f"output '{args.out}' already exists; pass --force to overwrite it")
    if args.seconds <= 0 or args.fps <= 0 or args.size < 64:
        raise UserError("need --seconds > 0, --fps > 0 and --size >= 64")
    generate_sample(args.out, seconds=args.seconds, fps=args.fps, size=args.size, seed=args.seed)
    print(args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
