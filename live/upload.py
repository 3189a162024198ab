"""Audio files sent to the live server: size and type checked from their bytes (never a client's file name),
decoded through a temporary file of the server's own naming that is removed straight after."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from data_utils.audio_io import SAMPLE_RATE, iter_audio_chunks
from utils.cli import UserError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
ACCEPTED = "WAV, MP3, FLAC, OGG/Opus, M4A/AAC or WebM audio"


def sniff_audio_type(data: bytes) -> str | None:
    """Return the container of audio file bytes from their signature ('wav', 'mp3', ...) or None."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def check_upload(data: bytes, limit: int = MAX_UPLOAD_BYTES) -> str:
    """Return the audio type of an uploaded file; UserError when it is empty, too large or not audio."""
    if not data:
        raise UserError("the uploaded file is empty")
    if len(data) > limit:
        raise UserError(f"the uploaded file has {len(data)} bytes; the limit is {limit} bytes")
    kind = sniff_audio_type(data)
    if kind is None:
        raise UserError(f"the uploaded file is not a supported audio file ({ACCEPTED})")
    return kind


def decode_upload(data: bytes, limit: int = MAX_UPLOAD_BYTES) -> np.ndarray:
    """Return the checked upload decoded to 16 kHz mono float32 [n]; UserError when ffmpeg cannot read it."""
    kind = check_upload(data, limit)
    with tempfile.TemporaryDirectory(prefix="egstalker-upload-") as folder:
        path = Path(folder) / f"upload.{kind}"
        path.write_bytes(data)
        try:
            return np.concatenate(list(iter_audio_chunks(path, SAMPLE_RATE)))
        except UserError as err:
            raise UserError(
                f"cannot decode the uploaded {kind} file; it may be damaged or truncated"
            ) from err
