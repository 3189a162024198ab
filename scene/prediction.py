"""What rendering a trained avatar needs besides the renderer: the device, checks of the inputs against the
checkpoint and the FrameBatches of new audio or of a dataset split (predict.sh, render_direct.sh, live/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from data_utils.audio_io import load_audio
from data_utils.lips import LIP_MEASURES
from data_utils.schema import AUDIO_WAV
from data_utils.silence import N_FFT, quietest_frame
from scene.avatar import Avatar
from scene.checkpoint import LoadedAvatar
from scene.dataset import FrameBatch, TalkingHeadDataset, read_transforms
from scene.fingerprint import dataset_fingerprint, fingerprint_differences
from utils.cli import UserError

LIP_CODE_FILE = "lip_code.npy"  # beside a render of an audio_code 'lips' model: the lip code [T,3] per frame


def saved_lip_code_opening(results: Path) -> np.ndarray | None:
    """The outer-lip opening [T] of the lip code saved in a predict.sh / render_direct.sh output folder
    (LIP_CODE_FILE, standardised), None when there is none (an audio_code 'free' model)."""
    path = Path(results) / LIP_CODE_FILE
    return np.load(path)[:, LIP_MEASURES.index("outer_opening")] if path.is_file() else None


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """Add --device auto|cpu|cuda (read it with resolve_device)."""
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to render (default: auto = CUDA if available)",
    )


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of every tool that renders a model: --iteration, --device, --bf16, --compile."""
    parser.add_argument("--iteration", type=int, help="checkpoint iteration to load (default: the latest)")
    add_device_option(parser)
    parser.add_argument("--bf16", action="store_true", help="run the deformation network in bf16 (CUDA only)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the deformation network: slower start, then several times faster on CUDA",
    )


def resolve_device(name: str) -> torch.device:
    """Return the torch device for --device auto|cpu|cuda; UserError when CUDA is asked for but missing."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was given but no CUDA GPU is available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def reference_dataset(loaded: LoadedAvatar, reference_path: Path, device: torch.device) -> TalkingHeadDataset:
    """The training split of the model's dataset without targets (cameras, torso backgrounds, audio features
    of the model's extractor and normalisation) at the model's resolution: what new audio is rendered over."""
    return TalkingHeadDataset(
        reference_path,
        "train",
        loaded.dataset_meta["resolution"],
        device,
        audio_extractor=loaded.audio_extractor["name"],
        audio_norm=loaded.audio_norm,
        targets=False,
    )


def default_batch_size(device: torch.device) -> int:
    """Frames rendered per batch when --batch_size is not given: 32 on CUDA, 4 on the CPU."""
    return 32 if device.type == "cuda" else 4


def device_label(device: torch.device) -> str:
    """Return a readable name of `device`, e.g. 'cuda (NVIDIA H100 80GB HBM3)'."""
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def rebatch(segments: Iterable[Tensor], size: int) -> Iterator[Tensor]:
    """Regroup tensors [k_i,...] along dim 0 into tensors of `size` rows (the last may be shorter)."""
    pending: list[Tensor] = []
    count = 0
    for segment in segments:
        pending.append(segment)
        count += len(segment)
        if count < size:
            continue
        joined = torch.cat(pending)
        whole = count - count % size
        yield from joined[:whole].split(size)
        pending, count = [joined[whole:]], count - whole
    if count:
        yield torch.cat(pending)


def check_audio_shape(avatar: Avatar, shape: tuple[int, ...], source: str) -> None:
    """Raise UserError unless audio windows of `shape` (C, W) fit the avatar's audio encoder."""
    want = (avatar.deform_cfg.audio_channels, avatar.deform_cfg.audio_window)
    if tuple(shape) != want:
        raise UserError(
            f"audio features of {source} are {tuple(shape)} (channels, window) but the model was trained on "
            f"{want}; use the dataset the model was trained on"
        )


def c2w_to_conditions(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (viewmats [B,4,4] world->camera, camera tokens [B,12]) of camera-to-world poses c2w [B,4,4]."""
    return torch.linalg.inv(c2w), c2w[:, :3, :4].reshape(-1, 12)


def novel_batches(
    ref: TalkingHeadDataset,
    c2w: np.ndarray,
    torso_index: np.ndarray,
    audio: Iterable[Tensor],
    eye: np.ndarray,
    batch_size: int,
) -> Iterator[FrameBatch]:
    """Yield FrameBatches for new audio (segments [k,C,W], n frames in all), eyes [n] and cameras c2w
    [n,4,4], over the training frames' backgrounds picked by torso_index [n]."""
    device = ref.device
    start = 0
    for windows in rebatch(audio, batch_size):
        stop = start + len(windows)
        base = ref.get(torch.from_numpy(torso_index[start:stop]))
        viewmat, cam = c2w_to_conditions(torch.from_numpy(c2w[start:stop]).to(device))
        yield replace(
            base,
            viewmat=viewmat,
            cam=cam,
            audio=windows.to(device),
            eye=torch.from_numpy(eye[start:stop]).to(device)[:, None],
            image=None,
            head_mask=None,
            mouth_mask=None,
            face_rect=None,
            index=torch.arange(start, stop, device=device),
        )
        start = stop


def dataset_batches(ds: TalkingHeadDataset, batch_size: int) -> Iterator[FrameBatch]:
    """Yield the frames of a split in order, `batch_size` at a time."""
    for start in range(0, len(ds), batch_size):
        yield ds.get(torch.arange(start, min(start + batch_size, len(ds))))


def check_reference(loaded: LoadedAvatar, reference: Path, force: bool) -> None:
    """UserError (unless `force`) when the reference dataset is not the one the model was trained on."""
    if loaded.iteration < 1:
        raise UserError(
            f"the checkpoint of iteration {loaded.iteration} is untrained; "
            "train it further with ./train.sh --resume"
        )
    diffs = fingerprint_differences(loaded.dataset_meta.get("fingerprint"), dataset_fingerprint(reference))
    if not diffs:
        return
    what = f"--reference_path '{reference}' is not the dataset the model was trained on ({'; '.join(diffs)})"
    if not force:
        raise UserError(f"{what}; pass the training dataset, or --force to use this one anyway")
    print(f"warning: {what}; rendering with it because of --force", file=sys.stderr)


def reference_wav(reference_path: Path) -> np.ndarray:
    """The samples [n] of the dataset's aud.wav (16 kHz); UserError when it is missing."""
    path = Path(reference_path) / AUDIO_WAV
    if not path.is_file():
        raise UserError(f"'{path}' not found; pass the preprocessed dataset the model was trained on")
    return load_audio(path)


def rest_window(ref: TalkingHeadDataset, reference_path: Path, wav: np.ndarray) -> Tensor:
    """The normalised audio window [C,W] of the quietest training frame of the reference clip (`wav`, its
    aud.wav): what drives the mouth in silence (a still, closed mouth)."""
    aud_ids = [int(f["aud_id"]) for f in read_transforms(reference_path, "train")["frames"]]
    return ref.audio[quietest_frame(wav, aud_ids, ref.fps)]


def level_fft_size(loaded: LoadedAvatar) -> int:
    """Samples of the FFT windows whose levels decide silence: the model's log-mel size (512 otherwise)."""
    return int(loaded.audio_extractor.get("settings", {}).get("n_fft", N_FFT))


def rest_on_silence(segments: Iterable[Tensor], silent: np.ndarray, rest: Tensor) -> Iterator[Tensor]:
    """Yield the audio segments [k,C,W] (consecutive frames) with the windows of `silent` frames replaced by
    `rest` [C,W]."""
    first = 0
    for windows in segments:
        mask = torch.from_numpy(silent[first : first + len(windows)])
        if mask.any():
            windows = windows.clone()
            windows[mask] = rest.to(windows)
        first += len(windows)
        yield windows
