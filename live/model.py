"""The avatar and reference data a live server holds once and shares between its streams, and the batched
render of frame jobs from any number of streams."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from live.extract_pool import default_feature_workers
from live.features import FeatureFactory, OnlineFeatures
from scene.checkpoint import load_avatar
from scene.inference import InferenceRenderer, to_uint8
from scene.pose_correction import corrected_if_matching
from scene.prediction import (
    check_audio_shape,
    check_reference,
    novel_batches,
    reference_dataset,
    reference_wav,
    rest_window,
)


@dataclass
class FrameJob:
    """One frame to render: its index in the stream, normalised audio window [C,W], eye openness, camera
    c2w [4,4], training frame of the torso/background, and when its audio was complete (perf_counter)."""

    index: int
    audio: np.ndarray
    eye: float
    c2w: np.ndarray
    torso: int
    ready_at: float


class LiveModel:
    """A trained avatar loaded once for live use: renderer, reference backgrounds and cameras, training eye
    series, the reference clip (prior of the online feature normalisation) and the rest (silent) window."""

    def __init__(
        self,
        model_path: Path,
        reference_path: Path,
        device: torch.device,
        iteration: int | None = None,
        bf16: bool = False,
        compile: bool = False,
        force: bool = False,
        feature_workers: int | None = None,
    ) -> None:
        reference_path = Path(reference_path)
        loaded = load_avatar(model_path, iteration, device)
        loaded.avatar.eval()
        check_reference(loaded, reference_path, force)
        self.loaded, self.device = loaded, device
        self.fps = float(loaded.dataset_meta["fps"])
        self.reference_wav = reference_wav(reference_path)
        self.feature_factory = FeatureFactory(
            loaded.audio_extractor,
            loaded.audio_norm,
            self.fps,
            self.reference_wav,
            default_feature_workers(device) if feature_workers is None else feature_workers,
        )
        self.ref = reference_dataset(loaded, reference_path, device)
        check_audio_shape(loaded.avatar, self.ref.audio_shape, f"dataset '{reference_path}'")
        self.size = self.ref.size
        viewmats = corrected_if_matching(self.ref.viewmats, loaded.pose_corrections)
        self.c2w_train = torch.linalg.inv(viewmats).cpu().numpy()
        self.centre = loaded.avatar.gaussians.means.detach().median(dim=0).values.cpu().numpy()
        self.train_eye = self.ref.eyes[:, 0].cpu().numpy()
        self.rest_window = rest_window(self.ref, reference_path, self.reference_wav).cpu().numpy()
        self.renderer = InferenceRenderer(loaded.avatar, bf16=bf16, compile=compile)
        if not compile:  # build the kernels (CUDA's fused RBF included) before the first stream, not in it
            self.render([FrameJob(0, self.rest_window, 1.0, self.c2w_train[0], 0, 0.0)])

    @property
    def extractor(self) -> str:
        """Name of the audio extractor the model was trained with."""
        return self.loaded.audio_extractor["name"]

    def close(self) -> None:
        """Stop the feature worker processes (phonemes and visemes models have them)."""
        self.feature_factory.close()

    def features(self) -> OnlineFeatures:
        """Return a fresh online feature stream with the checkpoint's extractor and normalisation."""
        return self.feature_factory.new()

    def render(self, jobs: list[FrameJob]) -> np.ndarray:
        """Render the frames of `jobs` (from any streams) in one batch; return uint8 images [B,H,W,3]."""
        audio = torch.from_numpy(np.stack([j.audio for j in jobs]))
        c2w = np.stack([j.c2w for j in jobs]).astype(np.float32)
        torso = np.array([j.torso for j in jobs], dtype=np.int64)
        eye = np.array([j.eye for j in jobs], dtype=np.float32)
        batch = next(novel_batches(self.ref, c2w, torso, [audio], eye, len(jobs)))
        with torch.inference_mode():
            return to_uint8(self.renderer(batch))
