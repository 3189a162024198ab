"""The render engine of a live server: one thread renders the frame jobs of every open stream in shared
batches (round robin, so streams share the GPU fairly), a second encodes them to JPEG and hands them back in
order. A failing batch fails only its streams; their jobs and memory are released."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from live.model import FrameJob, LiveModel


@dataclass
class RenderedFrame:
    """A frame ready to send: its index in the stream, JPEG bytes, and seconds from its audio being complete
    to its JPEG being ready."""

    index: int
    jpeg: bytes
    latency_s: float


class StreamFailed(Exception):
    """Rendering a stream's frames failed; the stream is closed, the server and other streams go on."""


Deliver = Callable[[RenderedFrame | StreamFailed], None]


class StreamHandle:
    """A stream's place in the engine: its queued jobs and how many rendered frames it has not yet sent."""

    def __init__(self, engine: RenderEngine, deliver: Deliver) -> None:
        self.engine, self.deliver = engine, deliver
        self.jobs: deque[FrameJob] = deque()
        self.in_flight = 0
        self.closed = False

    def submit(self, jobs: list[FrameJob]) -> None:
        """Queue frame jobs (in stream order) for rendering."""
        with self.engine.cond:
            if not self.closed:
                self.jobs.extend(jobs)
                self.engine.cond.notify()

    def sent(self) -> None:
        """Tell the engine one delivered frame has been sent (it renders ahead at most `window` frames)."""
        with self.engine.cond:
            self.in_flight -= 1
            self.engine.cond.notify()

    def close(self) -> None:
        """Drop the stream's queued jobs; frames of batches already rendering are discarded."""
        with self.engine.cond:
            self.closed = True
            self.jobs.clear()
            if self in self.engine.handles:
                self.engine.handles.remove(self)

    @property
    def ready(self) -> bool:
        """Whether this stream has a job to render and room to send it."""
        return bool(self.jobs) and self.in_flight < self.engine.window


def default_max_batch(device: torch.device) -> int:
    """Frames a live engine renders at once when --max_batch is not given: 16 on CUDA, 4 on the CPU."""
    return 16 if device.type == "cuda" else 4


class RenderEngine:
    """Renders the jobs of all open streams in batches of up to `max_batch` frames on one device."""

    def __init__(self, model: LiveModel, max_batch: int, window: int = 50, jpeg_quality: int = 85) -> None:
        self.model, self.max_batch, self.window = model, max_batch, window
        self.jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        self.cond = threading.Condition()
        self.handles: list[StreamHandle] = []
        self.rotation = 0
        self.stopping = False
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-jpeg")
        self.thread = threading.Thread(target=self.run, name="live-render", daemon=True)
        self.thread.start()

    def open(self, deliver: Deliver) -> StreamHandle:
        """Register a stream whose frames (or failure) are passed to `deliver` from an engine thread."""
        handle = StreamHandle(self, deliver)
        with self.cond:
            self.handles.append(handle)
        return handle

    def stop(self) -> None:
        """Stop the threads after the batch in progress."""
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join()
        self.encoder.shutdown(wait=True)

    def take_batch(self) -> list[tuple[StreamHandle, FrameJob]]:
        """Wait for work; return up to max_batch jobs taken one per stream in turn (caller holds no lock)."""
        with self.cond:
            while not self.stopping and not any(h.ready for h in self.handles):
                self.cond.wait()
            if self.stopping:
                return []
            n = len(self.handles)
            order = [self.handles[(self.rotation + k) % n] for k in range(n)]
            self.rotation = (self.rotation + 1) % max(n, 1)
            batch: list[tuple[StreamHandle, FrameJob]] = []
            for handle in itertools.cycle(order):
                if len(batch) >= self.max_batch or not any(h.ready for h in order):
                    break
                if handle.ready:
                    batch.append((handle, handle.jobs.popleft()))
                    handle.in_flight += 1
            return batch

    def run(self) -> None:
        """Render loop of the engine thread."""
        while batch := self.take_batch():
            try:
                images = self.model.render([job for _, job in batch])
            except Exception as err:  # noqa: BLE001 - any failure of a batch fails its streams, not the server
                self.fail({handle for handle, _ in batch}, err)
                continue
            self.encoder.submit(self.encode, batch, images)

    def encode(self, batch: list[tuple[StreamHandle, FrameJob]], images: np.ndarray) -> None:
        """Encode a rendered batch [B,H,W,3] to JPEG and deliver each frame to its open stream."""
        for (handle, job), image in zip(batch, images, strict=True):
            if handle.closed:
                continue
            ok, data = cv2.imencode(".jpg", image[..., ::-1], self.jpeg_params)
            if not ok:
                self.fail({handle}, RuntimeError("JPEG encoding failed"))
                continue
            handle.deliver(RenderedFrame(job.index, data.tobytes(), time.perf_counter() - job.ready_at))

    def fail(self, handles: set[StreamHandle], err: Exception) -> None:
        """Close `handles` and tell each stream why; free cached GPU memory."""
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        for handle in handles:
            if not handle.closed:
                handle.close()
                handle.deliver(StreamFailed(f"rendering failed ({type(err).__name__}: {reason})"))
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()
