"""LSE-C / LSE-D lip-sync scores with the pretrained SyncNet of Chung & Zisserman (weights from the user).

The network, the audio features and the scoring follow joonson/syncnet_python (SyncNetModel.py `S`,
SyncNetInstance.evaluate, run_pipeline.crop_video), so that `syncnet_v2.model` from that repository loads
unchanged and the figures are comparable with the ones papers report:

- video: 25 fps, 224x224 face crops, fed as BGR floats in 0..255 (cv2 frames, no normalisation), in windows
  of 5 frames [B,3,5,224,224];
- audio: 16 kHz int16-scaled samples -> 13 MFCCs at 100 Hz (python_speech_features.mfcc defaults), windows
  of 20 steps (0.2 s) starting 4 steps per video frame [B,1,13,20];
- for every window i and offset j in -vshift..vshift, the distance between lip embedding i and audio
  embedding i+j (a zero vector outside the clip, as the original pads), averaged over i -> mdist[j];
  LSE-D = min(mdist), LSE-C = median(mdist) - min(mdist), AV offset = -argmin_j (positive: the lips lag the
  audio by that many frames).

Known differences from the original pipeline: face boxes come from MediaPipe landmarks instead of the S3FD
detector, the box track is median-filtered with edge replication instead of zero padding, and the crops are
not round-tripped through XVID/JPEG compression.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import median_filter
from scipy.signal import resample_poly
from torch import Tensor, nn

from data_utils.audio_io import SAMPLE_RATE
from utils.cli import UserError
from utils.paths import DEFAULT_CACHE, cache_dir

WEIGHTS_NAME = "syncnet_v2.model"
FPS = 25.0
CROP_SIZE = 224
CROP_SCALE = 0.4  # run_pipeline.py --crop_scale
PAD_VALUE = 110  # grey the original pads frames with before cropping
SMOOTH_FRAMES = 13  # median-filter length of the box track (run_pipeline.crop_video)
WINDOW_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC steps per 25 fps video frame
MFCC_WINDOW = 20
EMBEDDING = 1024
_STATE_PREFIXES = ("__S__.", "module.", "S.")
_NOT_MEASURED = "not measured (no syncnet_v2.model; put it in ~/.cache/egstalker/syncnet or pass its path)"


def _conv_block(
    conv: nn.Module, channels: int, bn: type[nn.Module], pool: nn.Module | None
) -> list[nn.Module]:
    """Convolution, batch norm, ReLU and an optional pooling layer, in the original's order."""
    layers = [conv, bn(channels), nn.ReLU(inplace=True)]
    return layers + ([pool] if pool is not None else [])


def _fc_head() -> nn.Sequential:
    """The 512 -> 512 -> 1024 embedding head (netfcaud / netfclip)."""
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBEDDING))


class SyncNet(nn.Module):
    """SyncNet "S" (syncnet_python SyncNetModel.py): MFCC and lip-window encoders to 1024-d embeddings."""

    def __init__(self) -> None:
        """Layers with the original's module names and indices, so its state dict loads strictly."""
        super().__init__()
        c2, bn2 = nn.Conv2d, nn.BatchNorm2d
        self.netcnnaud = nn.Sequential(
            *_conv_block(c2(1, 64, 3, 1, 1), 64, bn2, nn.MaxPool2d(1, 1)),
            *_conv_block(c2(64, 192, 3, 1, 1), 192, bn2, nn.MaxPool2d(3, (1, 2))),
            *_conv_block(c2(192, 384, 3, padding=1), 384, bn2, None),
            *_conv_block(c2(384, 256, 3, padding=1), 256, bn2, None),
            *_conv_block(c2(256, 256, 3, padding=1), 256, bn2, nn.MaxPool2d(3, 2)),
            *_conv_block(c2(256, 512, (5, 4)), 512, bn2, None),
        )
        self.netfcaud = _fc_head()
        self.netfclip = _fc_head()
        c3, bn3 = nn.Conv3d, nn.BatchNorm3d
        self.netcnnlip = nn.Sequential(
            *_conv_block(c3(3, 96, (5, 7, 7), (1, 2, 2)), 96, bn3, nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_conv_block(
                c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
                256,
                bn3,
                nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            ),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3, None),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3, None),
            *_conv_block(
                c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, bn3, nn.MaxPool3d((1, 3, 3), (1, 2, 2))
            ),
            *_conv_block(c3(256, 512, (1, 6, 6)), 512, bn3, None),
        )

    def forward_audio(self, mfcc: Tensor) -> Tensor:
        """Audio embedding of MFCC windows [B,1,13,20] -> [B,1024]."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lips(self, frames: Tensor) -> Tensor:
        """Lip embedding of BGR 0..255 face-crop windows [B,3,5,224,224] -> [B,1024]."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def default_syncnet_dir() -> Path:
    """Folder searched for the weights: $EGSTALKER_CACHE/syncnet (default ~/.cache/egstalker/syncnet)."""
    return cache_dir("syncnet")


def find_syncnet_weights(explicit: Path | None = None) -> Path | None:
    """`explicit` (UserError if it is not a file), else the cached syncnet_v2.model, else None."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"SyncNet weights '{path}' not found; pass the path of {WEIGHTS_NAME}")
        return path
    home = DEFAULT_CACHE.expanduser() / "syncnet"
    return next(
        (d / WEIGHTS_NAME for d in (default_syncnet_dir(), home) if (d / WEIGHTS_NAME).is_file()), None
    )


def _strip_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys without a wrapper prefix such as `__S__.` (SyncNetInstance's attribute) or `module.`."""
    for prefix in _STATE_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def load_syncnet(path: Path, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet in eval mode from a syncnet_v2.model state dict; UserError if the file is missing or wrong."""
    path = Path(path)
    supply = f"supply {WEIGHTS_NAME} from joonson/syncnet_python (its download_model.sh)"
    if not path.is_file():
        raise UserError(f"SyncNet weights '{path}' not found; {supply}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load of a foreign file can fail with almost any exception type
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"cannot read SyncNet weights '{path}' ({reason}); {supply}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"'{path}' is not a SyncNet state dict (a dict of tensors); {supply}")
    net = SyncNet()
    state = _strip_prefix(state)
    own = net.state_dict()
    for key in own:  # files saved before PyTorch 0.4 have no BatchNorm step counters
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise UserError(f"'{path}' does not fit SyncNet ({'; '.join(parts)}); {supply}")
    net.load_state_dict(state, strict=True)
    return net.to(device).eval().requires_grad_(False)


def _mel_filterbank(n_filters: int, nfft: int, sr: int) -> np.ndarray:
    """Triangular mel filters [n_filters, nfft//2+1] on FFT bins, as python_speech_features builds them."""
    mel_max = 2595.0 * np.log10(1.0 + (sr / 2) / 700.0)
    hz = 700.0 * (10.0 ** (np.linspace(0.0, mel_max, n_filters + 2) / 2595.0) - 1.0)
    edges = np.floor((nfft + 1) * hz / sr)
    bins = np.arange(nfft // 2 + 1)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where((bins >= lo) & (bins < mid), (bins - lo) / (mid - lo), 0.0)
        fall = np.where((bins >= mid) & (bins < hi), (hi - bins) / (hi - mid), 0.0)
    return rise + fall


def _to_int16_scale(wav: np.ndarray, sr: int) -> np.ndarray:
    """Mono 16 kHz samples in int16 units (what the original reads from ffmpeg's pcm_s16le) as float64."""
    wav = np.asarray(wav)
    if wav.ndim == 2:
        wav = wav.mean(axis=1 if wav.shape[1] <= 8 else 0)
    if wav.ndim != 1:
        raise ValueError(f"audio must be [N] or [N,channels], got shape {wav.shape}")
    if np.issubdtype(wav.dtype, np.integer):
        x = wav.astype(np.float64) * (32768.0 / (np.iinfo(wav.dtype).max + 1.0))
    else:
        x = wav.astype(np.float64) * 32768.0
    if sr != SAMPLE_RATE:
        g = math.gcd(int(sr), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sr) // g)
    return np.clip(np.round(x), -32768, 32767)


def syncnet_mfcc(wav: np.ndarray, sr: int) -> np.ndarray:
    """13 MFCCs at 100 Hz of audio [N] (float in [-1,1] or int PCM) at rate `sr` -> [n_frames,13].

    python_speech_features.mfcc defaults on 16 kHz int16-scaled samples: pre-emphasis 0.97, 400-sample
    rectangular frames every 160 samples (the last zero-padded), |rfft_512|^2 / 512, 26 mel filters, log,
    orthonormal DCT-II, lifter 22, and c0 replaced by the log of the frame's total power.
    """
    return _pcm_mfcc(_to_int16_scale(wav, sr))


def _pcm_mfcc(x: np.ndarray) -> np.ndarray:
    """syncnet_mfcc of 16 kHz samples [N] already in int16 units -> [n_frames,13]."""
    if x.size == 0:
        raise UserError("the audio is empty; SyncNet needs speech audio")
    win, step, nfft = 400, 160, 512
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    n = 1 if x.size <= win else 1 + math.ceil((x.size - win) / step)
    x = np.concatenate([x, np.zeros((n - 1) * step + win - x.size)])
    frames = x[np.arange(n)[:, None] * step + np.arange(win)[None, :]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    feat = power @ _mel_filterbank(26, nfft, SAMPLE_RATE).T
    feat = np.log(np.where(feat == 0, eps, feat))
    k = np.arange(13)[:, None]
    basis = np.cos(np.pi * k * (2 * np.arange(26)[None, :] + 1) / 52) * np.sqrt(2 / 26)
    basis[0] /= np.sqrt(2)
    cep = feat @ basis.T
    cep *= 1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)
    cep[:, 0] = np.log(energy)
    return cep


def _fill_nan_rows(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of the NaN rows of [T,D] (edges hold the nearest valid row)."""
    good = np.isfinite(values).all(axis=1)
    t = np.arange(len(values))
    return np.stack([np.interp(t, t[good], values[good, d]) for d in range(values.shape[1])], axis=1)


def face_crops(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """224x224 face crops [T,224,224,3] uint8 of RGB frames [T,H,W,3] around landmarks [T,478,2] (NaN: none).

    As run_pipeline.crop_video: box half-size s = max(w,h)/2 of the landmarks' bounding box, centre and s
    median-filtered over 13 frames, crop rows cy-s .. cy+s(1+2cs) and columns cx-s(1+cs) .. cx+s(1+cs) with
    cs=0.4, grey 110 outside the frame, bilinear resize. Frames without a face take their neighbours' box.
    """
    frames = np.asarray(frames)
    lms = np.asarray(landmarks, np.float64)
    if frames.ndim != 4 or frames.shape[-1] != 3 or lms.ndim != 3 or lms.shape[-1] != 2:
        raise ValueError(f"expected frames [T,H,W,3] and landmarks [T,K,2], got {frames.shape}, {lms.shape}")
    if len(frames) != len(lms):
        raise UserError(f"{len(frames)} frames but {len(lms)} landmark rows; give one landmark set per frame")
    face = np.isfinite(lms).all(axis=(1, 2))
    if not face.any():
        raise UserError("no face landmarks in any frame; SyncNet needs a visible face")
    box = np.full((len(lms), 3), np.nan)
    lo, hi = lms[face].min(axis=1), lms[face].max(axis=1)
    box[face] = np.column_stack([(lo + hi) / 2, (hi - lo).max(axis=1) / 2])  # cx, cy, s
    box = median_filter(_fill_nan_rows(box), size=(SMOOTH_FRAMES, 1), mode="nearest")
    height, width = frames.shape[1:3]
    out = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    cs = CROP_SCALE
    for i, (frame, (cx, cy, s)) in enumerate(zip(frames, box, strict=True)):
        y0, y1 = int(cy - s), int(cy + s * (1 + 2 * cs))
        x0, x1 = int(cx - s * (1 + cs)), int(cx + s * (1 + cs))
        crop = np.full((max(y1 - y0, 1), max(x1 - x0, 1), 3), PAD_VALUE, np.uint8)
        sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
        if sy1 > sy0 and sx1 > sx0:
            crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
        out[i] = cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)
    return out


def _pair_distances(lip: Tensor, aud: Tensor, vshift: int) -> Tensor:
    """dists [N, 2*vshift+1]: lip i to audio i+j-vshift (zero audio outside the clip, as calc_pdist pads)."""
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    return torch.stack(
        [
            torch.nn.functional.pairwise_distance(lip[[i]].expand(win, -1), padded[i : i + win])
            for i in range(len(lip))
        ]
    )


@torch.no_grad()
def lse_scores(
    net: SyncNet,
    crops: np.ndarray,
    wav: np.ndarray,
    sr: int,
    fps: float = FPS,
    batch_size: int = 20,
    max_offset: int = 15,
) -> dict:
    """LSE-C, LSE-D and AV offset of RGB face crops [T,224,224,3] uint8 at 25 fps against audio [N] at `sr`.

    Returns {"lse_c", "lse_d", "offset_frames", "frames_used"}; frames_used is the number of 5-frame windows
    scored. A positive offset means the lips lag the audio.
    """
    if abs(float(fps) - FPS) > 0.5:
        raise UserError(f"SyncNet needs 25 fps video, got {fps:g} fps; resample the video to 25 fps first")
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise ValueError(f"crops must be [T,224,224,3], got {crops.shape}")
    pcm = _to_int16_scale(wav, sr)
    mfcc = _pcm_mfcc(pcm)
    length = min(len(crops), pcm.size // (SAMPLE_RATE // int(FPS)))
    if length < int(FPS):
        raise UserError(
            f"clip too short for SyncNet: {length} frames of video with audio, need at least {int(FPS)} (1 s)"
        )
    windows = length - WINDOW_FRAMES  # the original's lastframe = min_length - 5
    device = next(net.parameters()).device
    cct = torch.from_numpy(mfcc.T.astype(np.float32))  # [13, n_steps]
    lip_feats, aud_feats = [], []
    for start in range(0, windows, batch_size):
        idx = range(start, min(windows, start + batch_size))
        video = np.stack([crops[v : v + WINDOW_FRAMES, :, :, ::-1] for v in idx])  # RGB -> BGR, [B,5,H,W,3]
        video = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 4, 1, 2, 3).float()
        audio = torch.stack([cct[:, v * MFCC_PER_FRAME : v * MFCC_PER_FRAME + MFCC_WINDOW] for v in idx])
        lip_feats.append(net.forward_lips(video.to(device)).float().cpu())
        aud_feats.append(net.forward_audio(audio[:, None].to(device)).float().cpu())
    dists = _pair_distances(torch.cat(lip_feats), torch.cat(aud_feats), max_offset)
    mdist = dists.mean(dim=0)
    min_dist, min_idx = torch.min(mdist, 0)
    return {
        "lse_c": float(torch.median(mdist) - min_dist),
        "lse_d": float(min_dist),
        "offset_frames": int(max_offset - int(min_idx)),
        "frames_used": int(windows),
    }


def not_measured() -> dict:
    """The LSE report when no SyncNet weights are found: both figures None and why."""
    return {"lse_c": None, "lse_d": None, "status": _NOT_MEASURED}


def lse_report(
    frames: np.ndarray,
    landmarks: np.ndarray,
    wav: np.ndarray,
    sr: int,
    fps: float,
    weights: Path | None = None,
) -> dict:
    """LSE-C/LSE-D of RGB frames [T,H,W,3] with landmarks [T,478,2]; "not measured" without weights."""
    path = find_syncnet_weights(weights)
    if path is None:
        return not_measured()
    if abs(float(fps) - FPS) > 0.5:
        raise UserError(f"SyncNet needs 25 fps video, got {fps:g} fps; resample the video to 25 fps first")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores = lse_scores(load_syncnet(path, device), face_crops(frames, landmarks), wav, sr, fps)
    return {
        "lse_c": scores["lse_c"],
        "lse_d": scores["lse_d"],
        "offset_frames": scores["offset_frames"],
        "weights": str(path),
    }
