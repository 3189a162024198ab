"""preprocess.sh: turn one talking-head video into a training dataset (DESIGN.md contract), no downloads."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import torch
from tqdm import tqdm

from data_utils import landmark_indices as li
from data_utils import schema
from data_utils.audio_features import HUB_NAME, AudioFeatureExtractor, get_extractor
from data_utils.audio_io import SAMPLE_RATE, load_audio, write_wav
from data_utils.background import estimate_background, sample_indices
from data_utils.crop import stable_square_crop, to_crop_coords
from data_utils.eyes import eye_openness
from data_utils.face_mesh import FaceMesh, detect_sequence
from data_utils.parsing import (
    PersonSegmenter,
    PlateRefiner,
    label_regions,
    labels_to_rgb,
)
from data_utils.preprocess_cli import parse_args
from data_utils.preprocess_config import PreprocessConfig, saved_settings
from data_utils.quality import (
    frame_stats,
    print_report,
    quality_report,
    save_preview,
)
from data_utils.smoothing import fill_gaps, smooth_sequence
from data_utils.torso import torso_rgba
from data_utils.trackers import get_tracker
from data_utils.tracking import Tracker
from data_utils.video_io import VideoInfo, probe_video, read_frames
from evaluation.lipsync import clip_sync
from utils.atomic import atomic_dir, atomic_write_json
from utils.cli import UserError, run_cli
from utils.output_policy import DATASET, check_output
from utils.versions import package_version

MIN_SECONDS = 2.0
LONG_SECONDS = 30.0
PASS1_MAX_SIDE = 640
MAX_MISSING_SHARE = 0.10
JPEG_QUALITY = 95
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
MIN_DECODED_SHARE = 0.8  # fewer decoded frames than this share of the header's length: truncated
MAX_ROLL_DEG = 40.0  # a face rolled further than this is refused (masks and poses assume it upright)
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".wma")


@dataclass
class Timings:
    """Wall-clock seconds of each pipeline stage."""

    seconds: dict[str, tuple[float, float]] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage `name` (wall clock and CPU time of the whole process)."""
        start, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds[name] = (time.perf_counter() - start, time.process_time() - cpu)

    def as_dict(self, frames: int) -> dict:
        """Return {stage: {"seconds", "fps", "cpu_seconds"}} with fps = dataset frames / wall seconds."""
        return {
            name: {
                "seconds": round(s, 3),
                "fps": round(frames / s, 2) if s > 0 else 0.0,
                "cpu_seconds": round(c, 3),
            }
            for name, (s, c) in self.seconds.items()
        }


class ImageWriter:
    """Encodes and writes images on worker threads (OpenCV releases the GIL), with a bounded backlog."""

    def __init__(self, workers: int = 2, max_pending: int = 64) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future] = []
        self._max_pending = max_pending

    def submit(self, paths: list[Path], image: np.ndarray, ext: str, params: list[int]) -> None:
        """Queue writing RGB [H,W,3] or RGBA [H,W,4] uint8 `image`, encoded as `ext`, to each of `paths`."""
        if len(self._pending) >= self._max_pending:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(_write_image, paths, image, ext, params))

    def close(self) -> None:
        """Wait for every queued write; re-raise the first error."""
        try:
            for fut in self._pending:
                fut.result()
        finally:
            self._pool.shutdown(wait=True)


def _write_image(paths: list[Path], image: np.ndarray, ext: str, params: list[int]) -> None:
    """Encode RGB/RGBA `image` as `ext` and write the bytes to each path."""
    code = cv2.COLOR_RGBA2BGRA if image.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, code), params)
    if not ok:
        raise RuntimeError(f"could not encode {paths[0]}")
    for path in paths:
        path.write_bytes(data.tobytes())


def file_advice(out_dir: Path) -> str:
    """What to tell a user whose OUT_DIR is an existing file (an audio file was probably meant as --audio)."""
    if out_dir.suffix.lower() in AUDIO_SUFFIXES:
        return f"did you mean --audio {out_dir}?"
    return "choose a new folder name for OUT_DIR"


def check_out_dir(cfg: PreprocessConfig) -> None:
    """Apply the output-folder policy to OUT_DIR (the video and --audio are its inputs)."""
    check_output(cfg.out_dir, cfg.force, DATASET, (cfg.video, cfg.audio), file_advice(cfg.out_dir))


def check_inputs(cfg: PreprocessConfig) -> VideoInfo:
    """Validate the video, the audio source and OUT_DIR before any work; return the video's info."""
    check_out_dir(cfg)
    info = probe_video(cfg.video)
    if cfg.audio is not None and not cfg.audio.is_file():
        raise UserError(f"audio file '{cfg.audio}' not found; check the --audio path")
    if cfg.audio is None and not info.has_audio:
        raise UserError(f"no audio track in '{cfg.video}'; supply one with --audio FILE")
    if info.duration < MIN_SECONDS:
        raise UserError(
            f"'{cfg.video}' is only {info.duration:.1f} s long; supply a clip of at least {MIN_SECONDS:g} s"
        )
    if info.duration > LONG_SECONDS:
        print(f"note: the clip is {info.duration:.0f} s long; training will be slower than on a 10-30 s clip")
    return info


@dataclass
class Pass1:
    """Face detection on the downscaled source: landmarks in source pixels and what was found."""

    lms: np.ndarray  # [T,478,3] source pixels, gaps filled
    face_counts: np.ndarray  # [T]
    filled: np.ndarray  # [T] bool
    crop: tuple[int, int, int]
    preview_frame: np.ndarray  # pass-1 RGB frame from the middle of the clip
    scale: float  # source pixels per pass-1 pixel


def _frames_with_sample(frames: Iterator[np.ndarray], index: int, keep: dict) -> Iterator[np.ndarray]:
    """Yield `frames` unchanged, keeping frame number `index` (or the last one before it) in keep["frame"]."""
    for i, frame in enumerate(frames):
        if i <= index:
            keep["frame"] = frame
        yield frame


def run_pass1(cfg: PreprocessConfig, info: VideoInfo) -> Pass1:
    """Decode downscaled frames, track the face, check coverage, fill short gaps, choose the stable crop."""
    estimate = max(1, round(info.duration * cfg.fps))
    keep: dict = {}
    frames = read_frames(cfg.video, cfg.fps, max_side=PASS1_MAX_SIDE)
    lms, counts = detect_sequence(_frames_with_sample(frames, estimate // 2, keep), progress=True)
    t = len(counts)
    name = cfg.video.name
    check_decoded_length(name, t, estimate, cfg.fps)
    if t == 0 or not (counts > 0).any():
        check_upright(name, keep["frame"])
        raise UserError(f"no face found in '{name}'; supply a video where one face is clearly visible")
    if (counts > 1).mean() > 0.5:
        raise UserError(f"several faces in most frames of '{name}'; crop the video to one person")
    missing = int((counts == 0).sum())
    check_roll(name, lms[counts > 0])
    if missing > MAX_MISSING_SHARE * t:
        check_upright(name, keep["frame"])
        raise UserError(
            f"no face in {missing} of {t} frames ({missing / t:.0%}) of '{name}'; "
            "trim the video to the part where the face is visible"
        )
    scale = info.width / keep["frame"].shape[1]
    filled_lms, filled = fill_gaps(lms * scale, cfg.max_gap_frames)
    still = np.isnan(filled_lms.reshape(t, -1)).any(axis=1)
    if still.any():
        first = int(np.flatnonzero(still)[0])
        raise UserError(
            f"no face from frame {first} on for more than --max_gap_frames {cfg.max_gap_frames} frames; "
            "trim the video or raise --max_gap_frames"
        )
    crop = stable_square_crop(filled_lms[..., :2], info.width, info.height)
    return Pass1(filled_lms, counts, filled, crop, keep["frame"], scale)


def check_decoded_length(name: str, decoded: int, expected: int, fps: float) -> None:
    """UserError when far fewer frames decode than the header's duration promises (a truncated file), or
    when what decodes is shorter than MIN_SECONDS."""
    if decoded < MIN_DECODED_SHARE * expected and expected - decoded >= 3:
        raise UserError(
            f"decoded {decoded} of about {expected} frames of '{name}'; the file looks truncated: "
            "copy or download it again, or re-encode it"
        )
    if decoded < round(MIN_SECONDS * fps) - 1:
        raise UserError(
            f"only {decoded / fps:.1f} s of '{name}' decode; supply a clip of at least {MIN_SECONDS:g} s"
        )


def face_roll_deg(lms: np.ndarray) -> np.ndarray:
    """In-plane rotation (degrees, image y down; 0 = upright, +90 = turned clockwise) of landmarks
    [T,478,2+] from the line between the eye centres."""
    right = lms[:, li.RIGHT_EYE_CORNERS, :2].mean(axis=1)  # the subject's right eye: image left when upright
    left = lms[:, li.LEFT_EYE_CORNERS, :2].mean(axis=1)
    d = left - right
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def rotation_advice(roll: float) -> str:
    """The ffmpeg filter that turns a face rolled by `roll` degrees upright, as advice."""
    if abs(roll) > 135:
        how = "by 180 degrees (ffmpeg -i IN -vf 'hflip,vflip' OUT)"
    elif roll > 0:
        how = "90 degrees counter-clockwise (ffmpeg -i IN -vf transpose=2 OUT)"
    else:
        how = "90 degrees clockwise (ffmpeg -i IN -vf transpose=1 OUT)"
    return f"rotate the video {how} and run again"


def check_roll(name: str, lms: np.ndarray) -> None:
    """UserError when the faces found (landmarks [K,478,2+]) are rolled beyond MAX_ROLL_DEG."""
    if len(lms) == 0:
        return
    roll = float(np.degrees(np.angle(np.exp(1j * np.radians(face_roll_deg(lms))).mean())))
    if abs(roll) > MAX_ROLL_DEG:
        raise UserError(
            f"the face in '{name}' is rotated by about {roll:.0f} degrees; {rotation_advice(roll)}"
        )


def check_upright(name: str, frame: np.ndarray) -> None:
    """Before refusing a clip for want of a face: UserError naming the rotation when one appears in RGB
    `frame` [H,W,3] turned by 90, 180 or 270 degrees."""
    with FaceMesh(static_image_mode=True) as mesh:
        for k, roll in ((2, 180.0), (1, 90.0), (3, -90.0)):
            if mesh.detect(np.ascontiguousarray(np.rot90(frame, k))):
                raise UserError(
                    f"the face in '{name}' is rotated by about {roll:.0f} degrees; {rotation_advice(roll)}"
                )


def _nearest_face(faces: list[np.ndarray], expected: np.ndarray) -> np.ndarray | None:
    """Pick the detected face [478,3] nearest the expected landmarks' centre (None if nothing was found)."""
    if not faces:
        return None
    centre = expected[:, :2].mean(axis=0)
    return min(faces, key=lambda f: float(np.linalg.norm(f[:, :2].mean(axis=0) - centre)))


@dataclass
class Pass2:
    """Per-frame results of the cropped pass."""

    raw_lms: np.ndarray  # [T,478,3] crop pixels (pass-1 landmarks where the crop had no face)
    luma: np.ndarray  # [T]
    sharpness: np.ndarray  # [T]
    preview: tuple[np.ndarray, np.ndarray] | None  # (crop frame, parsing) of the preview frame
    person_added: float  # share of the pixels that the background plate added to the person masks


def run_pass2(cfg: PreprocessConfig, p1: Pass1, out: Path, timings: Timings) -> Pass2:
    """Decode the cropped frames and write ori/gt images; estimate the background; then write the parsing and
    torso images from the segmenter's person masks grown by the background plate."""
    size, t = cfg.size, len(p1.lms)
    expected = to_crop_coords(p1.lms, p1.crop, size)
    for sub in schema.IMAGE_DIRS:
        (out / sub).mkdir()
    bg_keep = set(sample_indices(t).tolist())
    bg_frames, bg_masks = [], []
    segmented = []  # per frame, the segmenter's person mask as np.packbits of [H,W]
    raw = expected.copy()
    luma, sharp = np.zeros(t), np.zeros(t)
    preview = None
    done = 0
    writer = ImageWriter()
    jpg = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    frames = read_frames(cfg.video, cfg.fps, crop=p1.crop, size=size)
    try:
        with timings.stage("crop_parse_write"), FaceMesh() as mesh, PersonSegmenter() as seg:
            bar = tqdm(frames, total=t, desc="crop+parse", unit="frame", file=sys.stderr, dynamic_ncols=True)
            for i, frame in enumerate(bar):
                if i >= t:
                    break
                done = i + 1
                face = _nearest_face(mesh.detect(frame), expected[i])
                if face is not None:
                    raw[i] = face
                person = seg.person_mask(frame)
                segmented.append(np.packbits(person))
                writer.submit(
                    [out / "ori_imgs" / f"{i}.jpg", out / "gt_imgs" / f"{i}.jpg"], frame, ".jpg", jpg
                )
                luma[i], sharp[i] = frame_stats(frame)
                if i in bg_keep:
                    bg_frames.append(frame)
                    bg_masks.append(label_regions(person, raw[i]) > 0)
                if i == t // 2:
                    preview = frame
    finally:
        writer.close()
    if done < t:
        raise UserError(
            f"'{cfg.video}' yielded {done} frames on the second read but {t} on the first; re-encode it"
        )
    with timings.stage("background"):
        background = estimate_background(bg_frames, bg_masks)
        cv2.imwrite(str(out / "bc.jpg"), cv2.cvtColor(background, cv2.COLOR_RGB2BGR), jpg)
    with timings.stage("refine_parsing"):
        added, middle = write_parsing(out, raw, segmented, background)
    preview = None if preview is None else (preview, middle)
    return Pass2(raw, luma, sharp, preview, added)


def write_parsing(
    out: Path, lms: np.ndarray, segmented: list[np.ndarray], background: np.ndarray
) -> tuple[float, np.ndarray]:
    """Write parsing/ and torso_imgs/ from the segmenter's person masks (np.packbits of [H,W] per frame)
    grown by the pixels that differ from the background plate [H,W,3]; landmarks lms [T,478,2+]
    -> (share of pixels the plate added, middle frame's parsing)."""
    refine = PlateRefiner(background)
    t = len(lms)
    h, w = background.shape[:2]

    def one(i: int) -> tuple[float, np.ndarray | None]:
        """Parse frame i -> (share of its pixels the plate added, its parsing if it is the middle frame)."""
        frame = cv2.cvtColor(cv2.imread(str(out / "gt_imgs" / f"{i}.jpg")), cv2.COLOR_BGR2RGB)
        mask = np.unpackbits(segmented[i], count=h * w).reshape(h, w).astype(bool)
        person = label_regions(mask, lms[i]) > 0
        refined = refine(person, frame)
        parsing = labels_to_rgb(label_regions(refined, lms[i]))
        _write_image([out / "parsing" / f"{i}.png"], parsing, ".png", PNG_PARAMS)
        _write_image([out / "torso_imgs" / f"{i}.png"], torso_rgba(frame, parsing), ".png", PNG_PARAMS)
        return float((refined & ~person).mean()), parsing if i == t // 2 else None

    added = np.zeros(t)
    middle = None
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(one, range(t))
        for i, (share, parsing) in enumerate(
            tqdm(results, total=t, desc="refine masks", unit="frame", file=sys.stderr, dynamic_ncols=True)
        ):
            added[i] = share
            middle = parsing if parsing is not None else middle
    return float(added.mean()), middle


def _bounds(points: np.ndarray) -> list[float]:
    """Bounding box [x0,y0,x1,y1] of points [K,2], not rounded and not clipped to the image."""
    return [*points.min(axis=0).tolist(), *points.max(axis=0).tolist()]


def _rect(points: np.ndarray, size: int) -> list[int]:
    """Bounding box [x0,y0,x1,y1] of points [K,2] rounded out to whole pixels, clipped to the image."""
    lo, hi = np.clip(points.min(axis=0), 0, size), np.clip(points.max(axis=0), 0, size)
    return [int(math.floor(lo[0])), int(math.floor(lo[1])), int(math.ceil(hi[0])), int(math.ceil(hi[1]))]


def fps_value(fps: float) -> int | float:
    """Return the frame rate as an int when it is whole (25.0 -> 25), as written to the JSON files."""
    return int(fps) if float(fps).is_integer() else fps


def camera_to_world(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Take head->camera rotations [T,3,3] and translations [T,3]; return camera-to-world matrices [T,4,4]."""
    c2w = np.tile(np.eye(4), (len(rot), 1, 1))
    rt = np.transpose(rot, (0, 2, 1))
    c2w[:, :3, :3] = rt
    c2w[:, :3, 3] = -np.einsum("tij,tj->ti", rt, trans)
    return c2w


def write_transforms(
    out: Path, cfg: PreprocessConfig, lms2d: np.ndarray, track: dict, eye: np.ndarray
) -> int:
    """Write transforms_train.json / transforms_val.json; return the number of validation frames."""
    t, size = len(lms2d), cfg.size
    c2w = camera_to_world(np.asarray(track["R"], np.float64), np.asarray(track["t"], np.float64))
    fps = fps_value(cfg.fps)
    frames = [
        {
            "img_id": i,
            "aud_id": i,
            "transform_matrix": c2w[i].tolist(),
            "eye": float(eye[i]),
            "face_rect": _rect(lms2d[i, li.FACE_OVAL], size),
            "mouth_rect": _bounds(lms2d[i, li.LIPS_OUTER]),
        }
        for i in range(t)
    ]
    n_val = min(max(math.ceil(t / 11), round(cfg.fps)), t - 1)
    head = {
        "focal_len": float(track["focal"]),
        "cx": size / 2,
        "cy": size / 2,
        "w": size,
        "h": size,
        "fps": fps,
        "camera_convention": "opencv",
    }
    atomic_write_json(out / schema.transforms_name("train"), {**head, "frames": frames[: t - n_val]})
    atomic_write_json(out / schema.transforms_name("val"), {**head, "frames": frames[t - n_val :]})
    return n_val


def write_landmarks(out: Path, lms2d: np.ndarray) -> None:
    """Write ori_imgs/<i>.lms (478 rows "x y", crop pixels) for landmarks [T,478,2]."""
    for i, pts in enumerate(lms2d):
        np.savetxt(out / "ori_imgs" / f"{i}.lms", pts[:, :2], fmt="%.3f")


def make_extractor(cfg: PreprocessConfig) -> AudioFeatureExtractor:
    """Build the audio feature extractor; --extractor_model is its model_dir (a folder, or a HuggingFace hub
    name for hubert/wav2vec2) or model_path (file)."""
    settings = {}
    model = cfg.extractor_model
    if model is not None:
        hub = cfg.audio_extractor in ("hubert", "wav2vec2") and bool(HUB_NAME.match(str(model)))
        if not model.exists() and not hub:
            raise UserError(f"--extractor_model '{model}' not found; check the path")
        settings["model_dir" if hub or model.is_dir() else "model_path"] = str(model)
    return get_extractor(cfg.audio_extractor, **settings)


def run_audio(
    cfg: PreprocessConfig, extractor: AudioFeatureExtractor, out: Path, num_frames: int
) -> tuple[dict, np.ndarray]:
    """Write aud.wav (16 kHz mono) and aud_<extractor>.npy [T,C,W]; return (extractor record, audio [n])."""
    wav = load_audio(cfg.audio if cfg.audio is not None else cfg.video, SAMPLE_RATE)
    write_wav(out / schema.AUDIO_WAV, wav, SAMPLE_RATE)
    feats = np.asarray(extractor.extract(wav, SAMPLE_RATE, cfg.fps, num_frames), np.float32)
    np.save(out / schema.features_name(extractor.name), feats)
    record = {"name": extractor.name, "settings": extractor.settings(), "shape": list(feats.shape)}
    return record, wav


def shift_windows(feats: np.ndarray, frames: int) -> np.ndarray:
    """Feature windows [T,C,W] moved in time so that out[t] = feats[t + frames], the edge frame repeated
    where that falls outside -> [T,C,W]."""
    idx = np.clip(np.arange(len(feats)) + frames, 0, len(feats) - 1)
    return feats[idx]


def align_audio(out: Path, record: dict, sync: dict) -> dict:
    """Shift the dataset's audio features by the clip's audio-video offset (`sync`: evaluation.lipsync's
    clip_sync) so that frame t's window is centred on the sound its mouth shows; return the extractor record
    with `shift_frames` (0 when the sync was not judged)."""
    shift = -int(sync["offset_frames"]) if sync["judged"] else 0
    if shift:
        path = out / schema.features_name(record["name"])
        np.save(path, shift_windows(np.load(path), shift))
    return {**record, "shift_frames": shift}


def versions() -> dict:
    """Versions of the libraries that shape the output (pocketsphinx: None when not installed)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mediapipe": mp.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pocketsphinx": package_version("pocketsphinx"),  # decodes the phonemes and visemes
    }


@dataclass
class Tools:
    """The head tracker and audio feature extractor, built before any work so bad choices fail fast."""

    tracker: Tracker
    extractor: AudioFeatureExtractor


def build(cfg: PreprocessConfig, info: VideoInfo, tools: Tools, out: Path) -> dict:
    """Run every stage into the (temporary) folder `out`; return the preprocess.json record."""
    timings = Timings()
    with timings.stage("detect"):
        p1 = run_pass1(cfg, info)
    t = len(p1.lms)
    p2 = run_pass2(cfg, p1, out, timings)
    with timings.stage("smooth"):
        lms = smooth_sequence(p2.raw_lms, cfg.fps)
        write_landmarks(out, lms)
    with timings.stage("track"):
        result = tools.tracker.fit(lms[..., :2], lms[..., 2], cfg.size, cfg.fps, progress=True)
        track = result.to_dict()
        torch.save(track, out / schema.TRACK_PARAMS)
    with timings.stage("transforms"):
        eye = np.nan_to_num(eye_openness(lms[..., :2]), nan=1.0)
        n_val = write_transforms(out, cfg, lms[..., :2], track, eye)
    with timings.stage("audio"):
        audio_record, wav = run_audio(cfg, tools.extractor, out, t)
    with timings.stage("lipsync"):  # the clip's own: is its sound in sync, does its mouth follow it
        sync = clip_sync(lms[..., :2], wav, SAMPLE_RATE, float(cfg.fps))
        if cfg.align_audio:
            audio_record = align_audio(out, audio_record, sync)
    oval = p1.lms[:, li.FACE_OVAL, 0]
    face_frac = float(np.median(oval.max(axis=1) - oval.min(axis=1))) / p1.crop[2]
    quality = quality_report(
        p1.face_counts,
        p1.filled,
        p2.raw_lms[..., :2],
        lms[..., :2],
        np.asarray(result.reproj_err),
        np.asarray(result.euler),
        face_frac,
        cfg.size / p1.crop[2],
        p2.luma,
        p2.sharpness,
        np.asarray(track["R"], np.float64),
        n_val,
        cfg.fps,
        len(wav) / SAMPLE_RATE,
        lipsync=sync,
    )
    quality["person_px_added_by_plate"] = p2.person_added
    if cfg.preview and p2.preview is not None:
        crop_src = tuple(v / p1.scale for v in p1.crop)
        save_preview(
            out / "preview.jpg", p1.preview_frame, lms[t // 2], p2.preview[1], p2.preview[0], crop_src
        )
    record = {
        schema.FORMAT_VERSION_KEY: schema.FORMAT_VERSION,
        "video": str(cfg.video),
        "source": {
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "duration": info.duration,
            "bytes": cfg.video.stat().st_size,
        },
        "settings": saved_settings(cfg),
        "crop": list(p1.crop),
        "frames": t,
        "fps": fps_value(cfg.fps),
        "size": cfg.size,
        "val_frames": n_val,
        "tracker": {"name": track.get("tracker"), "version": track.get("tracker_version")},
        "audio_extractor": audio_record,
        "versions": versions(),
        "timings": timings.as_dict(t),
        "quality": quality,
    }
    atomic_write_json(out / schema.PREPROCESS_JSON, record)
    return record


def print_summary(record: dict, out: Path, wall: float) -> None:
    """Print frames, timings, the quality table and where the dataset was written."""
    print(
        f"\n{record['frames']} frames at {record['fps']:g} fps, {record['size']}x{record['size']}, "
        f"{record['val_frames']} for validation; wall {wall:.1f} s"
    )
    print("stages:")
    for name, st in record["timings"].items():
        print(
            f"  {name:<18} {st['seconds']:7.2f} s  {st['fps']:8.1f} frames/s  (cpu {st['cpu_seconds']:.2f} s)"
        )
    print_report(record["quality"])
    print(f"dataset written to {out}/ (preprocess.json, transforms_*.json, ori_imgs/, parsing/, ...)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of preprocess.sh; returns the exit code."""
    cfg = parse_args(argv)
    start = time.perf_counter()
    info = check_inputs(cfg)
    tools = Tools(get_tracker(cfg.tracker, cfg.tracking, cfg.bfm), make_extractor(cfg))
    inputs = (cfg.video, cfg.audio)
    with atomic_dir(cfg.out_dir, cfg.force, DATASET, inputs, file_advice(cfg.out_dir)) as tmp:
        record = build(cfg, info, tools, tmp)
    print_summary(record, cfg.out_dir, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    run_cli(main)
