"""The live server (serve.sh) on a tiny untrained avatar on the CPU: online features against the offline
extractor, the WebSocket API (PCM, files, several streams, failures, tokens) and the command line."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import websockets
from scipy import signal

import serve
from data_utils.audio_features import (
    LogMelExtractor,
    PhonemeExtractor,
    get_extractor,
    log_mel,
    step_times,
    window_steps,
)
from data_utils.audio_io import SAMPLE_RATE, load_audio
from data_utils.silence import SILENCE_DB, silent_frames, stream_step_db
from live.engine import RenderEngine
from live.extract_pool import default_feature_workers
from live.features import BlockFeatures, FeatureFactory, OnlineLogMel
from live.model import LiveModel
from live.resample import StreamResampler
from live.server import LiveState, ServerSettings, background_server, wav_bytes
from live.session import StreamSession
from tests.test_audio import (  # noqa: F401  (fixtures: tiny HuBERT, wav2vec2, DeepSpeech)
    tiny_models,
    tiny_onnx,
)
from tests.test_predict import trained  # noqa: F401  (fixture: tiny avatar + dataset, 8 fps, 32 px)
from utils.cli import UserError, run_cli

FPS = 8.0  # the tiny dataset's frame rate


@pytest.fixture(scope="module")
def model(trained: tuple[Path, Path]) -> Iterator[LiveModel]:  # noqa: F811
    """The tiny avatar loaded for live use on the CPU (its feature workers stopped after the module)."""
    import torch

    live = LiveModel(trained[0], trained[1], torch.device("cpu"))
    yield live
    live.close()


def make_state(model: LiveModel, **settings: object) -> LiveState:
    """A server state with a fresh engine (batches of 4) and the given ServerSettings fields."""
    return LiveState(
        model, RenderEngine(model, max_batch=4), ServerSettings(**settings), wav_bytes(np.zeros(10))
    )


@pytest.fixture(scope="module")
def server(model: LiveModel) -> Iterator[tuple[str, LiveState]]:
    """A live server without a token on a free port -> ('host:port', state)."""
    state = make_state(model)
    with background_server(state) as address:
        yield address, state
    state.engine.stop()


def pcm16(wav: np.ndarray) -> bytes:
    """Mono float samples [n] as little-endian PCM16 bytes."""
    return (np.clip(wav, -1, 1) * 32767).round().astype("<i2").tobytes()


async def collect(ws: websockets.ClientConnection) -> tuple[list[int], list[np.ndarray], dict]:
    """Read frames until 'done' -> (indices, decoded images, the done message); fail on an error message."""
    indices, images = [], []
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout=60)
        if isinstance(message, bytes):
            index, latency_ms = struct.unpack("<If", message[:8])
            assert latency_ms >= 0
            indices.append(index)
            images.append(cv2.imdecode(np.frombuffer(message[8:], np.uint8), cv2.IMREAD_COLOR))
            continue
        reply = json.loads(message)
        assert reply["type"] != "error", reply
        if reply["type"] == "done":
            return indices, images, reply


async def open_ws(address: str, **kwargs: object) -> websockets.ClientConnection:
    """Connect and read the hello message."""
    ws = await websockets.connect(f"ws://{address}/ws", **kwargs)
    hello = json.loads(await ws.recv())
    assert hello["type"] == "hello" and hello["fps"] == FPS and hello["size"] == 32
    return ws


async def stream_pcm(
    address: str, wav: np.ndarray, chunk: int = 1111, rate: int = SAMPLE_RATE
) -> tuple[list[int], list[np.ndarray], dict]:
    """Stream `wav` (at `rate` Hz) as PCM16 in chunks of `chunk` samples, end it, and collect the frames."""
    async with await open_ws(address) as ws:
        await ws.send(json.dumps({"type": "start", "camera_mode": "orbit", "sample_rate": rate}))
        assert json.loads(await ws.recv())["type"] == "started"
        for a in range(0, len(wav), chunk):
            await ws.send(pcm16(wav[a : a + chunk]))
        await ws.send(json.dumps({"type": "end"}))
        return await collect(ws)


def test_online_logmel_equals_offline_within_its_lookahead(speech_wav: Path) -> None:
    wav = load_audio(speech_wav)
    ex, fps = LogMelExtractor(n_mels=16, window=8), 25.0
    offline = ex.extract(wav, SAMPLE_RATE, fps)
    mel = log_mel(wav, SAMPLE_RATE, step_times(len(offline), fps) * SAMPLE_RATE, ex.n_fft, ex.n_mels)
    mean, std = mel.mean(0), mel.std(0)
    identity = {"mean": [0.0] * 16, "std": [1.0] * 16}
    online = OnlineLogMel(ex, fps, identity, lambda m: ((m - mean) / (std + 1e-5)).astype(np.float32))
    rng, got, received = np.random.default_rng(0), [], 0
    while received < len(wav):
        n = int(rng.integers(30, 3000))
        block = online.push(wav[received : received + n])
        received += min(n, len(wav) - received)
        if len(block):  # every frame out needs at most the look-ahead, and none is held back longer
            last = block.first + len(block) - 1
            assert last / fps + online.lookahead_s <= received / SAMPLE_RATE + 1e-9
            assert (last + 1) / fps + online.lookahead_s > (received - n) / SAMPLE_RATE
        got.append(block.windows)
    got.append(online.finish().windows)
    assert np.array_equal(np.concatenate(got), offline)
    assert online.lookahead_s == pytest.approx((4 + 0.5) / 50 + 256 / SAMPLE_RATE)


def test_phonemes_run_block_by_block(speech_wav: Path) -> None:
    wav = load_audio(speech_wav)[: round(1.2 * SAMPLE_RATE)]
    features = BlockFeatures(PhonemeExtractor(window=8), 25.0, {"mean": [0.0] * 40, "std": [1.0] * 40}, 8)
    blocks = []
    for a in range(0, len(wav), 800):
        blocks.append(features.push(wav[a : a + 800]))
        if len(blocks[-1]):  # a block needs at most the look-ahead after its first frame
            assert blocks[-1].first / 25 + features.lookahead_s <= min(a + 800, len(wav)) / SAMPLE_RATE + 1e-9
    blocks.append(features.finish())
    windows = np.concatenate([b.windows for b in blocks if len(b)])
    assert windows.shape == (round(len(wav) / SAMPLE_RATE * 25), 40, 8)
    assert np.array_equal(windows.sum(axis=1), np.ones((len(windows), 8)))  # one phone per step
    assert len(np.unique(windows.argmax(axis=1))) > 3  # speech is heard as several phones


def test_phone_decoding_in_worker_processes_gives_the_same_windows(speech_wav: Path) -> None:
    """visemes (pocketsphinx holds the GIL) are decoded in worker processes shared by the streams: the same
    windows as in the calling thread; a worker that dies fails its block only and is replaced."""
    wav = load_audio(speech_wav)[: round(1.5 * SAMPLE_RATE)]
    spec, norm = {"name": "visemes", "settings": {"window": 8}}, {"mean": [0.0] * 13, "std": [1.0] * 13}

    def stream(factory: FeatureFactory) -> np.ndarray:
        online = factory.new()
        blocks = [online.push(wav[a : a + 640]) for a in range(0, len(wav), 640)] + [online.finish()]
        return np.concatenate([b.windows for b in blocks if len(b)])

    in_thread = FeatureFactory(spec, norm, 25.0, wav, workers=0)
    pooled = FeatureFactory(spec, norm, 25.0, wav, workers=2)
    assert in_thread.pool is None and pooled.pool is not None and len(pooled.pool.procs) == 2
    try:
        assert np.array_equal(stream(pooled), stream(in_thread))
        dead = list(pooled.pool.procs)
        for proc in dead:
            proc.kill()
            proc.wait()
        for _ in range(2):  # each dead worker fails one block, then is replaced
            with pytest.raises(RuntimeError, match="worker .* died"):
                pooled.pool.extract(wav, SAMPLE_RATE, 25.0)
        assert np.array_equal(stream(pooled), stream(in_thread))  # the replacements decode
        assert len(pooled.pool.procs) == 2 and not set(dead) & set(pooled.pool.procs)  # the dead are let go
        assert all(p.stdout is not None and p.stdout.closed for p in dead)
    finally:
        procs = list(pooled.pool.procs)
        pooled.close()
    assert len(procs) == 2 and all(p.returncode is not None for p in procs)  # all stopped by close()
    logmel = FeatureFactory({"name": "logmel", "settings": {}}, {"mean": [0.0], "std": [1.0]}, 25.0, wav, 2)
    assert logmel.pool is None  # numpy, step by step: no workers
    import torch

    assert default_feature_workers(torch.device("cpu")) == 0  # the CPU renderer needs the cores
    assert 1 <= default_feature_workers(torch.device("cuda")) <= 8


@pytest.mark.parametrize("name", ["hubert", "wav2vec2", "deepspeech"])
def test_model_extractors_run_block_by_block(
    name: str,
    tiny_models: dict[str, Path],  # noqa: F811
    tiny_onnx: Path,  # noqa: F811
    speech_wav: Path,
) -> None:
    """A model trained on HuBERT, wav2vec2 or DeepSpeech features streams too: one window per frame of audio,
    each out within the look-ahead, close to the offline features of the whole clip."""
    wav = load_audio(speech_wav)[: round(2.0 * SAMPLE_RATE)]
    model = {"model_path": str(tiny_onnx)} if name == "deepspeech" else {"model_dir": str(tiny_models[name])}
    spec = {"name": name, "settings": {**model, "window": 8}}
    channels = 29 if name == "deepspeech" else 16
    norm = {"mean": [0.0] * channels, "std": [1.0] * channels}
    stream = FeatureFactory(spec, norm, 25.0, wav).new()
    blocks = []
    for a in range(0, len(wav), 800):
        blocks.append(stream.push(wav[a : a + 800]))
        if len(blocks[-1]):
            assert blocks[-1].first / 25 + stream.lookahead_s <= min(a + 800, len(wav)) / SAMPLE_RATE + 1e-9
    blocks.append(stream.finish())
    online = np.concatenate([b.windows for b in blocks if len(b)])
    offline = get_extractor(name, **spec["settings"]).extract(wav, SAMPLE_RATE, 25.0)
    assert online.shape == offline.shape == (50, channels, 8)
    assert np.corrcoef(online.ravel(), offline.ravel())[0, 1] > 0.95  # 1 s of context: near the whole clip
    with pytest.raises(UserError, match=f"the {name} extractor needs model_"):
        FeatureFactory({"name": name, "settings": {}}, norm, 25.0, wav)


def test_silence_gives_the_rest_mouth_and_blinks(model: LiveModel) -> None:
    session = StreamSession(model, "static", seed=1)
    quiet = session.push(np.zeros(round(30 * SAMPLE_RATE), np.float32)) + session.finish()
    assert len(quiet) == 30 * FPS
    assert all(np.array_equal(job.audio, model.rest_window) for job in quiet)  # still, closed mouth
    eyes = np.array([job.eye for job in quiet])
    assert eyes.min() < eyes.max()  # blinks go on
    assert all(np.array_equal(job.c2w, quiet[0].c2w) for job in quiet)  # static camera
    loud = StreamSession(model).push(0.3 * np.sin(np.arange(SAMPLE_RATE) * 0.3).astype(np.float32))
    assert loud and not any(np.array_equal(job.audio, model.rest_window) for job in loud)


def test_pcm_stream_gives_one_frame_per_frame_of_audio(
    server: tuple[str, LiveState], speech_wav: Path
) -> None:
    wav = load_audio(speech_wav)
    indices, images, done = asyncio.run(stream_pcm(server[0], wav))
    expected = round(len(wav) / SAMPLE_RATE * FPS)
    assert indices == list(range(expected)) and done["frames"] == expected
    assert done["audio_seconds"] == pytest.approx(len(wav) / SAMPLE_RATE)
    assert all(image.shape == (32, 32, 3) for image in images)
    assert np.std([image.mean() for image in images]) > 0  # the orbiting camera moves the picture


def test_pcm_at_another_rate_is_resampled_to_the_same_frames(
    server: tuple[str, LiveState], speech_wav: Path
) -> None:
    wav = load_audio(speech_wav)
    at_24k = signal.resample_poly(wav, 3, 2)
    indices, images, done = asyncio.run(stream_pcm(server[0], at_24k, chunk=1601, rate=24000))
    expected = round(len(wav) / SAMPLE_RATE * FPS)
    assert indices == list(range(expected))
    assert done["audio_seconds"] == pytest.approx(len(wav) / SAMPLE_RATE, abs=1e-3)
    direct = asyncio.run(stream_pcm(server[0], wav))[1]
    diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(images, direct, strict=True)]
    assert max(diffs) < 2  # the same audio at 24 kHz drives the same mouth (JPEG and resampling noise)


def test_resampler_streams_exactly_what_whole_signal_resampling_gives() -> None:
    rng = np.random.default_rng(0)
    for rate in (8000, 22050, 44100, 48000):
        x = rng.normal(0, 0.1, 20011).astype(np.float32)
        resampler, out, i = StreamResampler(rate), [], 0
        while i < len(x):
            n = int(rng.integers(1, 2500))
            out.append(resampler.push(x[i : i + n]))
            i += n
        out.append(resampler.finish())
        reference = signal.resample_poly(x, resampler.up, resampler.down)
        np.testing.assert_allclose(np.concatenate(out), reference, atol=1e-6)
    with pytest.raises(ValueError, match="8000-48000"):
        StreamResampler(96000)


def test_file_upload_and_its_limits(server: tuple[str, LiveState], speech_wav: Path, tmp_path: Path) -> None:
    async def run() -> tuple[list[str], int, dict]:
        async with await open_ws(server[0]) as ws:
            errors = []
            for payload in (b"not an audio file at all", b"RIFF" + bytes(8) + b"WAVE" + bytes(2 * 2**20)):
                await ws.send(json.dumps({"type": "start"}))
                await ws.recv()
                await ws.send(json.dumps({"type": "file"}))
                await ws.send(payload)
                errors.append(json.loads(await ws.recv())["message"])
            await ws.send(json.dumps({"type": "start"}))
            await ws.recv()
            await ws.send(json.dumps({"type": "file"}))
            await ws.send(speech_wav.read_bytes())
            indices, _, done = await collect(ws)
            return errors, len(indices), done

    state = server[1]
    limit = state.settings.max_upload_bytes
    state.settings.max_upload_bytes = 2**20
    try:
        errors, frames, done = asyncio.run(run())
    finally:
        state.settings.max_upload_bytes = limit
    assert "not a supported audio file" in errors[0]
    assert f"the limit is {2**20} bytes" in errors[1]
    assert frames == done["frames"] == round(len(load_audio(speech_wav)) / SAMPLE_RATE * FPS)


def test_concurrent_streams_each_get_their_own_frames(
    server: tuple[str, LiveState], speech_wav: Path
) -> None:
    wav = load_audio(speech_wav)
    lengths = [len(wav), len(wav) // 2, len(wav) // 3]

    async def run() -> list[tuple[list[int], list[np.ndarray], dict]]:
        return await asyncio.gather(*(stream_pcm(server[0], wav[:n], chunk=640) for n in lengths))

    for (indices, _, done), n in zip(asyncio.run(run()), lengths, strict=True):
        assert indices == list(range(round(n / SAMPLE_RATE * FPS))) == list(range(done["frames"]))


def test_failure_and_disconnect_free_the_stream(
    model: LiveModel, monkeypatch: pytest.MonkeyPatch, speech_wav: Path
) -> None:
    state = make_state(model)
    wav = load_audio(speech_wav)

    def broken(jobs: list) -> np.ndarray:
        raise RuntimeError("simulated out of memory")

    async def failing_then_gone(address: str) -> str:
        async with await open_ws(address) as ws:
            await ws.send(json.dumps({"type": "start"}))
            await ws.recv()
            await ws.send(pcm16(wav))
            reply = json.loads(await asyncio.wait_for(ws.recv(), timeout=30))
            await ws.send(json.dumps({"type": "start"}))  # a new stream; then leave with audio queued
            await ws.send(pcm16(wav))
        return reply["message"]

    with background_server(state) as address:
        with monkeypatch.context() as patch:
            patch.setattr(state.model, "render", broken)
            message = asyncio.run(failing_then_gone(address))
        assert "rendering failed (RuntimeError: simulated out of memory)" in message
        for _ in range(100):
            if not state.engine.handles and state.open_streams == 0:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert state.engine.handles == [] and state.open_streams == 0
        indices, _, done = asyncio.run(stream_pcm(address, wav))  # the server goes on
        assert len(indices) == done["frames"] > 0
    state.engine.stop()


def test_token_and_origin_are_checked(model: LiveModel) -> None:
    import urllib.error
    import urllib.request

    state = make_state(model, token="s3cret")

    async def refused(address: str, query: str = "", **kwargs: object) -> int:
        try:
            async with websockets.connect(f"ws://{address}/ws{query}", **kwargs) as ws:
                await ws.recv()
        except websockets.ConnectionClosed as err:
            return err.rcvd.code if err.rcvd else -1
        except websockets.InvalidStatus as err:
            return err.response.status_code
        return 0

    with background_server(state) as address:
        assert asyncio.run(refused(address)) in (403, 1008)
        assert asyncio.run(refused(address, "?token=wrong")) in (403, 1008)
        forged = {"origin": "http://evil.example"}
        assert asyncio.run(refused(address, "?token=s3cret", additional_headers=forged)) in (403, 1008)

        async def allowed() -> dict:
            async with websockets.connect(f"ws://{address}/ws?token=s3cret") as ws:
                return json.loads(await ws.recv())

        assert asyncio.run(allowed())["type"] == "hello"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://{address}/api/info")
        request = urllib.request.Request(
            f"http://{address}/api/info", headers={"Authorization": "Bearer s3cret"}
        )
        assert json.loads(urllib.request.urlopen(request).read())["lookahead_ms"] == 173
        assert b"egstalker live" in urllib.request.urlopen(f"http://{address}/").read()  # the page is public
    state.engine.stop()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--host", "0.0.0.0"], "listening on '0.0.0.0' lets other machines in, so it needs a token"),
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--max_batch", "0"], "--max_batch must be at least 1"),
        (["--feature_workers", "-1"], "--feature_workers must be 0 or more"),
    ],
)
def test_serve_rejects_bad_arguments(
    trained: tuple[Path, Path],  # noqa: F811
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(serve.TOKEN_ENV, raising=False)
    argv = ["--model_path", str(trained[0]), "--reference_path", str(trained[1]), *extra]
    with pytest.raises(SystemExit) as exc:
        run_cli(serve.main, argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_latency_bench_counts_realtime_latency_from_the_first_captured_sample(
    trained: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """Paced like a microphone, the first frame cannot come before the chunk that completes its look-ahead has
    been captured;
    pushed like a TTS engine it comes sooner; the report carries the figures and its metadata."""
    from bench import live_latency

    out = tmp_path / "live.json"
    args = ["--model_path", str(trained[0]), "--reference_path", str(trained[1]), "--device", "cpu"]
    live_latency.main([*args, "--seconds", "1", "--runs", "1", "--streams", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    chunk_ms = 1000 * live_latency.CHUNK / SAMPLE_RATE  # the chunk holding the look-ahead's last sample
    captured_ms = math.ceil(report["lookahead_ms"] / chunk_ms) * chunk_ms  # ... has been captured by then
    assert report["first_frame_ms_realtime"]["min"] >= captured_ms
    assert report["first_frame_ms_pushed"]["median"] < report["first_frame_ms_realtime"]["median"]
    assert report["concurrency"][0]["streams"] == 1 and report["commit"]


def test_readme_example_client_saves_one_frame_per_frame_of_audio(
    server: tuple[str, LiveState], speech_wav: Path, tmp_path: Path
) -> None:
    """The README's Python client, run as a user would, against the live server: a JPEG per frame."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Live") :]
    code = section[
        section.index("```python") + len("```python") : section.index("```", section.index("```python") + 9)
    ]
    (tmp_path / "client.py").write_text(code)
    url = f"ws://{server[0]}/ws"
    subprocess.run([sys.executable, "client.py", str(speech_wav), url], cwd=tmp_path, check=True, timeout=120)
    frames = sorted(tmp_path.glob("frame_*.jpg"))
    seconds = len(load_audio(speech_wav)) / SAMPLE_RATE
    assert len(frames) == round(seconds * FPS) and frames[0].name == "frame_00000.jpg"
    assert cv2.imdecode(np.frombuffer(frames[-1].read_bytes(), np.uint8), cv2.IMREAD_COLOR) is not None


@pytest.mark.parametrize(("name", "channels", "window"), [("logmel", 32, 16), ("phonemes", 40, 8)])
def test_live_silence_is_predicts_silence(name: str, channels: int, window: int, speech_wav: Path) -> None:
    """The live streams' frame levels are data_utils.silence's, which predict.sh uses: the same frames of the
    same audio are silent in both."""
    speech = load_audio(speech_wav)[:SAMPLE_RATE]
    wav = np.concatenate([speech, np.zeros(SAMPLE_RATE, np.float32), speech])
    spec = {"name": name, "settings": {"window": window}}
    norm = {"mean": [0.0] * channels, "std": [1.0] * channels}
    stream = FeatureFactory(spec, norm, 25.0, wav).new()
    blocks = [stream.push(wav[a : a + 640]) for a in range(0, len(wav), 640)] + [stream.finish()]
    online = np.concatenate([b.level_db for b in blocks if len(b)])
    frames = round(len(wav) / SAMPLE_RATE * 25)
    offline_db = stream_step_db([wav], 25.0)[: frames * 2]
    offline = offline_db[window_steps(np.arange(frames), window, frames * 2)].max(axis=1)
    assert online.shape == offline.shape == (frames,)
    np.testing.assert_allclose(online[: frames - 5], offline[: frames - 5])  # the end is zero-padded online
    assert np.array_equal(online < SILENCE_DB, silent_frames(offline_db, window, frames))
    silent = online < SILENCE_DB
    assert silent[30:45].all() and not silent.all()  # the second of digital silence, inside its windows
