"""Streaming resampling of PCM chunks to the model's 16 kHz: polyphase filtering (scipy's resample_poly) on
blocks with a little context either side, so the concatenated output equals resampling the whole signal."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy import signal

from data_utils.audio_io import SAMPLE_RATE

MIN_RATE, MAX_RATE = 8000, 48000
CONTEXT = 256  # input samples of context either side of a block: more than the filter's half length


class StreamResampler:
    """Resample a stream of float32 chunks from `rate` Hz to SAMPLE_RATE with a delay of about CONTEXT
    input samples (5 ms at 48 kHz)."""

    def __init__(self, rate: int) -> None:
        """Set up for input at `rate` Hz (MIN_RATE..MAX_RATE); ValueError outside that range."""
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"sample rate must be {MIN_RATE}-{MAX_RATE} Hz, got {rate}")
        g = gcd(rate, SAMPLE_RATE)
        self.up, self.down = SAMPLE_RATE // g, rate // g
        self.context = -(-CONTEXT // self.down) * self.down  # a multiple of `down`: whole output samples
        self.buffer = np.zeros(self.context, np.float32)  # zeros before the start, as resample_poly assumes
        self.done = 0  # input samples of the stream already turned into output

    def _emit(self, end: int) -> np.ndarray:
        """Output for the input samples [done, end) of the stream (end - done a multiple of `down`)."""
        if end <= self.done:
            return np.zeros(0, np.float32)
        start = self.done  # buffer[0] is stream sample done - context
        block = self.buffer[: end - start + 2 * self.context]
        out = signal.resample_poly(block, self.up, self.down).astype(np.float32)
        skip = self.context * self.up // self.down
        out = out[skip : skip + (end - start) * self.up // self.down]
        self.buffer = self.buffer[end - start :]
        self.done = end
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input samples [n]; return the output samples [m] now final."""
        self.buffer = np.concatenate([self.buffer, np.asarray(samples, np.float32)])
        available = self.done + len(self.buffer) - 2 * self.context  # input with full context after it
        return self._emit(self.done + max(available - self.done, 0) // self.down * self.down)

    def finish(self) -> np.ndarray:
        """Return the rest of the output, the stream's end padded with zeros."""
        total = self.done + len(self.buffer) - self.context
        rest = total - self.done
        padded = -(-rest // self.down) * self.down
        self.buffer = np.concatenate([self.buffer, np.zeros(padded - rest + self.context, np.float32)])
        out = self._emit(self.done + padded)
        return out[: -(-rest * self.up // self.down)] if rest else out
