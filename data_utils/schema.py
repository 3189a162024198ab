"""The dataset folder contract (docs/data-format.md): the file names, JSON keys and format version that the
writer (data_utils.process, ./preprocess.sh) and the reader (scene.dataset) share, and the mouth-loss region
the reader derives from mouth_rect. Change them here, in both at once, and in docs/data-format.md."""

from __future__ import annotations

import numpy as np

ORI_IMGS = "ori_imgs"  # <i>.jpg cropped frame, <i>.lms 478 MediaPipe landmarks "x y" (crop pixels)
GT_IMGS = "gt_imgs"  # <i>.jpg the frames the model must reproduce
PARSING = "parsing"  # <i>.png head (255,0,0), neck (0,255,0), torso (0,0,255), background (255,255,255)
TORSO_IMGS = "torso_imgs"  # <i>.png RGBA torso and neck without the head
IMAGE_DIRS = (ORI_IMGS, GT_IMGS, PARSING, TORSO_IMGS)
BACKGROUND = "bc.jpg"  # background plate with the person removed
TRACK_PARAMS = "track_params.pt"  # per-frame head pose, focal length, landmark shape, expressions
AUDIO_WAV = "aud.wav"  # 16 kHz mono (data_utils.audio_io.SAMPLE_RATE)
PREPROCESS_JSON = "preprocess.json"  # settings, versions, timings, quality report; marks a dataset folder
PREVIEW = "preview.jpg"
SPLITS = ("train", "val")

# transforms_<split>.json: top-level keys, then the keys of each entry of "frames". Optional top-level keys:
# "fps" (else preprocess.json's, else 25) and "camera_convention" ("opencv", the default, or "opengl").
TRANSFORM_KEYS = ("focal_len", "cx", "cy", "w", "h", "frames")
FRAME_KEYS = ("img_id", "aud_id", "transform_matrix", "eye", "face_rect", "mouth_rect")

# preprocess.json's FORMAT_VERSION_KEY: the folder's format, 1 where absent (written before the key existed).
# 2: mouth_rect is the bare outer-lip box; in format 1 it is the box that mouth_loss_region's first step
# makes.
FORMAT_VERSION_KEY = "format_version"
FORMAT_VERSION = 2

# The mouth-loss region (mouth_loss_region) grows the outer-lip box by MOUTH_PAD x its width / height on each
# side, rounded out to whole dataset pixels and clipped to the image, then, at the training resolution, by
# MOUTH_GROW x that box's larger side + MOUTH_GROW_PX. It is part of the trained models' loss: a new shape
# needs a new A/B.
MOUTH_PAD = 0.15
MOUTH_GROW = 0.15
MOUTH_GROW_PX = 2.0


def transforms_name(split: str) -> str:
    """File name of a split's cameras and frames: transforms_train.json or transforms_val.json."""
    return f"transforms_{split}.json"


def features_name(extractor: str) -> str:
    """File name of the audio features [frames, channels, window] of an extractor: aud_<extractor>.npy."""
    return f"aud_{extractor}.npy"


def mouth_loss_region(
    rects: np.ndarray | list[list[float]], size: int, resolution: int, version: int = FORMAT_VERSION
) -> np.ndarray:
    """Take the mouth_rect boxes [T,4] (x0,y0,x1,y1) of a `size`-px dataset of format `version`; return the
    mouth-loss regions [T,4] in pixels of `resolution` (the mask: the pixels whose index lies within)."""
    rects = np.asarray(rects, dtype=np.float64)
    if version >= 2:
        lo, hi = rects[:, :2], rects[:, 2:]
        margin = (hi - lo) * MOUTH_PAD
        rects = np.concatenate(
            [np.floor(np.clip(lo - margin, 0, size)), np.ceil(np.clip(hi + margin, 0, size))], 1
        )
    rects = rects * (resolution / size)
    grow = MOUTH_GROW * (rects[:, 2:] - rects[:, :2]).max(axis=1, keepdims=True) + MOUTH_GROW_PX
    return np.concatenate([rects[:, :2] - grow, rects[:, 2:] + grow], 1)
