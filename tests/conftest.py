"""Session-wide fixtures shared by every test file: the generated sample clip and a speech WAV."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_utils.sample import generate_sample, generate_speech


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> None:
    """Keep torch on one thread: the test machine is small and shared."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s, 25 fps, 192x192 talking-face MP4 with speech audio."""
    return generate_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", seconds=3.0, fps=25, size=192)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2.0 s of generated speech: 16 kHz mono PCM16 WAV."""
    return generate_speech(tmp_path_factory.mktemp("speech") / "speech.wav", seconds=2.0)
