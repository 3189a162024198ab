"""data_utils.silence: FFT-window levels streamed chunk by chunk equal those of the whole clip, silent frames
are those whose whole feature window is quiet, the quietest training frame, and the rest window replacing
silent frames' audio."""

from __future__ import annotations

import numpy as np
import torch

from data_utils.audio_io import SAMPLE_RATE
from data_utils.silence import (
    SILENCE_DB,
    fft_frame_db,
    quietest_frame,
    silent_frames,
    step_centres,
    stream_step_db,
)
from scene.prediction import rest_on_silence

FPS = 25.0


def speech_pause_speech(rng: np.random.Generator) -> np.ndarray:
    """1 s of loud noise, 1 s of -70 dBFS hiss, 1 s of loud noise at 16 kHz."""
    loud = lambda: rng.normal(0, 0.1, SAMPLE_RATE)  # noqa: E731  (-20 dBFS)
    return np.concatenate([loud(), rng.normal(0, 10 ** (-70 / 20), SAMPLE_RATE), loud()]).astype(np.float32)


def test_streamed_levels_equal_the_whole_clip_and_pauses_are_silent() -> None:
    wav = speech_pause_speech(np.random.default_rng(0))
    steps = round(len(wav) / SAMPLE_RATE * FPS) * 2
    whole = fft_frame_db(wav, step_centres(np.arange(steps), FPS))
    for size in (317, 4000, len(wav)):  # chunks shorter than an FFT window, longer, and the whole clip
        chunks = (wav[a : a + size] for a in range(0, len(wav), size))
        streamed = stream_step_db(chunks, FPS)
        assert len(streamed) == steps + 1  # the last window overlaps the clip's end
        np.testing.assert_allclose(streamed[:steps], whole)
    for fps in (4.0, 10.0):  # steps further apart than an FFT window: whole chunks fall between them
        low = fft_frame_db(wav, step_centres(np.arange(round(3 * fps) * 2), fps))
        chunks = (wav[a : a + 317] for a in range(0, len(wav), 317))
        np.testing.assert_allclose(stream_step_db(chunks, fps)[: len(low)], low)
    silent = silent_frames(whole, window=16, num_frames=75)
    assert silent.shape == (75,)
    assert silent[30:45].all()  # inside the pause, windows (320 ms) included
    assert not silent[:20].any() and not silent[55:].any()
    assert not silent[24:26].any()  # a window that reaches into speech is not silent
    assert whole[20] > SILENCE_DB > whole[75]  # steps at 0.4 s (speech) and 1.5 s (pause)


def test_quietest_frame_and_rest_window_replace_only_silent_frames() -> None:
    wav = speech_pause_speech(np.random.default_rng(1))
    aud_ids = list(range(75))
    assert 30 <= quietest_frame(wav, aud_ids, FPS) < 45
    segments = [torch.randn(4, 3, 8), torch.randn(3, 3, 8)]
    silent = np.array([False, True, False, False, True, True, False])
    rest = torch.full((3, 8), 7.0)
    out = torch.cat(list(rest_on_silence([s.clone() for s in segments], silent, rest)))
    original = torch.cat(segments)
    assert torch.equal(out[torch.from_numpy(silent)], rest.expand(3, 3, 8))
    assert torch.equal(out[~torch.from_numpy(silent)], original[~torch.from_numpy(silent)])
