"""predict.sh and render_direct.sh: the command line, the PredictConfig it fills and the two renders (new
audio; a dataset split with metrics), each writing its results folder."""

from __future__ import annotations

import argparse
import itertools
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from data_utils.audio_features import get_extractor, normalise_windows, stream_features
from data_utils.audio_io import SAMPLE_RATE, iter_audio_chunks, write_wav
from data_utils.silence import silent_frames, stream_step_db
from evaluation.frames import FrameScores, mean_scores, score_frames
from evaluation.landmarks import landmark_distances, read_video_frames, video_landmarks
from evaluation.lipsync import score_video
from evaluation.lipsync import summary_lines as lipsync_summary_lines
from scene.checkpoint import LoadedAvatar, load_avatar
from scene.dataset import FrameBatch, TalkingHeadDataset, read_transforms, split_audio
from scene.inference import InferenceRenderer, LipCodeLog, RenderStats, render_stream
from scene.pose_correction import corrected_if_matching
from scene.prediction import (
    LIP_CODE_FILE,
    add_render_options,
    check_audio_shape,
    check_reference,
    dataset_batches,
    default_batch_size,
    device_label,
    level_fft_size,
    novel_batches,
    reference_dataset,
    reference_wav,
    resolve_device,
    rest_on_silence,
    rest_window,
    saved_lip_code_opening,
)
from utils.atomic import atomic_dir, atomic_write_json
from utils.blink import synth_eye_track
from utils.camera_path import CAMERA_MODES, camera_path
from utils.cli import ArgumentParser, UserError, add_model_arguments, run_cli
from utils.output_policy import RESULTS, check_output
from utils.video_out import VideoWriter

SILENCE_DBFS = -60.0
AUDIO_CHUNK_SECONDS = 10.0


DESCRIPTIONS = {
    "predict.sh": "Make a trained avatar speak an audio file.",
    "render_direct.sh": "Re-render a trained avatar's validation (or training) frames with their own audio "
    "and cameras and score them against the ground truth.",
}


@dataclass(frozen=True)
class PredictConfig:
    """Every setting of predict.sh and render_direct.sh (the flags of build_parser, one field each)."""

    model_path: Path
    reference_path: Path
    output_dir: Path
    audio_path: Path | None = None
    camera_mode: str = "cycle"
    batch_size: int | None = None
    fps: float | None = None
    iteration: int | None = None
    device: str = "auto"
    bf16: bool = False
    compile: bool = False
    seed: int = 0
    no_lipsync: bool = False
    raw_silence: bool = False
    force: bool = False
    direct: bool = False
    split: str = "val"
    tracked_lips: bool = False


def build_parser(prog: str = "predict.sh") -> argparse.ArgumentParser:
    """Return the command-line parser of predict.sh, or of render_direct.sh (only the flags it uses)."""
    direct = prog == "render_direct.sh"
    default = {f.name: f.default for f in fields(PredictConfig)}  # each default once, in PredictConfig
    p = ArgumentParser(
        prog=prog,
        description=DESCRIPTIONS[prog]
        + " The architecture, audio features and resolution always come from the checkpoint.",
    )
    add_model_arguments(p)
    p.add_argument("--output_dir", required=True, type=Path, help="results folder to create")
    if direct:
        p.set_defaults(**{k: default[k] for k in ("audio_path", "camera_mode", "raw_silence")})
    else:
        p.add_argument(
            "--audio_path", type=Path, help="speech to say: WAV, MP3, FLAC, M4A/AAC, OGG or a video file"
        )
        p.add_argument(
            "--camera_mode",
            choices=CAMERA_MODES,
            default=default["camera_mode"],
            help="cycle (default): training cameras back and forth; static: first camera; orbit: slow orbit "
            "about the head",
        )
        p.add_argument(
            "--raw_silence",
            action="store_true",
            help="drive silent frames (every FFT window of their audio below -45 dBFS) by their own audio; "
            "by default they get the audio of the training clip's quietest moment, a still, closed mouth, "
            "as serve.sh does",
        )
    p.add_argument("--batch_size", type=int, help="frames rendered at once (default: 32 on CUDA, 4 on CPU)")
    p.add_argument("--fps", type=float, help="output frame rate (default: the training video's)")
    add_render_options(p)
    p.add_argument(
        "--seed",
        type=int,
        default=default["seed"],
        help=f"seed of the synthetic blinks (default: {default['seed']})",
    )
    p.add_argument(
        "--no_lipsync",
        action="store_true",
        help="skip the lip-sync score of the render in summary.json (python -m bench.lipsync --help gives "
        "its scale; it runs MediaPipe over every frame, about 50-100 frames/s on a CPU)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier --output_dir of this tool; accept a reference dataset other than the "
        "training one",
    )
    p.add_argument("--direct", action="store_true", help=argparse.SUPPRESS)  # set by render_direct.sh
    if direct:
        p.add_argument(
            "--split",
            default=default["split"],
            choices=("val", "train"),
            help="split to render (default: val)",
        )
        p.add_argument(
            "--tracked_lips",
            action="store_true",
            help="drive the mouth by the frames' tracked lip measures instead of the audio's prediction of "
            "them (models trained with --audio_code lips): the mouth the avatar renders when that prediction "
            "is perfect, to tell the two apart in the metrics",
        )
    else:
        p.set_defaults(split=default["split"], tracked_lips=default["tracked_lips"])
    return p


class Speech(NamedTuple):
    """What one pass over the driving audio gives: its frame count at the output fps, its duration in
    seconds, and the level of its FFT windows at every feature step (data_utils.silence)."""

    frames: int
    seconds: float
    step_db: np.ndarray


def scan_speech(path: Path, fps: float, n_fft: int) -> Speech:
    """Stream the speech at `path` once; return its Speech at `fps` (levels over `n_fft`-sample windows).

    UserError when it is unreadable, shorter than one frame or silent (RMS below -60 dBFS).
    """
    if not path.is_file():
        raise UserError(f"audio '{path}' not found; check --audio_path")
    samples, energy = 0, 0.0

    def counted() -> Iterator[np.ndarray]:
        nonlocal samples, energy
        for chunk in iter_audio_chunks(path, SAMPLE_RATE, AUDIO_CHUNK_SECONDS):
            samples += len(chunk)
            energy += float(np.square(chunk, dtype=np.float64).sum())
            yield chunk

    step_db = stream_step_db(counted(), fps, n_fft)
    seconds = samples / SAMPLE_RATE
    n_frames = round(seconds * fps)
    if n_frames < 1:
        raise UserError(
            f"audio '{path}' lasts {seconds * 1000:.0f} ms, shorter than one frame at {fps:g} fps; "
            "supply a longer clip"
        )
    rms = (energy / samples) ** 0.5
    if rms <= 10 ** (SILENCE_DBFS / 20):
        level = f"{20 * np.log10(rms):.0f} dBFS" if rms > 0 else "digital silence"
        raise UserError(f"audio '{path}' is silent ({level}); supply a recording with speech")
    return Speech(n_frames, seconds, step_db)


def audio_conditions(loaded: LoadedAvatar, path: Path, fps: float, n_frames: int) -> Iterator[Tensor]:
    """Yield normalised audio windows [k,C,W] of the speech at `path`, segment by segment (streamed from
    disk), with the checkpoint's extractor and statistics; n_frames frames in all."""
    spec = loaded.audio_extractor
    extractor = get_extractor(spec["name"], **spec.get("settings", {}))
    chunks = iter_audio_chunks(path, SAMPLE_RATE, AUDIO_CHUNK_SECONDS)
    for feats in stream_features(extractor, chunks, SAMPLE_RATE, fps, n_frames):
        yield torch.from_numpy(normalise_windows(feats, loaded.audio_norm))


def inference_renderer(loaded: LoadedAvatar, cfg: PredictConfig) -> InferenceRenderer:
    """Return the renderer of the loaded avatar with the --bf16 and --compile choices."""
    return InferenceRenderer(loaded.avatar, bf16=cfg.bf16, compile=cfg.compile, tracked_lips=cfg.tracked_lips)


def video_name(iteration: int) -> str:
    """Return the output video's file name for checkpoint `iteration`."""
    return f"output_custom_{iteration}iter_renders.mov"


def check_inputs(cfg: PredictConfig) -> None:
    """Raise UserError for missing model/dataset folders, misused flags or an existing output folder."""
    match = re.fullmatch(r"chkpnt(\d+)\.pth", cfg.model_path.name)
    if cfg.model_path.is_file() and match:
        raise UserError(
            f"'{cfg.model_path}' is a checkpoint file; pass its folder and iteration: "
            f"--model_path {cfg.model_path.parent} --iteration {match.group(1)}"
        )
    if not cfg.model_path.is_dir():
        raise UserError(f"model '{cfg.model_path}' not found; train one with ./train.sh or fix --model_path")
    if not cfg.reference_path.is_dir():
        raise UserError(
            f"dataset '{cfg.reference_path}' not found; run ./preprocess.sh or fix --reference_path"
        )
    if cfg.direct and cfg.audio_path is not None:
        raise UserError("--audio_path is not used by render_direct.sh; use predict.sh to speak new audio")
    if not cfg.direct and cfg.audio_path is None:
        raise UserError(
            "no audio given; pass --audio_path FILE (or use render_direct.sh for the dataset's audio)"
        )
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {cfg.batch_size}")
    if cfg.fps is not None and cfg.fps <= 0:
        raise UserError(f"--fps must be positive, got {cfg.fps:g}")
    check_output(cfg.output_dir, cfg.force, RESULTS, prediction_inputs(cfg))


def prediction_inputs(cfg: PredictConfig) -> tuple[Path | None, ...]:
    """The inputs that --output_dir must keep clear of: the model, the reference dataset and the audio."""
    return (cfg.model_path, cfg.reference_path, cfg.audio_path)


def predict_audio(
    cfg: PredictConfig,
    loaded: LoadedAvatar,
    device: torch.device,
    tmp: Path,
    speech: Speech,
    fps: float,
) -> dict:
    """Render the avatar speaking --audio_path (`speech` from scan_speech at `fps`; features streamed from
    disk) into `tmp`; return the summary."""
    n_frames, seconds = speech.frames, speech.seconds
    t0 = time.perf_counter()
    segments = audio_conditions(loaded, cfg.audio_path, fps, n_frames)
    first = next(segments)
    check_audio_shape(loaded.avatar, tuple(first.shape[1:]), f"'{cfg.audio_path}'")
    features_s = time.perf_counter() - t0
    ref = reference_dataset(loaded, cfg.reference_path, device)
    c2w_train = torch.linalg.inv(corrected_if_matching(ref.viewmats, loaded.pose_corrections)).cpu().numpy()
    centre = loaded.avatar.gaussians.means.detach().median(dim=0).values.cpu().numpy()
    c2w, torso_index = camera_path(cfg.camera_mode, c2w_train, n_frames, fps, centre)
    eye = synth_eye_track(ref.eyes[:, 0].cpu().numpy(), n_frames, fps, cfg.seed, train_fps=ref.fps)
    video = tmp / video_name(loaded.iteration)
    audio = itertools.chain([first], segments)
    silent = np.zeros(n_frames, bool)
    if not cfg.raw_silence:
        silent = silent_frames(speech.step_db, loaded.avatar.deform_cfg.audio_window, n_frames)
        rest = rest_window(ref, cfg.reference_path, reference_wav(cfg.reference_path))
        audio = rest_on_silence(audio, silent, rest)
    batches = novel_batches(ref, c2w, torso_index, audio, eye, cfg.batch_size)
    renderer = inference_renderer(loaded, cfg)
    lip_code = LipCodeLog(renderer)
    with VideoWriter(video, fps, ref.size, ref.size, audio_path=cfg.audio_path) as writer:
        stats = render_stream(renderer, batches, writer, n_frames, lip_code.add)
    save_lip_code(lip_code, tmp)
    return {
        "mode": "audio",
        "audio_path": str(cfg.audio_path),
        "audio_seconds": round(seconds, 4),
        "camera_mode": cfg.camera_mode,
        "fps": fps,
        "silent_frames": int(silent.sum()),
        "seconds": {"audio_features_first_segment": round(features_s, 3)},
        **render_summary(stats),
    }


def save_lip_code(log: LipCodeLog, out: Path) -> None:
    """Write the lip code that drove each frame [T,3] to out/LIP_CODE_FILE (nothing for a 'free' model)."""
    codes = log.codes()
    if codes is not None:
        np.save(out / LIP_CODE_FILE, codes)


def render_summary(stats: RenderStats) -> dict:
    """Return the frame count and speeds of a render loop."""
    return {
        "frames": stats.frames,
        "render_fps": round(stats.frames / max(stats.render_seconds, 1e-9), 2),
        "stream_fps": round(stats.frames / max(stats.stream_seconds, 1e-9), 2),
        "render_seconds": round(stats.render_seconds, 3),
        "stream_seconds": round(stats.stream_seconds, 3),
        "warmup_seconds": round(stats.warmup_seconds, 3),
    }


class RenderScores:
    """Per-frame scores (evaluation.frames.score_frames) of the rendered frames against ground truth."""

    def __init__(self) -> None:
        self.frames: list[FrameScores] = []

    def add(self, batch: FrameBatch, frames: np.ndarray) -> None:
        """Score the rendered uint8 frames [B,H,W,3] (as written) against batch.image and batch.face_rect."""
        pred = torch.from_numpy(frames).to(batch.image.device)
        self.frames.extend(score_frames(pred, batch.image, batch.face_rect))

    def summary(self) -> dict:
        """Return the mean scores {psnr, ssim, face_psnr, face_ssim} (finite values, 4 decimals)."""
        return {k: round(v, 4) for k, v in mean_scores(self.frames).items()}


def landmark_scores(video: Path, truth: torch.Tensor) -> dict:
    """Return mean landmark distances (px) between the rendered video and ground truth [T,H,W,3] uint8."""
    pred = video_landmarks(read_video_frames(video))
    gt = video_landmarks(frame.cpu().numpy() for frame in truth)
    detected = np.isfinite(pred[:, 0, 0]) & np.isfinite(gt[:, 0, 0])
    distances = {f"lmd_{k}": round(v, 4) for k, v in landmark_distances(pred, gt).items()}
    return {**distances, "landmark_frames": int(detected.sum())}


def write_split_audio(root: Path, ds: TalkingHeadDataset, split: str, out: Path) -> Path | None:
    """Write the part of root/aud.wav under the split's frames to `out`; None when there is no aud.wav."""
    wav_path = root / "aud.wav"
    if not wav_path.is_file():
        print(f"warning: '{wav_path}' not found; the video has no sound", file=sys.stderr)
        return None
    write_wav(out, split_audio(root, read_transforms(root, split)["frames"], ds.fps), SAMPLE_RATE)
    return out


def predict_direct(cfg: PredictConfig, loaded: LoadedAvatar, device: torch.device, tmp: Path) -> dict:
    """Render the --split frames of the reference dataset into `tmp` with metrics.json; return the summary."""
    if cfg.tracked_lips and loaded.avatar.deform.cfg.audio_code != "lips":
        raise UserError(
            f"--tracked_lips drives the lip code, but '{cfg.model_path}' was trained with --audio_code "
            f"{loaded.avatar.deform.cfg.audio_code}; leave the flag out for this model"
        )
    ds = TalkingHeadDataset(
        cfg.reference_path,
        cfg.split,
        loaded.dataset_meta["resolution"],
        device,
        audio_extractor=loaded.audio_extractor["name"],
        audio_norm=loaded.audio_norm,
        lips=cfg.tracked_lips,
    )
    check_audio_shape(loaded.avatar, ds.audio_shape, f"dataset '{cfg.reference_path}'")
    if cfg.split == "train":
        ds.viewmats = corrected_if_matching(ds.viewmats, loaded.pose_corrections)
    video = tmp / video_name(loaded.iteration)
    audio_wav = write_split_audio(cfg.reference_path, ds, cfg.split, tmp / ".split.wav")
    scores = RenderScores()
    renderer = inference_renderer(loaded, cfg)
    lip_code = LipCodeLog(renderer)

    def on_batch(batch: FrameBatch, frames: np.ndarray) -> None:
        scores.add(batch, frames)
        lip_code.add(batch, frames)

    with VideoWriter(video, ds.fps, ds.size, ds.size, audio_path=audio_wav) as writer:
        stats = render_stream(renderer, dataset_batches(ds, cfg.batch_size), writer, len(ds), on_batch)
    save_lip_code(lip_code, tmp)
    if audio_wav is not None:
        audio_wav.unlink()
    metrics = {
        "split": cfg.split,
        "frames": len(ds),
        "iteration": loaded.iteration,
        "tracked_lips": cfg.tracked_lips,
        **scores.summary(),
    }
    metrics.update(landmark_scores(video, ds.images))
    atomic_write_json(tmp / "metrics.json", metrics)
    return {
        "mode": "direct",
        "split": cfg.split,
        "audio_seconds": round(len(ds) / ds.fps, 4),
        "fps": ds.fps,
        "metrics": metrics,
        **render_summary(stats),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry of predict.sh and render_direct.sh; returns the exit code."""
    start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser("render_direct.sh" if "--direct" in argv else "predict.sh").parse_args(argv)
    cfg = PredictConfig(**vars(args))
    check_inputs(cfg)
    device = resolve_device(cfg.device)
    if cfg.batch_size is None:
        cfg = replace(cfg, batch_size=default_batch_size(device))
    t0 = time.perf_counter()
    loaded = load_avatar(cfg.model_path, cfg.iteration, device)
    loaded.avatar.eval()
    load_s = time.perf_counter() - t0
    check_reference(loaded, cfg.reference_path, cfg.force)
    fps = float(cfg.fps or loaded.dataset_meta["fps"])
    speech = None if cfg.direct else scan_speech(cfg.audio_path, fps, level_fft_size(loaded))
    out = cfg.output_dir.resolve()
    with atomic_dir(out, cfg.force, RESULTS, prediction_inputs(cfg)) as tmp:
        if speech is None:
            summary = predict_direct(cfg, loaded, device, tmp)
        else:
            summary = predict_audio(cfg, loaded, device, tmp, speech, fps)
        total = time.perf_counter() - start
        name = video_name(loaded.iteration)
        summary.update(
            video=str(out / name),
            video_mp4=str(out / Path(name).with_suffix(".mp4")),
            iteration=loaded.iteration,
            model_path=str(cfg.model_path),
            reference_path=str(cfg.reference_path),
            device=device_label(device),
            batch_size=cfg.batch_size,
            bf16=bool(cfg.bf16 and device.type == "cuda"),
            compile=cfg.compile,
            num_gaussians=loaded.avatar.gaussians.num_gaussians,
            resolution=int(loaded.dataset_meta["resolution"]),
            end_to_end_fps=round(summary["frames"] / total, 2),
        )
        summary["seconds"] = {
            **summary.get("seconds", {}),
            "load_model": round(load_s, 3),
            "total": round(total, 3),
        }
        if not cfg.no_lipsync and (cfg.audio_path or (cfg.reference_path / "aud.wav").is_file()):
            t0 = time.perf_counter()
            summary["lipsync"] = score_video(tmp / name, cfg.audio_path, lip_code=saved_lip_code_opening(tmp))
            summary["lipsync"].update(video=summary["video"], audio=str(cfg.audio_path or summary["video"]))
            summary["seconds"]["lipsync_score"] = round(time.perf_counter() - t0, 3)
        atomic_write_json(tmp / "summary.json", summary)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    """Print where the video went and how fast it was made."""
    print(
        f"wrote {summary['video']} (+ .mp4): {summary['frames']} frames, {summary['audio_seconds']:.2f} s, "
        f"{summary['resolution']}px @ {summary['fps']:g} fps"
    )
    print(
        f"speed on {summary['device']}: avatar rendering {summary['render_fps']:.1f} fps, "
        f"end to end {summary['end_to_end_fps']:.1f} fps (batch {summary['batch_size']})"
    )
    if summary["mode"] == "direct":
        m = summary["metrics"]
        print(
            f"{m['split']} metrics: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, "
            f"face PSNR {m['face_psnr']:.2f} dB, LMD mouth {m['lmd_mouth']:.2f} px (shape "
            f"{m['lmd_mouth_shape']:.2f}, offset {m['lmd_mouth_offset']:.2f}), face {m['lmd_face']:.2f} px"
            + (" (mouth driven by the tracked lip measures)" if m["tracked_lips"] else "")
        )
    if "lipsync" in summary:
        print("\n".join(lipsync_summary_lines(summary["lipsync"])))


if __name__ == "__main__":
    run_cli(main)
