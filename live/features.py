"""Online audio features for live streams: the checkpoint's extractor computed as audio arrives, each frame's
window emitted as soon as its bounded look-ahead is in, normalised as in training.

logmel is computed step by step (the offline extractor's per-clip normalisation becomes a running one, started
from the reference clip's statistics); every other extractor (phonemes, HuBERT, wav2vec2, DeepSpeech) runs
block by block over a sliding context.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from data_utils.audio_features import (
    STEPS_PER_FRAME,
    AudioFeatureExtractor,
    LogMelExtractor,
    get_extractor,
    log_mel,
    normalise_windows,
    step_times,
    window_offsets,
    window_steps,
)
from data_utils.audio_io import SAMPLE_RATE
from data_utils.silence import N_FFT, fft_frame_db, step_centres
from live.extract_pool import ExtractPool, holds_gil

PRIOR_SECONDS = 5.0  # weight of the reference clip's log-mel statistics in the running normalisation
BLOCK_SECONDS = 0.5  # audio per extraction of a block-wise online extractor (all but logmel)


@dataclass
class FeatureBlock:
    """Windows of consecutive frames from `first` on: features [k,C,W] normalised with the checkpoint's
    statistics, and the loudest level (dBFS) of the audio each window covers [k]."""

    first: int
    windows: np.ndarray
    level_db: np.ndarray

    def __len__(self) -> int:
        return len(self.windows)


class OnlineFeatures(Protocol):
    """Feature stream of one live audio stream (16 kHz mono float32)."""

    lookahead_s: float

    def push(self, samples: np.ndarray) -> FeatureBlock:
        """Add samples [n]; return the frames whose look-ahead is now complete."""
        ...

    def finish(self) -> FeatureBlock:
        """End of the stream: return the remaining frames (round(duration * fps) frames in all)."""
        ...


def logmel_prior(extractor: LogMelExtractor, wav: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Return per-channel (mean [C], std [C]) of the raw log-mel steps of the reference clip `wav` [n]."""
    n_frames = round(len(wav) / SAMPLE_RATE * fps)
    centres = step_times(max(n_frames, 1), fps) * SAMPLE_RATE
    mel = log_mel(wav, SAMPLE_RATE, centres, extractor.n_fft, extractor.n_mels)
    return mel.mean(0), mel.std(0)


class RunningNorm:
    """Per-channel standardisation of log-mel steps by the statistics of every step seen so far, started from
    a prior (mean [C], std [C]) worth `weight` steps; the online stand-in for the extractor's per-clip one."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, weight: float) -> None:
        mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        self.count, self.total, self.total_sq = weight, mean * weight, (std**2 + mean**2) * weight

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """Add steps [k,C] to the statistics; return them standardised [k,C] float32."""
        mel = np.asarray(mel, dtype=np.float64)
        self.count += len(mel)
        self.total += mel.sum(0)
        self.total_sq += np.square(mel).sum(0)
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.total_sq / self.count - mean**2, 0.0))
        return ((mel - mean) / (std + 1e-5)).astype(np.float32)


class OnlineLogMel:
    """LogMelExtractor computed online: steps as soon as their FFT window is in, frames as soon as their
    window's last step is; each step standardised by `step_norm` (a RunningNorm in live use)."""

    def __init__(
        self,
        extractor: LogMelExtractor,
        fps: float,
        norm: dict,
        step_norm: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.ex, self.fps, self.norm, self.step_norm = extractor, fps, norm, step_norm
        self.half = extractor.n_fft // 2
        self.offsets = window_offsets(extractor.window)
        self.buffer, self.buffer_start = np.zeros(0, np.float32), 0  # buffer[0] is sample buffer_start
        self.received = 0
        self.steps = np.zeros((0, extractor.n_mels), np.float32)  # normalised steps from steps_start on
        self.step_db = np.zeros(0)
        self.steps_start = 0
        self.next_frame = 0
        last = extractor.window // 2  # the window's last step, relative to 2 * frame
        self.lookahead_s = (last + 0.5) / (STEPS_PER_FRAME * fps) + self.half / SAMPLE_RATE

    def centre(self, step: np.ndarray | int) -> np.ndarray:
        """Return the centre sample (rounded as log_mel rounds it) of feature step(s) `step`."""
        return step_centres(step, self.fps)

    def push(self, samples: np.ndarray) -> FeatureBlock:
        """Add samples [n] (16 kHz, float32 in [-1,1]); return the frames now complete."""
        samples = np.asarray(samples, dtype=np.float32)
        self.buffer = np.concatenate([self.buffer, samples])
        self.received += len(samples)
        done = self.steps_start + len(self.steps)
        ready = done
        while self.centre(ready) + self.half <= self.received:
            ready += 1
        self.add_steps(np.arange(done, ready))
        frames = self.frames_with_last_step(self.steps_start + len(self.steps) - 1)
        return self.emit(frames, len(self.steps) + self.steps_start - 1)

    def finish(self) -> FeatureBlock:
        """Return the remaining frames of the stream, its end zero-padded as the offline extractor pads it."""
        total = round(self.received / SAMPLE_RATE * self.fps)
        done = self.steps_start + len(self.steps)
        self.add_steps(np.arange(done, total * STEPS_PER_FRAME))
        return self.emit(total, total * STEPS_PER_FRAME - 1)

    def frames_with_last_step(self, last_step: int) -> int:
        """Return the number of frames whose whole window lies in steps <= last_step."""
        return max(0, (last_step - int(self.offsets[-1])) // STEPS_PER_FRAME + 1)

    def add_steps(self, steps: np.ndarray) -> None:
        """Compute, normalise and store the log-mel steps `steps` (consecutive indices)."""
        if len(steps) == 0:
            return
        centres = self.centre(steps) - self.buffer_start
        mel = log_mel(self.buffer, SAMPLE_RATE, centres, self.ex.n_fft, self.ex.n_mels)
        self.steps = np.concatenate([self.steps, self.step_norm(mel)])
        self.step_db = np.concatenate([self.step_db, self.levels(centres)])
        keep = int(self.centre(steps[-1] + 1)) - self.half - self.buffer_start
        if keep > 0:
            self.buffer, self.buffer_start = self.buffer[keep:], self.buffer_start + keep

    def levels(self, centres: np.ndarray) -> np.ndarray:
        """Return the dBFS [k] of the FFT windows centred on `centres` (samples of the buffer)."""
        return fft_frame_db(self.buffer, centres, self.ex.n_fft)

    def emit(self, stop: int, last_step: int) -> FeatureBlock:
        """Return the windows of frames next_frame..stop-1 (steps clipped to [0, last_step]); drop the steps
        no later frame needs."""
        first = self.next_frame
        frames = np.arange(first, max(first, stop))
        idx = (
            np.clip(frames[:, None] * STEPS_PER_FRAME + self.offsets[None, :], 0, last_step)
            - self.steps_start
        )
        windows = self.steps[idx].transpose(0, 2, 1)
        level = self.step_db[idx].max(axis=1) if len(frames) else np.zeros(0)
        self.next_frame = max(first, stop)
        drop = max(0, self.next_frame * STEPS_PER_FRAME + int(self.offsets[0]) - self.steps_start)
        drop = min(drop, len(self.steps) - 1) if len(self.steps) else 0
        self.steps, self.step_db, self.steps_start = (
            self.steps[drop:],
            self.step_db[drop:],
            self.steps_start + drop,
        )
        return FeatureBlock(first, normalise_windows(np.ascontiguousarray(windows), self.norm), level)


class BlockFeatures:
    """Any offline extractor run online block by block: frames [a,b) are extracted from the audio of frames
    [a - context, b + lookahead] and the middle kept, so each frame sees a bounded look-ahead. A block lasts
    BLOCK_SECONDS: every block decodes its context again (pocketsphinx: 0.1-0.25 s of CPU for a block and its
    second of context), so shorter blocks would cost more CPU per second of audio. `extractor` may be an
    ExtractPool, which runs it in worker processes."""

    def __init__(
        self,
        extractor: AudioFeatureExtractor | ExtractPool,
        fps: float,
        norm: dict,
        window: int,
        context_s: float = 1.0,
    ) -> None:
        self.ex, self.fps, self.norm, self.window = extractor, fps, norm, window
        block_frames = max(1, round(BLOCK_SECONDS * fps))
        self.block, self.context = block_frames, round(context_s * fps)
        self.ahead = int(window_offsets(window)[-1]) // STEPS_PER_FRAME + 1  # frames of look-ahead
        self.samples_per_frame = SAMPLE_RATE / fps
        self.buffer, self.buffer_start = np.zeros(0, np.float32), 0
        self.received = 0
        self.next_frame = 0
        self.lookahead_s = (block_frames + self.ahead) / fps

    def sample(self, frame: int) -> int:
        """Return the first sample of frame `frame`."""
        return round(frame * self.samples_per_frame)

    def push(self, samples: np.ndarray) -> FeatureBlock:
        """Add samples [n]; return the whole blocks whose look-ahead is now complete."""
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, dtype=np.float32)])
        self.received += len(samples)
        blocks = []
        while self.sample(self.next_frame + self.block + self.ahead) <= self.received:
            blocks.append(
                self.extract(self.next_frame + self.block, self.next_frame + self.block + self.ahead)
            )
        return join_blocks(self.next_frame, blocks)

    def finish(self) -> FeatureBlock:
        """Return the remaining frames (round(duration * fps) in all)."""
        total = round(self.received / SAMPLE_RATE * self.fps)
        start = self.next_frame
        return join_blocks(start, [self.extract(total, total)] if total > start else [])

    def extract(self, stop: int, audio_stop: int) -> FeatureBlock:
        """Extract frames next_frame..stop-1 from the audio of frames [next_frame - context, audio_stop)."""
        first = self.next_frame
        lo = max(0, first - self.context)
        a, b = self.sample(lo) - self.buffer_start, self.sample(audio_stop) - self.buffer_start
        wav = self.buffer[a:b]
        feats = self.ex.extract(wav, SAMPLE_RATE, self.fps, audio_stop - lo)[first - lo : stop - lo]
        level = self.frame_levels(first, stop)
        self.next_frame = stop
        keep = self.sample(max(0, stop - self.context)) - self.buffer_start
        self.buffer, self.buffer_start = self.buffer[keep:], self.buffer_start + keep
        return FeatureBlock(first, normalise_windows(feats, self.norm), level)

    def frame_levels(self, first: int, stop: int) -> np.ndarray:
        """Return the level [stop - first] of frames first..stop-1: the loudest FFT window (N_FFT samples) at
        the steps of each frame's window, as data_utils.silence defines it for predict.sh."""
        steps = window_steps(np.arange(first, stop), self.window, np.iinfo(np.int64).max)
        centres = step_centres(steps.ravel(), self.fps) - self.buffer_start
        return fft_frame_db(self.buffer, centres, N_FFT).reshape(steps.shape).max(axis=1)


def join_blocks(first: int, blocks: list[FeatureBlock]) -> FeatureBlock:
    """Return consecutive blocks as one (empty from frame `first` when there are none)."""
    if not blocks:
        return FeatureBlock(first, np.zeros((0, 0, 0), np.float32), np.zeros(0))
    return FeatureBlock(
        blocks[0].first,
        np.concatenate([b.windows for b in blocks]),
        np.concatenate([b.level_db for b in blocks]),
    )


class FeatureFactory:
    """Makes the online feature streams of one checkpoint: its extractor and normalisation, with the log-mel
    prior computed once from the reference clip. Log-mel runs step by step (OnlineLogMel), every other
    extractor (phonemes, hubert, wav2vec2, deepspeech) block by block (BlockFeatures); UserError when the
    extractor's model is missing, as offline. An extractor that holds the GIL (phonemes, visemes) runs in
    `workers` processes shared by all streams when `workers` > 0 (else in the calling thread)."""

    def __init__(
        self, spec: dict, norm: dict, fps: float, reference_wav: np.ndarray, workers: int = 0
    ) -> None:
        self.name, self.norm, self.fps = spec["name"], norm, fps
        self.extractor = get_extractor(self.name, **spec.get("settings", {}))
        self.prior = (
            logmel_prior(self.extractor, reference_wav, fps)
            if isinstance(self.extractor, LogMelExtractor)
            else None
        )
        pooled = workers > 0 and holds_gil(self.extractor)
        self.pool = ExtractPool(self.extractor, workers) if pooled else None
        self.lookahead_s = self.new().lookahead_s

    def new(self) -> OnlineFeatures:
        """Return a fresh feature stream (one per live stream)."""
        if self.prior is not None:
            weight = PRIOR_SECONDS * self.fps * STEPS_PER_FRAME
            return OnlineLogMel(self.extractor, self.fps, self.norm, RunningNorm(*self.prior, weight))
        return BlockFeatures(self.pool or self.extractor, self.fps, self.norm, int(self.extractor.window))

    def close(self) -> None:
        """Stop the extractor's worker processes, if it has them."""
        if self.pool is not None:
            self.pool.close()

    @property
    def lookahead_ms(self) -> int:
        """The look-ahead in whole milliseconds (rounded up)."""
        return math.ceil(self.lookahead_s * 1000)
