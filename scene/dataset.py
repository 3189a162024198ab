"""Reader of the preprocessed data contract (data/<subject>/): cameras, frames and per-frame conditions,
validated and preloaded as tensors on the training device."""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from data_utils.audio_features import feature_norm, normalise_windows
from data_utils.audio_io import SAMPLE_RATE, load_audio
from data_utils.lips import lip_measures
from data_utils.schema import (
    AUDIO_WAV,
    BACKGROUND,
    FORMAT_VERSION,
    FORMAT_VERSION_KEY,
    FRAME_KEYS,
    GT_IMGS,
    ORI_IMGS,
    PARSING,
    PREPROCESS_JSON,
    TORSO_IMGS,
    TRANSFORM_KEYS,
    features_name,
    mouth_loss_region,
    transforms_name,
)
from evaluation.frames import load_ground_truth
from utils.cli import UserError

_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass
class FrameBatch:
    """A batch of B frames: conditions and cameras (always), targets and masks (None when predicting)."""

    background: Tensor  # [B,H,W,3] bc.jpg with the frame's torso composited, in [0,1]
    viewmat: Tensor  # [B,4,4] world->camera (OpenCV)
    K: Tensor  # [B,3,3] intrinsics in pixels of this resolution
    audio: Tensor  # [B,C,W] normalised audio features
    eye: Tensor  # [B,1] eye openness
    cam: Tensor  # [B,12] flattened 3x4 camera-to-world
    image: Tensor | None = None  # [B,H,W,3] ground truth in [0,1] (None without targets)
    head_mask: Tensor | None = None  # [B,H,W,1] float {0,1}
    mouth_mask: Tensor | None = None  # [B,H,W,1] float {0,1}
    face_rect: Tensor | None = None  # [B,4] x0,y0,x1,y1 in pixels of this resolution
    lips: Tensor | None = None  # [B,3] standardised tracked lip measures (None unless the dataset loads them)
    index: Tensor | None = None  # [B] frame indices within the split

    @property
    def height(self) -> int:
        """Image height H."""
        return self.background.shape[1]

    @property
    def width(self) -> int:
        """Image width W."""
        return self.background.shape[2]


def _missing(root: Path, name: str) -> UserError:
    """The error for a file the contract requires."""
    return UserError(f"dataset '{root}' has no {name}; run ./preprocess.sh first")


def read_json(root: Path, name: str) -> dict:
    """Parsed JSON file root/name; UserError if missing or unreadable."""
    path = root / name
    if not path.is_file():
        raise _missing(root, name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"'{path}' is not valid JSON ({err}); rerun ./preprocess.sh") from err


def read_transforms(root: Path, split: str) -> dict:
    """transforms_<split>.json with its required keys checked."""
    name = transforms_name(split)
    meta = read_json(root, name)
    for key in TRANSFORM_KEYS:
        if key not in meta:
            raise UserError(f"'{root / name}' has no key '{key}'; rerun ./preprocess.sh")
    if not meta["frames"]:
        raise UserError(f"'{root / name}' lists no frames; rerun ./preprocess.sh")
    for key in FRAME_KEYS:
        if key not in meta["frames"][0]:
            raise UserError(f"'{root / name}' frames have no key '{key}'; rerun ./preprocess.sh")
    return meta


def _load_rgb(path: Path, size: int, resample: Image.Resampling) -> np.ndarray:
    """Image file -> uint8 [size,size,C] (RGB or RGBA as stored, resized if needed)."""
    with Image.open(path) as img:
        img = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
        if img.size != (size, size):
            img = img.resize((size, size), resample)
        return np.asarray(img)


def format_version(root: Path, preprocess: dict) -> int:
    """The format of dataset `root` from its preprocess.json `preprocess` (1 without the key); UserError when
    it is newer than this code reads."""
    version = int(preprocess.get(FORMAT_VERSION_KEY, 1))
    if version > FORMAT_VERSION:
        raise UserError(
            f"dataset '{root}' has format version {version}, this code reads up to {FORMAT_VERSION}; "
            "update egstalker or rerun ./preprocess.sh"
        )
    return version


def _rect_mask(rects: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks [T,size,size] of the pixels whose index lies within rectangles [T,4] (edges included)."""
    ys, xs = np.arange(size)[:, None], np.arange(size)[None, :]
    x0, y0, x1, y1 = rects.T
    return (
        (xs[None] >= x0[:, None, None])
        & (xs[None] <= x1[:, None, None])
        & (ys[None] >= y0[:, None, None])
        & (ys[None] <= y1[:, None, None])
    )


class TalkingHeadDataset:
    """One split of a preprocessed subject on `device`: frames, backgrounds, masks, cameras, audio."""

    def __init__(
        self,
        root: Path | str,
        split: str = "train",
        resolution: int | None = None,
        device: torch.device | str = "cpu",
        audio_extractor: str | None = None,
        audio_norm: dict | None = None,
        targets: bool = True,
        lips: bool = False,
        lip_norm: dict | None = None,
    ) -> None:
        """Validate and load data/<subject>/ (`split` train|val), resized to `resolution` px; normalise audio
        with `audio_norm` {"mean","std"} ([C] lists) or the training split's per-channel statistics. Without
        `targets` (rendering new audio) the frames and head masks are not loaded, only the backgrounds. With
        `lips` the tracked lip measures are loaded too (audio_code 'lips'), standardised by `lip_norm` or the
        training split's statistics."""
        self.root = root = Path(root)
        self.split = split
        if not root.is_dir():
            raise UserError(f"dataset '{root}' does not exist; run ./preprocess.sh on your video first")
        preprocess = read_json(root, PREPROCESS_JSON)
        version = format_version(root, preprocess)
        meta = read_transforms(root, split)
        frames = meta["frames"]
        self.source_size = int(meta["w"])
        self.size = size = int(resolution or self.source_size)
        ratio = size / self.source_size
        self.fps = float(meta.get("fps", preprocess.get("fps", 25)))
        self.focal = float(meta["focal_len"]) * ratio
        name = audio_extractor or preprocess.get("audio_extractor", {}).get("name", "logmel")
        self.audio_extractor = {
            "name": name,
            "settings": preprocess.get("audio_extractor", {}).get("settings", {}),
        }
        self.device = torch.device(device)

        c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32)
        if meta.get("camera_convention", "opencv") == "opengl":
            c2w = c2w @ _OPENGL_TO_OPENCV
        k = torch.tensor(
            [
                [self.focal, 0, float(meta["cx"]) * ratio],
                [0, self.focal, float(meta["cy"]) * ratio],
                [0, 0, 1],
            ]
        )
        self.viewmats = torch.linalg.inv(c2w)
        self.Ks = k.expand(len(frames), 3, 3).clone()
        self.cams = c2w[:, :3, :4].reshape(-1, 12)
        self.eyes = torch.tensor([[float(f["eye"])] for f in frames])
        self.face_rects = torch.tensor([f["face_rect"] for f in frames], dtype=torch.float32) * ratio
        mouth = mouth_loss_region([f["mouth_rect"] for f in frames], self.source_size, size, version)
        self.mouth_masks = torch.from_numpy(_rect_mask(mouth, size))[..., None]

        self.audio, self.audio_norm = self._load_audio(name, frames, audio_norm)
        self.images, self.backgrounds, self.head_masks = self._load_images(
            [int(f["img_id"]) for f in frames], targets
        )
        self.lips, self.lip_norm = self._load_lips(frames, lip_norm) if lips else (None, None)
        for attr in ("viewmats", "Ks", "cams", "eyes", "face_rects", "mouth_masks", "audio", "lips"):
            if getattr(self, attr) is not None:
                setattr(self, attr, getattr(self, attr).to(self.device))

    def _load_audio(self, name: str, frames: list[dict], norm: dict | None) -> tuple[Tensor, dict]:
        """Per-frame audio windows [T,C,W] normalised per channel, and the {"mean","std"} used."""
        fname = features_name(name)
        if not (self.root / fname).is_file():
            raise _missing(self.root, fname)
        feats = np.load(self.root / fname).astype(np.float32)
        if feats.ndim != 3:
            raise UserError(
                f"'{self.root / fname}' has shape {feats.shape}, expected [frames, channels, window]"
            )
        if norm is None:
            train_ids = [int(f["aud_id"]) for f in read_transforms(self.root, "train")["frames"]]
            norm = feature_norm(name, feats[np.clip(train_ids, 0, len(feats) - 1)])
        ids = np.clip([int(f["aud_id"]) for f in frames], 0, len(feats) - 1)
        return torch.from_numpy(normalise_windows(feats[ids], norm)), norm

    def _lip_measures(self, frames: list[dict]) -> np.ndarray:
        """Lip measures [T,3] of the frames' tracked landmarks (ori_imgs/<img_id>.lms)."""
        paths = [self.root / ORI_IMGS / f"{int(f['img_id'])}.lms" for f in frames]
        for path in paths:
            if not path.is_file():
                raise _missing(self.root, f"{ORI_IMGS}/{path.name}")
        return lip_measures(np.stack([np.loadtxt(path, ndmin=2)[:, :2] for path in paths]))

    def _load_lips(self, frames: list[dict], norm: dict | None) -> tuple[Tensor, dict]:
        """The frames' lip measures [T,3] standardised by `norm` {"mean","std"} ([3] lists) or the training
        split's statistics (0 where a frame has no face), and the norm used."""
        own = self._lip_measures(frames)
        if norm is None:
            train = (
                own
                if self.split == "train"
                else self._lip_measures(read_transforms(self.root, "train")["frames"])
            )
            norm = {
                "mean": np.nanmean(train, axis=0).tolist(),
                "std": np.maximum(np.nanstd(train, axis=0), 1e-3).tolist(),
            }
        standard = (own - np.asarray(norm["mean"])) / np.asarray(norm["std"])
        return torch.from_numpy(np.nan_to_num(standard).astype(np.float32)), norm

    def _load_images(self, ids: list[int], targets: bool) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """uint8 frames [T,H,W,3], uint8 backgrounds (torso over bc) [T,H,W,3], bool head masks [T,H,W,1];
        frames and masks are None without `targets`."""
        root, size = self.root, self.size
        needed = (
            ((GT_IMGS, "jpg"), (TORSO_IMGS, "png"), (PARSING, "png")) if targets else ((TORSO_IMGS, "png"),)
        )
        for sub, ext in needed:
            for i in ids:
                if not (root / sub / f"{i}.{ext}").is_file():
                    raise _missing(root, f"{sub}/{i}.{ext}")
        if not (root / BACKGROUND).is_file():
            raise _missing(root, BACKGROUND)
        bc = _load_rgb(root / BACKGROUND, size, Image.Resampling.BILINEAR).astype(np.float32)

        def load(i: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
            torso = _load_rgb(root / TORSO_IMGS / f"{i}.png", size, Image.Resampling.BILINEAR)
            if torso.shape[-1] == 3:
                raise UserError(
                    f"'{root / TORSO_IMGS / f'{i}.png'}' has no alpha channel; rerun ./preprocess.sh"
                )
            alpha = torso[..., 3:].astype(np.float32) / 255
            background = np.round(torso[..., :3] * alpha + bc * (1 - alpha)).astype(np.uint8)
            if not targets:
                return None, background, None
            image = load_ground_truth(root / GT_IMGS / f"{i}.jpg", size, size)
            parsing = _load_rgb(root / PARSING / f"{i}.png", size, Image.Resampling.NEAREST)
            head = (parsing[..., 0] > 127) & (parsing[..., 1] < 128) & (parsing[..., 2] < 128)
            return image, background, head[..., None]

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            loaded = list(pool.map(load, ids))
        images, backgrounds, heads = zip(*loaded, strict=True)

        def stacked(arrays: tuple[np.ndarray, ...]) -> Tensor:
            """The per-frame arrays as one tensor [T,...] on the dataset's device."""
            return torch.from_numpy(np.stack(arrays)).to(self.device)

        if not targets:
            return None, stacked(backgrounds), None
        return stacked(images), stacked(backgrounds), stacked(heads)

    def __len__(self) -> int:
        """Number of frames in this split."""
        return self.backgrounds.shape[0]

    @property
    def audio_shape(self) -> tuple[int, int]:
        """(channels C, window W) of the audio features."""
        return self.audio.shape[1], self.audio.shape[2]

    def meta(self) -> dict:
        """Dataset facts a model needs at prediction time (JSON-serialisable)."""
        return {
            "resolution": self.size,
            "source_size": self.source_size,
            "focal": self.focal,
            "fps": self.fps,
            "audio_shape": list(self.audio_shape),
            "root": str(self.root),
        }

    def get(self, indices: Tensor) -> FrameBatch:
        """FrameBatch of the frames at `indices` [B] (long, on any device) with images as float in [0,1]."""
        idx = indices.to(self.device)
        return FrameBatch(
            background=self.backgrounds[idx].float() / 255,
            viewmat=self.viewmats[idx],
            K=self.Ks[idx],
            audio=self.audio[idx],
            eye=self.eyes[idx],
            cam=self.cams[idx],
            image=None if self.images is None else self.images[idx].float() / 255,
            head_mask=None if self.head_masks is None else self.head_masks[idx].float(),
            mouth_mask=self.mouth_masks[idx].float(),
            face_rect=self.face_rects[idx],
            lips=None if self.lips is None else self.lips[idx],
            index=idx,
        )

    def sample(self, batch_size: int, generator: torch.Generator) -> FrameBatch:
        """Random FrameBatch of batch_size frames drawn with `generator` (on this dataset's device)."""
        return self.get(torch.randint(len(self), (batch_size,), generator=generator, device=generator.device))

    def evenly_spaced(self, count: int) -> Tensor:
        """Indices [min(count,T)] spread evenly over the split."""
        n = min(count, len(self))
        return torch.tensor([math.floor(i * len(self) / n) for i in range(n)], device=self.device)


def load_splits(
    root: Path | str,
    resolution: int | None = None,
    device: torch.device | str = "cpu",
    audio_norm: dict | None = None,
    targets: bool = True,
    lips: bool = False,
) -> tuple[TalkingHeadDataset, TalkingHeadDataset]:
    """The train and val splits of a subject (TalkingHeadDataset's arguments), the val split's audio and lip
    measures normalised by the train split's statistics (or the audio by `audio_norm`)."""
    train = TalkingHeadDataset(
        root, "train", resolution, device, audio_norm=audio_norm, targets=targets, lips=lips
    )
    val = TalkingHeadDataset(
        root, "val", resolution, device, audio_norm=train.audio_norm, targets=targets, lips=lips,
        lip_norm=train.lip_norm,
    )  # fmt: skip
    return train, val


def with_face(lips: np.ndarray) -> np.ndarray:
    """Which frames of standardised tracked lip measures [T,3] have a face (the dataset gives 0s without one)
    -> bool [T]."""
    return np.isfinite(lips).all(axis=1) & (np.abs(lips).sum(axis=1) > 0)


def split_audio(root: Path, frames: list[dict], fps: float) -> np.ndarray:
    """The samples [n] of root/aud.wav (SAMPLE_RATE) under `frames` of a split: len(frames) frames at `fps`
    from the first frame's aud_id."""
    wav = load_audio(root / AUDIO_WAV, SAMPLE_RATE)
    start = round(int(frames[0]["aud_id"]) / fps * SAMPLE_RATE)
    return wav[start : start + round(len(frames) / fps * SAMPLE_RATE)]
