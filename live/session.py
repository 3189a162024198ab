"""The streaming state of one connection: online features, frame clock, camera path and blinks; turns audio
as it arrives into frame jobs for the render engine."""

from __future__ import annotations

import math
import time

import numpy as np

from data_utils.silence import SILENCE_DB
from live.features import FeatureBlock
from live.model import FrameJob, LiveModel
from utils.blink import synth_eye_track
from utils.camera_path import CAMERA_MODES, camera_path
from utils.cli import UserError

CAMERA_LOOP_SECONDS = 60.0  # camera poses are computed for this long and repeated (orbit: 10 periods)
EYE_BLOCK_SECONDS = 600.0  # blinks are synthesised this far ahead at a time


def camera_loop(model: LiveModel, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the repeating camera poses [L,4,4] and torso frames [L] of `mode` (cycle: whole back-and-forth
    periods, so the loop is seamless)."""
    if mode not in CAMERA_MODES:
        raise UserError(f"unknown camera mode '{mode}'; choose one of {', '.join(CAMERA_MODES)}")
    period = max(1, 2 * (len(model.c2w_train) - 1)) if mode == "cycle" else 1
    length = period * math.ceil(CAMERA_LOOP_SECONDS * model.fps / period)
    return camera_path(mode, model.c2w_train, length, model.fps, model.centre)


class StreamSession:
    """One live stream: push 16 kHz mono audio, get the frame jobs whose look-ahead is complete."""

    def __init__(
        self, model: LiveModel, camera_mode: str = "cycle", seed: int = 0, silence_db: float = SILENCE_DB
    ) -> None:
        self.model, self.seed, self.silence_db = model, seed, silence_db
        self.features = model.features()
        self.camera_mode = camera_mode
        self.c2w, self.torso = camera_loop(model, camera_mode)
        self.eye_frames = round(EYE_BLOCK_SECONDS * model.fps)
        self.eye_block, self.eye = -1, np.zeros(0, np.float32)
        self.samples = 0
        self.frames = 0

    @property
    def lookahead_s(self) -> float:
        """Audio (s) after a frame's start that must have arrived before the frame can be rendered."""
        return self.features.lookahead_s

    def set_camera(self, mode: str) -> None:
        """Switch the camera path from the next frame on; UserError for an unknown mode."""
        self.c2w, self.torso = camera_loop(self.model, mode)
        self.camera_mode = mode

    def push(self, samples: np.ndarray) -> list[FrameJob]:
        """Add audio samples [n] (16 kHz, float32 in [-1,1]); return the frames now ready to render."""
        self.samples += len(samples)
        return self.jobs(self.features.push(samples))

    def finish(self) -> list[FrameJob]:
        """End of the audio: return the remaining frames (round(seconds * fps) in all)."""
        return self.jobs(self.features.finish())

    def eye_at(self, index: int) -> float:
        """Return the synthetic eye openness of frame `index` (blinks at the training rate and shape)."""
        block = index // self.eye_frames
        if block != self.eye_block:
            self.eye = synth_eye_track(
                self.model.train_eye, self.eye_frames, self.model.fps, self.seed + block
            )
            self.eye_block = block
        return float(self.eye[index % self.eye_frames])

    def jobs(self, block: FeatureBlock) -> list[FrameJob]:
        """Turn a block of feature windows into frame jobs; windows of silence become the rest window."""
        now = time.perf_counter()
        jobs = []
        for k in range(len(block)):
            index = block.first + k
            silent = block.level_db[k] < self.silence_db
            pose = index % len(self.c2w)
            jobs.append(
                FrameJob(
                    index=index,
                    audio=self.model.rest_window if silent else block.windows[k],
                    eye=self.eye_at(index),
                    c2w=self.c2w[pose],
                    torso=int(self.torso[pose]),
                    ready_at=now,
                )
            )
        self.frames += len(jobs)
        return jobs
