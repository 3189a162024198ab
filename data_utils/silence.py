"""Silence in driving audio, one definition for predict.sh and the live server: a frame is silent when every
FFT window (512 samples) of its feature window is quieter than SILENCE_DB; silent frames are driven by the
rest window, the audio features of the quietest moment of the training clip (a still, closed mouth)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from data_utils.audio_features import STEPS_PER_FRAME, window_steps
from data_utils.audio_io import SAMPLE_RATE

SILENCE_DB = -45.0  # a frame whose loudest FFT window is quieter than this (dBFS) is silence: rest mouth
SILENT_DB = -120.0  # level reported for digital silence
N_FFT = 512  # samples of the FFT windows whose levels are compared (the log-mel extractor's)
REST_SPAN_S = 0.15  # audio either side of a training frame counted when looking for the quietest one


def to_db(power: np.ndarray) -> np.ndarray:
    """Return mean-square power [...] of samples in [-1,1] as dBFS (SILENT_DB for digital silence)."""
    return np.where(power > 1e-12, 10.0 * np.log10(np.maximum(power, 1e-12)), SILENT_DB)


def step_centres(steps: np.ndarray | int, fps: float) -> np.ndarray:
    """Return the centre sample (rounded as log_mel rounds it) of feature step(s) `steps` at `fps`."""
    return np.round((np.asarray(steps) + 0.5) / (STEPS_PER_FRAME * fps) * SAMPLE_RATE).astype(np.int64)


def fft_frame_db(wav: np.ndarray, centres: np.ndarray, n_fft: int = N_FFT) -> np.ndarray:
    """Return the dBFS [k] of the n_fft-sample windows of `wav` [n] centred on samples `centres` [k] (zero
    beyond the ends, as log_mel pads)."""
    half = n_fft // 2
    right = max(0, int(np.max(centres, initial=0)) + n_fft - half - len(wav))
    padded = np.pad(np.asarray(wav, dtype=np.float32), (half, right))
    frames = padded[np.asarray(centres)[:, None] + np.arange(n_fft)[None, :]]
    return to_db(np.square(frames, dtype=np.float64).mean(1))


def steps_through(sample: int, fps: float) -> int:
    """Return how many feature steps at `fps` (from step 0) are centred on or before `sample`."""
    k = max(0, int((sample / SAMPLE_RATE) * STEPS_PER_FRAME * fps - 0.5))  # within one of the answer
    while k > 0 and step_centres(k - 1, fps) > sample:
        k -= 1
    while step_centres(k, fps) <= sample:
        k += 1
    return k


def stream_step_db(chunks: Iterable[np.ndarray], fps: float, n_fft: int = N_FFT) -> np.ndarray:
    """Return fft_frame_db [k] at every feature step whose FFT window overlaps a clip arriving as 16 kHz
    `chunks` [n_i], holding one chunk and one FFT window of audio at a time; equal to fft_frame_db of the
    whole clip at those steps (later steps would be digital silence)."""
    half = n_fft // 2
    parts = [np.zeros(0)]
    buffer, start, k = np.zeros(0, np.float32), 0, 0  # buffer[0] is sample `start` of the clip
    for chunk in chunks:
        buffer = np.concatenate([buffer, np.asarray(chunk, np.float32)])
        ready = steps_through(start + len(buffer) - (n_fft - half), fps)
        if ready > k:
            parts.append(fft_frame_db(buffer, step_centres(np.arange(k, ready), fps) - start, n_fft))
            k = ready
        cut = min(len(buffer), max(0, int(step_centres(k, fps)) - half - start))  # the next window's start
        buffer, start = buffer[cut:], start + cut
    last = steps_through(start + len(buffer) + half - 1, fps)  # windows that still reach the clip
    if last > k:
        parts.append(fft_frame_db(buffer, step_centres(np.arange(k, last), fps) - start, n_fft))
    return np.concatenate(parts)


def silent_frames(step_db: np.ndarray, window: int, num_frames: int) -> np.ndarray:
    """Return which of `num_frames` frames [num_frames] are silent: every step of their window is quieter
    than SILENCE_DB (steps past the end of `step_db` [k] count as digital silence)."""
    steps = num_frames * STEPS_PER_FRAME
    db = np.concatenate([step_db[:steps], np.full(max(0, steps - len(step_db)), SILENT_DB)])
    return db[window_steps(np.arange(num_frames), window, steps)].max(axis=1) < SILENCE_DB


def quietest_frame(wav: np.ndarray, aud_ids: list[int], fps: float) -> int:
    """Return the position in `aud_ids` of the training frame whose audio in `wav` [n] is the quietest."""
    per_frame = SAMPLE_RATE / fps
    span = round(REST_SPAN_S * SAMPLE_RATE)
    levels = []
    for a in aud_ids:
        lo, hi = max(0, round(a * per_frame) - span), round((a + 1) * per_frame) + span
        piece = wav[lo:hi]
        levels.append(float(to_db(np.square(piece, dtype=np.float64).mean())) if len(piece) else np.inf)
    return int(np.argmin(levels))
