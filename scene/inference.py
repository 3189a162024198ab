"""Rendering a trained avatar for inference: the renderer (cached tri-plane features, bf16, torch.compile) and
the loop that streams its frames to a video writer with timings. Used by predict.sh, render_direct.sh and
bench.render_speed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gaussian_renderer import render
from scene.avatar import Avatar
from scene.dataset import FrameBatch
from scene.deformation import Deltas, Spatial, mean_lips
from scene.kan import fuse_rbf
from scene.stacked_lips import stacked_lip_predictors
from utils.video_out import VideoWriter


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Return images [B,H,W,3] in [0,1] as uint8 numpy [B,H,W,3] on the CPU."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


class InferenceRenderer:
    """Renders FrameBatches for inference: the avatar's deformation network and rasterizer, with the tri-plane
    features of the fixed canonical Gaussians computed once (`cache`), optionally bf16 autocast and
    torch.compile. With `fuse` on CUDA without `compile`, the KAN heads' RBF expansion runs as one compiled
    kernel (fuse_rbf; a few seconds to build at the first frame); training never fuses, since densification
    changes the shapes. With `fuse`, an audio_code 'lips' model's lip predictors also run as one
    (StackedLipPredictors). cache=False, fuse=False renders as training and validation do. With `tracked_lips`
    (audio_code 'lips' models) the batches' tracked lip measures drive the mouth instead of the audio's
    prediction of them, as in training."""

    def __init__(
        self,
        avatar: Avatar,
        bf16: bool = False,
        cache: bool = True,
        compile: bool = False,
        fuse: bool = True,
        tracked_lips: bool = False,
    ) -> None:
        self.avatar = avatar
        self.tracked_lips = tracked_lips
        on_cuda = next(avatar.parameters()).is_cuda
        self.amp = bf16 and on_cuda
        deform = avatar.deform
        fuse_rbf(deform, fuse and on_cuda and not compile)
        stack = fuse and deform.cfg.audio_code == "lips" and not tracked_lips
        self.lip_predictors = stacked_lip_predictors(deform) if stack else None
        self.forward = (
            torch.compile(deform.forward_with_features) if compile else deform.forward_with_features
        )
        self.compiled = compile
        self.batch_size: int | None = None
        self.features = self.spatial_features() if cache else None

    def spatial_features(self) -> Spatial:
        """Return the spatial features (tri-plane [N,D], attention bias) of the canonical Gaussians."""
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            return self.avatar.deform.spatial_features(self.avatar.gaussians.params["means"])

    def deltas(self, batch: FrameBatch) -> Deltas:
        """Return the per-frame offsets [B,N,...] (float32) for the batch's audio (or tracked lips), eye and
        camera."""
        spatial = self.features if self.features is not None else self.spatial_features()
        if self.tracked_lips and batch.lips is None:
            raise ValueError("tracked_lips needs batches that carry lip measures (dataset loaded with lips)")
        lips = self.lip_code(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            d = self.forward(spatial, batch.audio, batch.eye, batch.cam, lips)
        return Deltas(*(t.float() for t in (d.d_xyz, d.d_rot, d.d_scale, d.d_opacity, d.d_color)))

    def lip_code(self, batch: FrameBatch) -> Tensor | None:
        """The standardised lip measures [B,3] (LIP_MEASURES) that drive the batch's mouth, in the dtype the
        deformation reads them (bf16 under --bf16): the tracked ones with `tracked_lips`, else predicted from
        its audio; None for an audio_code 'free' model."""
        if self.avatar.deform.cfg.audio_code != "lips":
            return None
        if self.tracked_lips:
            return batch.lips
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            if self.lip_predictors is not None:
                return mean_lips(self.lip_predictors(batch.audio))
            return self.avatar.deform.predict_lips(batch.audio)

    def __call__(self, batch: FrameBatch) -> Tensor:
        """Return the rendered images [B,H,W,3] over batch.background; a compiled network sees one batch size
        (shorter batches are padded) so it compiles once."""
        n = batch.viewmat.shape[0]
        self.batch_size = self.batch_size or n
        if self.compiled and n < self.batch_size:
            batch = pad_batch(batch, self.batch_size)
        g = self.avatar.apply_deltas(self.deltas(batch))
        out = render(*g, batch.viewmat, batch.K, batch.width, batch.height, background=batch.background)
        return out.image[:n]


def pad_batch(batch: FrameBatch, size: int) -> FrameBatch:
    """Return `batch` grown to `size` frames by repeating its last frame."""
    n = batch.viewmat.shape[0]
    grown = {}
    for f in fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, Tensor):
            grown[f.name] = torch.cat([value, value[-1:].expand(size - n, *value.shape[1:])])
    return replace(batch, **grown)


@dataclass
class RenderStats:
    """Frame count and seconds spent: avatar rendering alone (synchronised), the whole streaming loop and the
    untimed first render on CUDA (kernel loading, compilation)."""

    frames: int = 0
    warmup_seconds: float = 0.0
    render_seconds: float = 0.0
    stream_seconds: float = 0.0


class LipCodeLog:
    """The lip code that drove each rendered frame (InferenceRenderer.lip_code), gathered batch by batch as
    render_stream's on_batch callback."""

    def __init__(self, renderer: InferenceRenderer) -> None:
        self.renderer = renderer
        self.parts: list[np.ndarray] = []

    def add(self, batch: FrameBatch, frames: np.ndarray) -> None:
        """Keep the lip code [B,3] of the batch whose frames [B,H,W,3] were just rendered."""
        code = self.renderer.lip_code(batch)
        if code is not None:
            self.parts.append(code[: len(frames)].float().cpu().numpy())

    def codes(self) -> np.ndarray | None:
        """The lip code of every frame so far [T,3] (float32), None for an audio_code 'free' model."""
        return np.concatenate(self.parts) if self.parts else None


def render_stream(
    renderer: InferenceRenderer,
    batches: Iterator[FrameBatch],
    writer: VideoWriter,
    n_frames: int,
    on_batch: Callable[[FrameBatch, np.ndarray], None] | None = None,
) -> RenderStats:
    """Render every batch, stream the frames to `writer` (encoding overlaps the next batch) and time it; on
    CUDA the first batch is rendered once untimed first."""
    stats = RenderStats()
    cuda = next(renderer.avatar.parameters()).is_cuda
    start = time.perf_counter()
    pending: Future | None = None
    with (
        torch.inference_mode(),
        ThreadPoolExecutor(max_workers=1) as pool,
        tqdm(total=n_frames, unit="frame", file=sys.stderr, dynamic_ncols=True, desc="render") as bar,
    ):
        for batch in batches:
            if cuda and stats.frames == 0:
                t0 = time.perf_counter()
                renderer(batch)
                torch.cuda.synchronize()
                stats.warmup_seconds = time.perf_counter() - t0
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            image = renderer(batch)
            if cuda:
                torch.cuda.synchronize()
            stats.render_seconds += time.perf_counter() - t0
            frames = to_uint8(image)
            if on_batch is not None:
                on_batch(batch, frames)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write, frames)
            stats.frames += len(frames)
            bar.update(len(frames))
        if pending is not None:
            pending.result()
    stats.stream_seconds = time.perf_counter() - start
    return stats
