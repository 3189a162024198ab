"""The dataset folder contract (docs/data-format.md): the file names and JSON keys that the writer
(data_utils.process, ./preprocess.sh) and the reader (scene.dataset) share. Change them here, in both at once,
and in docs/data-format.md."""

from __future__ import annotations

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

# mouth_rect is the outer-lip box grown at write by MOUTH_RECT_PAD x its width / height on each side; the
# reader's mouth-loss mask grows it again by MOUTH_MASK_GROW x its larger side + 2 px. Both are part of the
# trained models' loss; folding them into one margin changes that mask and needs a new A/B.
MOUTH_RECT_PAD = 0.15
MOUTH_MASK_GROW = 0.15


def transforms_name(split: str) -> str:
    """File name of a split's cameras and frames: transforms_train.json or transforms_val.json."""
    return f"transforms_{split}.json"


def features_name(extractor: str) -> str:
    """File name of the audio features [frames, channels, window] of an extractor: aud_<extractor>.npy."""
    return f"aud_{extractor}.npy"
