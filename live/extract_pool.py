"""Worker processes for an audio extractor that holds the GIL while it runs (pocketsphinx's phone decoder,
under the phonemes and visemes extractors): in the server's threads, concurrent live streams would decode one
at a time; in processes they decode side by side, and the render thread keeps the interpreter.

Each worker is `python -m live.extract_pool`, fed pickled requests on its stdin and answering on its stdout.
Plain subprocesses rather than multiprocessing, whose spawned workers import the caller's main script again
(serve.py or any user script, with its torch and CUDA): these import only this module and the extractor's.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np

from data_utils.audio_features import AudioFeatureExtractor, PhonemeExtractor
from data_utils.audio_io import SAMPLE_RATE
from utils.paths import REPO_ROOT

if TYPE_CHECKING:
    import torch

MAX_WORKERS = 8


def holds_gil(extractor: AudioFeatureExtractor) -> bool:
    """Whether `extractor` keeps the GIL while it extracts (pocketsphinx decoding does; torch and onnx release
    it, and log-mel runs step by step in numpy)."""
    return isinstance(extractor, PhonemeExtractor)


def default_feature_workers(device: torch.device) -> int:
    """Worker processes by default: on CUDA the cores less two (render thread, server), 1 to MAX_WORKERS; on
    the CPU none, since rendering there needs every core and bounds the streams anyway (measured on 2 cores:
    a worker made the first frame 495 -> 643 ms)."""
    if device.type != "cuda":
        return 0
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 2) - 2))


class ExtractPool:
    """`extractor.extract` run in `workers` worker processes, each block by the first idle one. The workers
    start, and build their decoders, when the pool is made, not in a stream's first block."""

    def __init__(self, extractor: AudioFeatureExtractor, workers: int) -> None:
        self.extractor, self.workers = extractor, workers
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen] = []
        self.idle: queue.SimpleQueue[subprocess.Popen] = queue.SimpleQueue()
        for _ in range(workers):
            self.idle.put(self._start())
        silence = np.zeros(SAMPLE_RATE // 5, np.float32)
        with ThreadPoolExecutor(workers) as threads:  # one warm-up block per worker, all at once
            list(threads.map(lambda _: self.extract(silence, SAMPLE_RATE, 25.0, 5), range(workers)))

    def _start(self) -> subprocess.Popen:
        """Start one worker (its own session: Ctrl-C goes to the server, which then closes the pool)."""
        path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path}
        proc = subprocess.Popen(
            [sys.executable, "-m", "live.extract_pool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        with self.lock:
            self.procs.append(proc)
        return proc

    def _replace(self, dead: subprocess.Popen) -> subprocess.Popen:
        """Reap a worker that exited (its pipes closed, out of `procs`) and start another in its place."""
        with self.lock:
            self.procs.remove(dead)
        dead.wait()
        for pipe in (dead.stdin, dead.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a broken pipe
                    pipe.close()
        return self._start()

    def extract(self, wav: np.ndarray, sr: int, fps: float, num_frames: int | None = None) -> np.ndarray:
        """Features [T, C, W] of mono `wav` [n] at `sr` Hz, as extractor.extract, computed in a worker;
        RuntimeError when the worker died (it is replaced for the next block)."""
        proc = self.idle.get()
        try:
            stdin, stdout = cast(IO[bytes], proc.stdin), cast(IO[bytes], proc.stdout)
            pickle.dump((self.extractor, np.asarray(wav, np.float32), sr, fps, num_frames), stdin)
            stdin.flush()
            ok, value = pickle.load(stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as err:
            proc.kill()
            raise RuntimeError(f"an audio feature worker (pid {proc.pid}) died; see the log above") from err
        finally:
            self.idle.put(proc if proc.poll() is None else self._replace(proc))
        if not ok:
            raise RuntimeError(f"audio feature worker: {value}")
        return value

    def close(self) -> None:
        """Stop the workers: each exits when its stdin closes (killed if it has not within 5 s)."""
        with self.lock:
            procs, self.procs = self.procs, []
        for proc in procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # a worker that died leaves a broken pipe
                    proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """A worker's loop: (extractor, wav, sr, fps, num_frames) in, (True, features) or (False, error) out,
    until `requests` ends."""
    while True:
        try:
            extractor, wav, sr, fps, num_frames = pickle.load(requests)
        except EOFError:
            return
        reply: tuple[bool, Any]
        try:
            reply = (True, extractor.extract(wav, sr, fps, num_frames))
        except Exception as err:  # noqa: BLE001 - reported to the server, which fails that stream
            reply = (False, f"{type(err).__name__}: {err}")
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the replies
    serve(sys.stdin.buffer, replies)
