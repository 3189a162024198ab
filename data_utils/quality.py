"""Quality report of a preprocessed clip (face coverage, jitter, fit error, warnings) and preview image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from utils.rigid import nearest_rotation_gap_deg

STABLE_LANDMARKS = (1, 4, 6, 33, 133, 168, 197, 263, 362)  # nose bridge and tip, eye corners
MIN_FACE_FRAC = 0.15  # face width / crop width
MAX_FACE_FRAC = 0.65
MAX_UPSCALE = 2.0  # dataset pixels per source pixel
PROFILE_YAW_DEG = 35.0
DARK_LUMA = 40.0
BLUR_LAPLACIAN_VAR = 20.0
WARN_SHARE = 0.1  # dark / blurred frames are reported when more than this share of frames is affected
NOVEL_POSE_DEG = 3.0  # validation frames this far from every training head pose are novel views
SHORT_CLIP_SECONDS = 30.0  # shorter clips get a warning: held-out quality grows with the video's length
AV_OFFSET_WARN_FRAMES = 3  # a clip whose mouth matches its sound best this many frames off gets a warning
LOW_LIPSYNC = 0.2  # a clip whose own lip-sync score is below this gets a warning


def frame_stats(rgb: np.ndarray) -> tuple[float, float]:
    """Take an RGB frame [H,W,3] uint8; return (mean luma 0..255, variance of the Laplacian at 256 px)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (256, 256), interpolation=cv2.INTER_AREA)
    return float(gray.mean()), float(cv2.Laplacian(small, cv2.CV_32F).var())


def landmark_jitter(lms2d: np.ndarray) -> float:
    """Take landmarks [T,478,2]; return the mean second difference (px) of the stable landmarks over time."""
    if len(lms2d) < 3:
        return 0.0
    pts = lms2d[:, STABLE_LANDMARKS, :2]
    accel = pts[2:] - 2 * pts[1:-1] + pts[:-2]
    return float(np.linalg.norm(accel, axis=-1).mean())


def pose_coverage(rot: np.ndarray, num_val: int) -> dict:
    """Take head rotations [T,3,3] whose last `num_val` frames are validation; return how far (degrees) each
    validation pose is from its nearest training pose: mean, max and the count beyond NOVEL_POSE_DEG."""
    rot = torch.from_numpy(np.asarray(rot, np.float64))
    split = len(rot) - num_val
    nearest = nearest_rotation_gap_deg(rot[split:], rot[:split]).numpy()
    return {
        "val_pose_gap_mean_deg": float(nearest.mean()),
        "val_pose_gap_max_deg": float(nearest.max()),
        "val_frames_novel_pose": int((nearest > NOVEL_POSE_DEG).sum()),
    }


def _longest_run(flags: np.ndarray) -> int:
    """Return the length of the longest run of True in a bool vector [T]."""
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def quality_report(
    face_counts: np.ndarray,
    filled: np.ndarray,
    raw_lms2d: np.ndarray,
    lms2d: np.ndarray,
    reproj_err: np.ndarray,
    euler: np.ndarray,
    face_frac: float,
    upscale: float,
    luma: np.ndarray,
    sharpness: np.ndarray,
    rot: np.ndarray,
    num_val: int,
    fps: float,
    audio_seconds: float,
    lipsync: dict | None = None,
) -> dict:
    """Summarise a clip as a JSON-ready dict, warnings included.

    Takes faces found per frame [T] (pass 1), gap-filled frames [T] bool, raw and smoothed crop landmarks
    [T,478,2], tracker reprojection error [T] px, head euler angles [T,3] rad (pitch, yaw, roll), the
    face width as a fraction of the crop width, the upscale factor (dataset px per source px),
    per-frame mean luma [T] and Laplacian variance [T], head rotations [T,3,3] whose last `num_val` frames
    are validation, the frame rate and the length of the audio track in seconds; `lipsync`, the clip's own
    lip sync (evaluation.lipsync.clip_sync), when measured.
    """
    t = len(face_counts)
    yaw_deg = np.degrees(np.abs(euler[:, 1]))
    report = {
        "frames": int(t),
        "frames_with_face": float((face_counts > 0).mean()),
        "frames_multiple_faces": int((face_counts > 1).sum()),
        "frames_gap_filled": int(filled.sum()),
        "longest_gap_frames": _longest_run(filled),
        "landmark_jitter_px": landmark_jitter(lms2d),
        "landmark_jitter_raw_px": landmark_jitter(raw_lms2d),
        "reproj_err_px": float(np.nanmean(reproj_err)),
        "reproj_err_max_px": float(np.nanmax(reproj_err)),
        "face_width_frac": float(face_frac),
        "upscale": float(upscale),
        "max_abs_yaw_deg": float(yaw_deg.max()),
        "mean_luma": float(np.mean(luma)),
        "mean_sharpness": float(np.mean(sharpness)),
        "seconds": t / fps,
        "audio_seconds": float(audio_seconds),
        "val_frames": int(num_val),
        **pose_coverage(rot, num_val),
    }
    if lipsync is not None:
        report["lipsync"] = lipsync
    report["warnings"] = _warnings(report, yaw_deg, luma, sharpness)
    return report


def _warnings(report: dict, yaw_deg: np.ndarray, luma: np.ndarray, sharpness: np.ndarray) -> list[str]:
    """Turn the report figures into one-line warnings that say what to do."""
    t = report["frames"]
    out = []
    frac = report["face_width_frac"]
    if frac < MIN_FACE_FRAC:
        out.append(
            f"face is small ({frac:.0%} of the crop width); use a closer shot or keep the head steadier"
        )
    if frac > MAX_FACE_FRAC:
        out.append(
            f"face fills {frac:.0%} of the crop width; the video is framed too tight for hair and neck"
        )
    if report["upscale"] > MAX_UPSCALE:
        out.append(
            f"frames are upscaled {report['upscale']:.1f}x from the source and will look soft;"
            " use a higher-resolution video or a smaller --size"
        )
    profile = int((yaw_deg > PROFILE_YAW_DEG).sum())
    if profile:
        out.append(f"{profile} frames turn the head more than {PROFILE_YAW_DEG:.0f} deg (profile view)")
    dark = int((luma < DARK_LUMA).sum())
    if dark > WARN_SHARE * t:
        out.append(f"{dark} frames are dark (mean luma < {DARK_LUMA:.0f}); use a better lit video")
    blurred = int((sharpness < BLUR_LAPLACIAN_VAR).sum())
    if blurred > WARN_SHARE * t:
        out.append(f"{blurred} frames look blurred (Laplacian variance < {BLUR_LAPLACIAN_VAR:.0f})")
    if report["frames_gap_filled"]:
        out.append(
            f"{report['frames_gap_filled']} frames had no face and were interpolated"
            f" (longest gap {report['longest_gap_frames']} frames)"
        )
    if report["frames_multiple_faces"]:
        out.append(f"{report['frames_multiple_faces']} frames show more than one face; the largest was used")
    novel, gap = report["val_frames_novel_pose"], report["val_pose_gap_max_deg"]
    if novel:
        out.append(
            f"{novel} of {report['val_frames']} validation frames turn the head more than"
            f" {NOVEL_POSE_DEG:.0f} deg from every training pose (up to {gap:.1f});"
            " validation PSNR there measures novel views"
        )
    seconds = report["seconds"]
    if seconds < SHORT_CLIP_SECONDS:
        out.append(
            f"the clip lasts {seconds:.1f} s; the avatar renders unseen expressions and poses better the more"
            " video it learns from (about +1 to +2 dB PSNR per doubling up to a minute), so use 1-2 minutes"
            " if you have them"
        )
    out += _lipsync_warnings(report.get("lipsync"))
    if abs(report["audio_seconds"] - seconds) > 0.5:
        out.append(
            f"audio lasts {report['audio_seconds']:.1f} s, the video {seconds:.1f} s;"
            " features are cut or padded"
        )
    return out


def _lipsync_warnings(sync: dict | None) -> list[str]:
    """Warnings of the clip's own lip sync (quality_report's `lipsync`): a desynced track, a mouth that does
    not follow its speech."""
    if sync is None or not sync["judged"]:
        return []
    out = []
    if abs(sync["offset_frames"]) >= AV_OFFSET_WARN_FRAMES:
        out.append(
            f"the mouth runs {abs(sync['offset_frames'])} frames ({abs(sync['offset_ms'])} ms)"
            f" {_ahead_or_behind(sync['offset_frames'])} the speech (where they match best); if the"
            " recording's sound is out of sync, fix it (e.g. ffmpeg -itsoffset) before preprocessing: the"
            " audio features see only a few frames either way"
        )
    if sync["score"] < LOW_LIPSYNC:
        out.append(
            f"the clip's own mouth barely follows its speech (lip-sync score {sync['score']:.2f},"
            " 0 = chance); the avatar learns lip sync from it: use a clip of clear speech facing the camera"
        )
    return out


def _ahead_or_behind(offset: float) -> str:
    """How the mouth stands to its sound at a clip_sync offset (negative: the mouth first)."""
    return "ahead of" if offset < 0 else "behind"


def _lipsync_row(sync: dict) -> str:
    """The lip-sync line of the report table."""
    if not sync["judged"]:
        return f"not judged ({sync['reason']})"
    ms = sync["offset_ms"]
    where = "in step" if ms == 0 else f"{abs(ms)} ms {_ahead_or_behind(ms)} the sound"
    return (
        f"{sync['score']:.2f} (0 = chance, 1 = perfect; {sync['open_frames']} open-vowel and"
        f" {sync['labial_frames']} labial frames), the mouth {where} at the best match"
    )


def format_report(report: dict) -> str:
    """Return the quality report as a readable two-column table (plus warnings)."""
    rows = [
        (
            "length",
            f"{report['seconds']:.1f} s ({report['frames']} frames, {report['val_frames']} held out),"
            f" audio {report['audio_seconds']:.1f} s",
        ),
        ("frames with a face", f"{report['frames_with_face']:.1%}"),
        ("frames gap-filled", f"{report['frames_gap_filled']} (longest {report['longest_gap_frames']})"),
        (
            "landmark jitter",
            f"{report['landmark_jitter_px']:.3f} px (raw {report['landmark_jitter_raw_px']:.3f})",
        ),
        ("reprojection error", f"{report['reproj_err_px']:.3f} px (max {report['reproj_err_max_px']:.3f})"),
        ("face width", f"{report['face_width_frac']:.0%} of the crop (upscale {report['upscale']:.1f}x)"),
        ("max |yaw|", f"{report['max_abs_yaw_deg']:.1f} deg"),
        ("mean luma / sharpness", f"{report['mean_luma']:.0f} / {report['mean_sharpness']:.0f}"),
        (
            "val pose gap",
            f"{report['val_pose_gap_mean_deg']:.1f} deg mean, {report['val_pose_gap_max_deg']:.1f} max"
            " (to the nearest training pose)",
        ),
    ]
    if "lipsync" in report:
        rows.append(("lip sync of the clip", _lipsync_row(report["lipsync"])))
    if "person_px_added_by_plate" in report:
        rows.append(("person mask growth", f"{report['person_px_added_by_plate']:.2%} of pixels (plate)"))
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"  warning: {w}" for w in report["warnings"]] or ["  no warnings"]
    return "\n".join(lines)


def print_report(report: dict) -> None:
    """Print the quality report table to stdout."""
    print("quality:")
    print(format_report(report))


def _panel(rgb: np.ndarray, height: int) -> np.ndarray:
    """Resize an RGB image [H,W,3] to `height` rows keeping its aspect ratio."""
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def save_preview(
    path: Path,
    frame: np.ndarray,
    lms2d: np.ndarray,
    parsing: np.ndarray,
    crop_frame: np.ndarray,
    crop_rect: tuple[int, int, int] | None = None,
    height: int = 384,
) -> None:
    """Write one JPEG: source frame with the crop box, crop with landmarks, crop with masks, the crop itself.

    `frame` is the source RGB frame [H,W,3], `crop_frame` the SxS crop [S,S,3], `lms2d` [478,2] in crop
    pixels, `parsing` the SxS colour-code image, `crop_rect` (x0, y0, side) in `frame` pixels.
    """
    src = frame.copy()
    if crop_rect is not None:
        x0, y0, side = (int(round(v)) for v in crop_rect)
        thick = max(2, src.shape[0] // 200)
        cv2.rectangle(src, (x0, y0), (x0 + side, y0 + side), (0, 255, 0), thick)
    marked = crop_frame.copy()
    radius = max(1, crop_frame.shape[0] // 400)
    for x, y in np.round(lms2d[:, :2]).astype(int):
        cv2.circle(marked, (int(x), int(y)), radius, (0, 255, 0), -1)
    overlay = cv2.addWeighted(crop_frame, 0.5, parsing, 0.5, 0)
    panels = [_panel(p, height) for p in (src, marked, overlay, crop_frame)]
    bgr = cv2.cvtColor(np.concatenate(panels, axis=1), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"could not encode the preview for {path}")
    Path(path).write_bytes(data.tobytes())
