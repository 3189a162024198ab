"""Latency and capacity of the live server (serve.sh): the server runs in this process on a free loopback
port and WebSocket clients stream speech to it as a TTS engine or a microphone would.

Measures (1) the latency from the first audio sample to the first frame received, with the audio pushed
as fast as it comes (a TTS engine) and paced in real time (a microphone: each 40 ms chunk is sent when its
last sample has been captured, and the latency counts from the capture of the first, so it includes the
features' look-ahead); (2) the sustained frames per second of one stream pushed as fast as possible; (3) how
many real-time streams one device holds at the model's frame rate: K streams paced in real time, each must
receive >= 97 % of its frames per second and stay within 0.5 s of its audio (95th percentile).

    python -m bench.live_latency --model_path output/me --reference_path data/me --device cuda \
        --streams 1,2,4,8,12,16 --out bench_live.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import websockets

from bench.report import with_metadata
from data_utils.audio_io import SAMPLE_RATE, load_audio
from live.engine import RenderEngine, default_max_batch
from live.model import LiveModel
from live.server import LiveState, ServerSettings, background_server, wav_bytes
from scene.prediction import add_device_option, device_label, resolve_device
from utils.atomic import atomic_write_json
from utils.cli import ArgumentParser, UserError, add_model_arguments, run_cli

CHUNK = 640  # samples per message: 40 ms, as the page sends the microphone
HOLD_FPS_SHARE = 0.97  # a stream holds the frame rate when it gets at least this share of it
HOLD_LAG_S = 0.5  # ... and its frames stay within this of its audio (95th percentile)


@dataclass
class StreamRun:
    """What one client saw: when its first sample was there, when each chunk was sent and each frame arrived
    (perf_counter seconds)."""

    start: float = 0.0
    sent: list[tuple[int, float]] = field(default_factory=list)  # (samples sent so far, time)
    arrivals: list[float] = field(default_factory=list)
    frames: int = 0

    def first_frame_latency(self) -> float:
        """Seconds from the first audio sample (sent, or captured when paced) to the first frame received."""
        return self.arrivals[0] - self.start

    def fps(self) -> float:
        """Frames per second between the first and the last frame."""
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else math.inf

    def lags(self, fps: float, lookahead_s: float) -> np.ndarray:
        """Seconds [frames] from the moment each frame's audio (with look-ahead) was sent to its arrival."""
        total = self.sent[-1][0]
        counts = np.array([c for c, _ in self.sent])
        times = np.array([t for _, t in self.sent])
        need = np.minimum(total, np.ceil((np.arange(len(self.arrivals)) / fps + lookahead_s) * SAMPLE_RATE))
        return np.array(self.arrivals) - times[np.searchsorted(counts, need)]


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    p = ArgumentParser(prog="python -m bench.live_latency", description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    add_device_option(p)
    p.add_argument("--audio", type=Path, help="speech to stream (default: the dataset's aud.wav)")
    p.add_argument("--seconds", type=float, default=8.0, help="audio per stream (default: 8)")
    p.add_argument("--runs", type=int, default=5, help="timed first-frame latency runs (default: 5)")
    p.add_argument("--streams", default="1,2,4,8", help="concurrent stream counts to try, ascending")
    p.add_argument("--max_batch", type=int, help="frames rendered together (default: 16 on CUDA, 4 on CPU)")
    p.add_argument("--bf16", action="store_true", help="bf16 deformation network (CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the deformation network")
    p.add_argument(
        "--feature_workers",
        type=int,
        help="as serve.sh's (default on CUDA: the cores less two, at most 8; CPU: 0)",
    )
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    return p


async def run_stream(address: str, wav: np.ndarray, paced: bool) -> StreamRun:
    """Stream `wav` to the server (in real time when `paced`: a chunk leaves once its last sample has been
    captured, as from a microphone), end it and collect the frames."""
    run = StreamRun()
    async with websockets.connect(f"ws://{address}/ws", max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "start", "camera_mode": "cycle"}))
        json.loads(await ws.recv())
        receiver = asyncio.create_task(receive(ws, run))
        start = run.start = time.perf_counter()
        for a in range(0, len(wav), CHUNK):
            end = min(a + CHUNK, len(wav))
            if paced:
                await asyncio.sleep(max(0.0, start + end / SAMPLE_RATE - time.perf_counter()))
            await ws.send((np.clip(wav[a : a + CHUNK], -1, 1) * 32767).astype("<i2").tobytes())
            run.sent.append((end, time.perf_counter()))
        await ws.send(json.dumps({"type": "end"}))
        await receiver
    return run


async def receive(ws: websockets.ClientConnection, run: StreamRun) -> None:
    """Record frame arrivals until 'done'; raise on an error message."""
    while True:
        message = await ws.recv()
        if isinstance(message, bytes):
            run.arrivals.append(time.perf_counter())
            continue
        reply = json.loads(message)
        if reply["type"] == "error":
            raise RuntimeError(reply["message"])
        if reply["type"] == "done":
            run.frames = reply["frames"]
            return


def concurrent(address: str, wav: np.ndarray, k: int) -> list[StreamRun]:
    """Run `k` real-time streams at once (starts spread over one frame's time)."""

    async def all_streams() -> list[StreamRun]:
        async def staggered(i: int) -> StreamRun:
            await asyncio.sleep(i * 0.04 / k)
            return await run_stream(address, wav, paced=True)

        return await asyncio.gather(*(staggered(i) for i in range(k)))

    return asyncio.run(all_streams())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally write) its figures."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    counts = sorted({int(s) for s in args.streams.split(",") if s.strip()})
    if not counts or counts[0] < 1:
        raise UserError(f"--streams must list positive counts, got {args.streams!r}")
    device = resolve_device(args.device)
    model = LiveModel(
        args.model_path,
        args.reference_path,
        device,
        bf16=args.bf16,
        compile=args.compile,
        feature_workers=args.feature_workers,
    )
    wav = load_audio(args.audio) if args.audio else model.reference_wav
    if len(wav) < args.seconds * SAMPLE_RATE:
        wav = np.tile(wav, math.ceil(args.seconds * SAMPLE_RATE / len(wav)))
    wav = wav[: round(args.seconds * SAMPLE_RATE)]
    engine = RenderEngine(model, max_batch=args.max_batch or default_max_batch(device))
    state = LiveState(model, engine, ServerSettings(max_streams=max(counts) + 1), wav_bytes(wav[:10]))
    fps, lookahead = model.fps, model.feature_factory.lookahead_s
    result: dict = {
        "device": device_label(device),
        "torch_threads": torch.get_num_threads(),
        "resolution": model.size,
        "fps": fps,
        "gaussians": model.loaded.avatar.gaussians.num_gaussians,
        "extractor": model.extractor,
        "lookahead_ms": model.feature_factory.lookahead_ms,
        "max_batch": engine.max_batch,
        "bf16": args.bf16,
        "compile": args.compile,
        "seconds_per_stream": args.seconds,
        "feature_workers": model.feature_factory.pool.workers if model.feature_factory.pool else 0,
    }
    try:
        with background_server(state) as address:
            asyncio.run(run_stream(address, wav[:SAMPLE_RATE], paced=False))  # warm-up (kernels, compile)
            short = wav[:SAMPLE_RATE]
            pushed = [
                asyncio.run(run_stream(address, short, False)).first_frame_latency() for _ in range(args.runs)
            ]
            paced = [
                asyncio.run(run_stream(address, short, True)).first_frame_latency() for _ in range(args.runs)
            ]
            result["first_frame_ms_pushed"] = summary_ms(pushed)
            result["first_frame_ms_realtime"] = summary_ms(paced)
            result["stream_fps_pushed"] = round(asyncio.run(run_stream(address, wav, False)).fps(), 2)
            result["concurrency"] = []
            for k in counts:
                runs = concurrent(address, wav, k)
                row = holding(runs, fps, lookahead, k)
                result["concurrency"].append(row)
                print(
                    f"{k} streams: min {row['min_fps']:.1f} fps, lag p95 {row['lag_p95_s']:.3f} s -> "
                    f"{'holds' if row['holds'] else 'falls behind'}",
                    flush=True,
                )
                if not row["holds"]:
                    break
            held = [r["streams"] for r in result["concurrency"] if r["holds"]]
            result["streams_held_at_fps"] = max(held, default=0)
    finally:
        engine.stop()
        model.close()
    result = with_metadata(result, args)
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


def summary_ms(seconds: list[float]) -> dict:
    """Median, min and max of latencies in milliseconds."""
    ms = np.array(seconds) * 1000
    return {
        "median": round(float(np.median(ms)), 1),
        "min": round(float(ms.min()), 1),
        "max": round(float(ms.max()), 1),
    }


def holding(runs: list[StreamRun], fps: float, lookahead_s: float, k: int) -> dict:
    """Whether `k` concurrent real-time streams each held the frame rate, with their worst fps and lag."""
    rates = [r.fps() for r in runs]
    lags = np.concatenate([r.lags(fps, lookahead_s) for r in runs])
    lag95 = float(np.percentile(lags, 95))
    complete = all(r.frames == len(r.arrivals) for r in runs)
    holds = complete and min(rates) >= HOLD_FPS_SHARE * fps and lag95 <= HOLD_LAG_S
    return {"streams": k, "min_fps": round(min(rates), 2), "lag_p95_s": round(lag95, 3), "holds": holds}


if __name__ == "__main__":
    run_cli(main)
