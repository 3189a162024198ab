"""Serve a trained avatar live (serve.sh): a web page and a WebSocket API that turn audio into frames."""

from __future__ import annotations

import argparse
import os
import sys

from data_utils.audio_io import SAMPLE_RATE
from live.engine import RenderEngine, default_max_batch
from live.extract_pool import MAX_WORKERS
from live.model import LiveModel
from live.server import LiveState, ServerSettings, is_loopback, serve_forever, wav_bytes
from live.upload import MAX_UPLOAD_BYTES
from scene.prediction import add_render_options, device_label, resolve_device
from utils.cli import ArgumentParser, UserError, add_model_arguments

TOKEN_ENV = "EGSTALKER_LIVE_TOKEN"
SAMPLE_SECONDS = 20.0  # length of the reference clip offered as the page's sample


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of serve.sh."""
    p = ArgumentParser(
        prog="serve.sh",
        description="Serve a trained avatar live: open the printed address in a browser, pick an audio file "
        "or the microphone and watch the avatar say it; programs stream PCM over the WebSocket API "
        "(docs/live.md). Binds to 127.0.0.1 unless --host is given, which then needs --token.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine)"
    )
    p.add_argument(
        "--port", type=int, default=7860, help="port to listen on (default: 7860; 0 picks a free one)"
    )
    p.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"secret every request must carry (?token=... or 'Authorization: Bearer ...'); required for a "
        f"non-loopback --host; default: ${TOKEN_ENV}",
    )
    add_render_options(p)
    p.add_argument("--max_streams", type=int, default=16, help="streams served at once (default: 16)")
    p.add_argument(
        "--max_batch",
        type=int,
        help="frames rendered together across streams (default: 16 on CUDA, 4 on CPU)",
    )
    p.add_argument(
        "--feature_workers",
        type=int,
        help="processes decoding phones for the streams of a visemes or phonemes model (default on CUDA: the "
        f"cores less two, at most {MAX_WORKERS}; on the CPU 0: in the server's threads, one at a time)",
    )
    p.add_argument(
        "--max_upload_mb",
        type=float,
        default=MAX_UPLOAD_BYTES / 2**20,
        help=f"largest audio file accepted over the API, MiB (default: {MAX_UPLOAD_BYTES / 2**20:g})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="accept a reference dataset other than the one the model was trained on",
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    """Raise UserError for missing folders, bad limits or a non-loopback address without a token."""
    if not args.model_path.is_dir():
        raise UserError(f"model '{args.model_path}' not found; train one with ./train.sh or fix --model_path")
    if not args.reference_path.is_dir():
        raise UserError(
            f"dataset '{args.reference_path}' not found; run ./preprocess.sh or fix --reference_path"
        )
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    for name in ("max_streams", "max_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    if args.feature_workers is not None and args.feature_workers < 0:
        raise UserError(f"--feature_workers must be 0 or more, got {args.feature_workers}")
    if args.max_upload_mb <= 0:
        raise UserError(f"--max_upload_mb must be positive, got {args.max_upload_mb:g}")
    if not is_loopback(args.host) and not args.token:
        raise UserError(
            f"listening on '{args.host}' lets other machines in, so it needs a token: pass --token or set "
            f"{TOKEN_ENV}, e.g. --token $(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )


def main(argv: list[str] | None = None) -> int:
    """Entry of serve.sh; returns the exit code once the server has stopped."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    check_args(args)
    device = resolve_device(args.device)
    model = LiveModel(
        args.model_path,
        args.reference_path,
        device,
        args.iteration,
        args.bf16,
        args.compile,
        args.force,
        args.feature_workers,
    )
    max_batch = args.max_batch or default_max_batch(device)
    upload = round(args.max_upload_mb * 2**20)
    engine = RenderEngine(model, max_batch=max_batch)
    sample = wav_bytes(model.reference_wav[: round(SAMPLE_SECONDS * SAMPLE_RATE)])
    state = LiveState(model, engine, ServerSettings(args.token, args.max_streams, upload), sample)
    print(
        f"avatar: {model.size}px @ {model.fps:g} fps on {device_label(device)}, {model.extractor} features "
        f"with {model.feature_factory.lookahead_ms} ms look-ahead, up to {args.max_streams} streams",
        flush=True,
    )
    try:
        serve_forever(state, args.host, args.port, upload + 1024)
    finally:  # Ctrl-C / SIGTERM: uvicorn has closed every connection; the render threads end here
        engine.stop()
        model.close()
        print("server stopped", flush=True)
    return 0
