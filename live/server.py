"""The ASGI app of serve.sh (Starlette): the web page, the reference clip as a sample, and the WebSocket
stream protocol (audio in, JPEG frames out). docs/live.md documents the protocol."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from data_utils.audio_io import SAMPLE_RATE, write_wav
from live.engine import RenderedFrame, RenderEngine, StreamFailed, StreamHandle
from live.model import LiveModel
from live.resample import MAX_RATE, MIN_RATE, StreamResampler
from live.session import StreamSession
from live.upload import ACCEPTED, MAX_UPLOAD_BYTES, decode_upload
from utils.camera_path import CAMERA_MODES
from utils.cli import UserError

STATIC = Path(__file__).parent / "static"
FRAME_HEADER = struct.Struct("<If")  # frame index, milliseconds from its audio being complete to its JPEG
MAX_PCM_MESSAGE_BYTES = 10 * SAMPLE_RATE * 2  # 10 s of PCM16 per binary message
POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013


@dataclass
class ServerSettings:
    """What the operator chose: the access token (None: none needed), stream and upload limits."""

    token: str | None = None
    max_streams: int = 16
    max_upload_bytes: int = MAX_UPLOAD_BYTES


@dataclass
class LiveState:
    """Shared by every connection: the model, the engine, the settings and the open-stream count."""

    model: LiveModel
    engine: RenderEngine
    settings: ServerSettings
    sample_wav: bytes
    open_streams: int = 0


@dataclass
class Stream:
    """One stream of a connection: its session, engine handle and the frame count once its audio ended."""

    session: StreamSession
    handle: StreamHandle
    resampler: StreamResampler | None = None  # PCM at another rate than SAMPLE_RATE
    total: int | None = None
    sent: int = 0


@dataclass
class Connection:
    """A WebSocket client: its current stream, the queue of frames to send and a pending file upload."""

    ws: WebSocket
    state: LiveState
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    stream: Stream | None = None
    expecting_file: bool = False


def authorised(settings: ServerSettings, query: dict, headers: Any) -> bool:
    """Whether a request carries the server's token (?token= or 'Authorization: Bearer'), or none is set."""
    if settings.token is None:
        return True
    given = query.get("token") or headers.get("authorization", "").removeprefix("Bearer ").strip()
    return secrets.compare_digest(given.encode(), settings.token.encode())


def same_origin(headers: Any) -> bool:
    """Whether a browser's WebSocket comes from a page of this server (programs send no Origin)."""
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == headers.get("host", "")


def hello(state: LiveState) -> dict:
    """The first message of every connection: what the stream produces and accepts."""
    model = state.model
    return {
        "type": "hello",
        "fps": model.fps,
        "size": model.size,
        "sample_rate": SAMPLE_RATE,
        "lookahead_ms": model.feature_factory.lookahead_ms,
        "extractor": model.extractor,
        "camera_modes": list(CAMERA_MODES),
        "max_upload_bytes": state.settings.max_upload_bytes,
        "accepted_uploads": ACCEPTED,
    }


async def send_loop(conn: Connection) -> None:
    """Send what the engine delivers: frames of the current stream (others are dropped), then 'done'."""
    while True:
        handle, item = await conn.outbox.get()
        stream = conn.stream
        if stream is None or handle is not stream.handle:
            continue
        if isinstance(item, StreamFailed):
            conn.stream = None
            await send_json(conn.ws, {"type": "error", "message": str(item)})
            continue
        assert isinstance(item, RenderedFrame)
        await conn.ws.send_bytes(FRAME_HEADER.pack(item.index, item.latency_s * 1000) + item.jpeg)
        handle.sent()
        stream.sent += 1
        await maybe_done(conn)


async def maybe_done(conn: Connection) -> None:
    """Send 'done' and close the stream once every frame of its ended audio has been sent."""
    stream = conn.stream
    if stream is not None and stream.total is not None and stream.sent >= stream.total:
        conn.stream = None
        stream.handle.close()
        seconds = stream.session.samples / SAMPLE_RATE
        await send_json(conn.ws, {"type": "done", "frames": stream.total, "audio_seconds": seconds})


async def send_json(ws: WebSocket, message: dict) -> None:
    """Send one JSON text message."""
    await ws.send_text(json.dumps(message))


def open_stream(conn: Connection, message: dict) -> Stream:
    """Start a new stream for a 'start' message (ending the previous one)."""
    close_stream(conn)
    mode = message.get("camera_mode", "cycle")
    seed = message.get("seed", 0)
    rate = message.get("sample_rate", SAMPLE_RATE)
    if not isinstance(mode, str) or not isinstance(seed, int):
        raise UserError("'camera_mode' must be a string and 'seed' an integer")
    if not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise UserError(f"'sample_rate' must be an integer from {MIN_RATE} to {MAX_RATE} Hz, got {rate!r}")
    session = StreamSession(conn.state.model, mode, seed)
    loop = asyncio.get_running_loop()
    holder: list[StreamHandle] = []

    def deliver(item: RenderedFrame | StreamFailed) -> None:
        loop.call_soon_threadsafe(conn.outbox.put_nowait, (holder[0], item))

    holder.append(conn.state.engine.open(deliver))
    conn.stream = Stream(session, holder[0], None if rate == SAMPLE_RATE else StreamResampler(rate))
    return conn.stream


def close_stream(conn: Connection) -> None:
    """Drop the current stream, its queued jobs and undelivered frames."""
    if conn.stream is not None:
        conn.stream.handle.close()
        conn.stream = None


def current(conn: Connection) -> Stream:
    """The connection's open stream; UserError when there is none."""
    if conn.stream is None or conn.stream.total is not None:
        raise UserError('no stream is open; send {"type": "start"} first')
    return conn.stream


async def push(conn: Connection, samples: np.ndarray, resample: bool = True) -> None:
    """Feed audio samples [n] (at the stream's rate when `resample`, else at SAMPLE_RATE) to the current
    stream and queue its ready frames."""
    stream = current(conn)
    if resample and stream.resampler is not None:
        samples = stream.resampler.push(samples)
    jobs = await asyncio.to_thread(stream.session.push, samples)
    stream.handle.submit(jobs)


async def end(conn: Connection) -> None:
    """End the current stream's audio: queue its last frames; 'done' follows the last one."""
    stream = current(conn)
    if stream.resampler is not None:
        await push(conn, stream.resampler.finish(), resample=False)
    jobs = await asyncio.to_thread(stream.session.finish)
    stream.handle.submit(jobs)
    stream.total = stream.session.frames
    await maybe_done(conn)


async def on_text(conn: Connection, text: str) -> None:
    """Handle a control message: start, camera, end, stop or file."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError("control messages must be JSON objects") from err
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "start":
        stream = open_stream(conn, message)
        await send_json(conn.ws, {"type": "started", "camera_mode": stream.session.camera_mode})
    elif kind == "camera":
        current(conn).session.set_camera(str(message.get("mode")))
    elif kind == "end":
        await end(conn)
    elif kind == "stop":
        close_stream(conn)
        await send_json(conn.ws, {"type": "stopped"})
    elif kind == "file":
        current(conn)
        conn.expecting_file = True
    else:
        raise UserError(f"unknown message type {kind!r}; use start, camera, end, stop or file")


async def on_bytes(conn: Connection, data: bytes) -> None:
    """Handle a binary message: PCM16 audio, or the file announced by a 'file' message."""
    if conn.expecting_file:
        conn.expecting_file = False
        samples = await asyncio.to_thread(decode_upload, data, conn.state.settings.max_upload_bytes)
        await push(conn, samples, resample=False)  # decoded at SAMPLE_RATE whatever the file's rate
        await end(conn)
        return
    if len(data) % 2 or len(data) > MAX_PCM_MESSAGE_BYTES:
        raise UserError(
            f"audio messages are 16-bit PCM (an even number of bytes, at most {MAX_PCM_MESSAGE_BYTES})"
        )
    await push(conn, np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0)


async def receive_loop(conn: Connection) -> None:
    """Read messages until the client leaves; a bad message gets an error reply, not a disconnect."""
    while True:
        message = await conn.ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            if message.get("bytes") is not None:
                await on_bytes(conn, message["bytes"])
            elif message.get("text") is not None:
                await on_text(conn, message["text"])
        except UserError as err:
            await send_json(conn.ws, {"type": "error", "message": str(err)})


async def stream_endpoint(ws: WebSocket) -> None:
    """The /ws endpoint: one connection, any number of consecutive streams."""
    state: LiveState = ws.app.state.live
    if not authorised(state.settings, ws.query_params, ws.headers) or not same_origin(ws.headers):
        await ws.close(code=POLICY_VIOLATION)
        return
    await ws.accept()
    if state.open_streams >= state.settings.max_streams:
        await send_json(ws, {"type": "error", "message": "the server is at its stream limit; try later"})
        await ws.close(code=TRY_AGAIN_LATER)
        return
    state.open_streams += 1
    conn = Connection(ws, state)
    sender = asyncio.create_task(send_loop(conn))
    try:
        await send_json(ws, hello(state))
        await receive_loop(conn)
    except WebSocketDisconnect:
        pass
    finally:
        close_stream(conn)
        sender.cancel()
        state.open_streams -= 1


async def index(request: Request) -> Response:
    """The web page."""
    return FileResponse(STATIC / "index.html")


async def info(request: Request) -> Response:
    """GET /api/info: the hello message as JSON (token required when set)."""
    state: LiveState = request.app.state.live
    if not authorised(state.settings, request.query_params, request.headers):
        return JSONResponse({"error": "a valid token is required"}, status_code=401)
    return JSONResponse(hello(state))


async def sample(request: Request) -> Response:
    """GET /api/sample.wav: the reference clip's audio, the page's built-in example."""
    state: LiveState = request.app.state.live
    if not authorised(state.settings, request.query_params, request.headers):
        return JSONResponse({"error": "a valid token is required"}, status_code=401)
    return Response(state.sample_wav, media_type="audio/wav")


def wav_bytes(wav: np.ndarray) -> bytes:
    """Return mono float `wav` [n] as the bytes of a 16 kHz PCM16 WAV file."""
    with tempfile.TemporaryDirectory(prefix="egstalker-sample-") as folder:
        path = Path(folder) / "sample.wav"
        write_wav(path, wav, SAMPLE_RATE)
        return path.read_bytes()


def create_app(state: LiveState) -> Starlette:
    """Return the ASGI app serving `state`."""
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/info", info),
            Route("/api/sample.wav", sample),
            WebSocketRoute("/ws", stream_endpoint),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.state.live = state
    return app


def is_loopback(host: str) -> bool:
    """Whether `host` only reaches this machine (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Return a listening socket on host:port (port 0: any free port); UserError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port} ({err.strerror}); pick another --host/--port"
        ) from err
    sock.listen(128)
    return sock


def uvicorn_config(state: LiveState, max_message_bytes: int) -> uvicorn.Config:
    """Return the uvicorn configuration serving `state` (WebSocket messages up to max_message_bytes)."""
    return uvicorn.Config(
        create_app(state), log_level="warning", ws_max_size=max_message_bytes, timeout_graceful_shutdown=3
    )


def serve_forever(state: LiveState, host: str, port: int, max_message_bytes: int) -> None:
    """Serve `state` on host:port until Ctrl-C or SIGTERM (uvicorn's graceful shutdown), printing the URL."""
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    query = f"?token={state.settings.token}" if state.settings.token else ""
    print(f"serving on http://{shown}:{bound}/{query} (Ctrl-C stops)", flush=True)
    try:
        uvicorn.Server(uvicorn_config(state, max_message_bytes)).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def background_server(state: LiveState, max_message_bytes: int = MAX_UPLOAD_BYTES + 1024) -> Iterator[str]:
    """Serve `state` on a free loopback port from a thread (tests, bench.live_latency); yield 'host:port'."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(state, max_message_bytes))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
