"""A weights-free lip-sync score of a face video against speech: phones of the audio, lip shape of the video.

The audio is turned into English phones by pocketsphinx's phone recogniser (its model ships in the wheel); the
video into the vertical opening of the outer lips by MediaPipe's face mesh. Speakers of any voice and language
open the jaw for open vowels and close or narrow the lips for the labial consonants, so the score asks: how
often does a frame where the audio has an open vowel (AA AE AH AO AW AY EH OW) show a wider mouth than a frame
where it has a labial consonant (P B M F V W)? That probability (an AUC, at the best audio-video lag within
LAG_SECONDS) is compared with what the same video scores against the same phones shifted in time by more than
NULL_MIN_SHIFT_SECONDS (circularly): unrelated speech with the same phone statistics. The score is

    score = (auc - null_mean) / (1 - null_mean)

so 0 is chance (no relation to the speech) and 1 is a perfect ordering; a negative score is worse than chance.
`z` and `p_value` say how far the clip's AUC lies above that null distribution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_utils import landmark_indices as li
from data_utils.audio_features import PHONE_RATE, PHONES, SAMPLE_RATE, PhonemeExtractor, resample
from data_utils.lips import LIP_MEASURES, lip_measures
from utils.metrics import best_lag_correlation

OPEN_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "OW")
LABIALS = ("P", "B", "M", "F", "V", "W")
LAG_SECONDS = 0.12
OFFSET_SEARCH_SECONDS = 0.4  # audio_video_offset's search: wider than LAG_SECONDS, to find a desynced track
OFFSET_MIN_AUC_GAIN = 0.1  # audio_video_offset's lag must beat lag 0's AUC by this much
NULL_MIN_SHIFT_SECONDS = 1.0
NULL_SHIFTS = 100
MIN_FRAMES_PER_CLASS = 5
MIN_AGREEMENT_FRAMES = 25  # frames both videos must show a face on for opening_agreement
SILENCE_RUN_SECONDS = 0.3

_OPEN_IDS = np.array([PHONES.index(p) for p in OPEN_VOWELS])
_LABIAL_IDS = np.array([PHONES.index(p) for p in LABIALS])
_SIL_ID = PHONES.index("SIL")


@dataclass
class LipSyncScore:
    """The lip-sync score of one video against one audio track, with what it rests on."""

    score: float  # (auc - null_mean) / (1 - null_mean): 0 = chance, 1 = perfect; NaN when not computable
    judged: bool  # False when the clip has too few open-vowel or labial frames to judge
    reason: str  # why it was not judged ("" when judged)
    auc: float  # P(open-vowel frame shows a wider mouth than a labial frame) at the best lag
    lag_frames: int  # best lag: the video frame t + lag is paired with the audio at frame t
    null_mean: float  # mean AUC of the phones shifted by more than NULL_MIN_SHIFT_SECONDS
    null_std: float
    z: float  # (auc - null_mean) / null_std
    p_value: float  # share of shifted phone tracks that score at least auc (with the unshifted one counted)
    open_frames: int  # frames where the audio has an open vowel and the video a face
    labial_frames: int  # frames where the audio has a labial consonant and the video a face
    frames: int  # frames scored (the overlap of audio and video)
    fps: float
    silence_opening: float  # median lip opening in runs of silence >= SILENCE_RUN_SECONDS (NaN if none)
    speech_opening: float  # median lip opening on open-vowel frames

    def to_dict(self) -> dict:
        """Return the fields as a JSON-ready dict (NaN -> None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()
        }


def lip_opening(lms: np.ndarray) -> np.ndarray:
    """Outer-lip vertical opening of MediaPipe landmarks [T,478,2] over the outer eye-corner distance -> [T].

    The outer lip midpoints move with the jaw and are tracked more steadily than the inner-lip gap, which
    MediaPipe often reports as closed for a slightly open mouth. NaN where the frame has no face.
    """
    return lip_measures(lms)[:, LIP_MEASURES.index("outer_opening")]


def frame_phones(wav: np.ndarray, sr: int, fps: float, n_frames: int) -> np.ndarray:
    """Phone index into PHONES heard at the centre of each video frame of mono `wav` [n] -> [n_frames]."""
    labels = PhonemeExtractor().phone_labels(resample(wav, sr, SAMPLE_RATE))
    centres = ((np.arange(n_frames) + 0.5) / fps * PHONE_RATE).astype(np.int64)
    return labels[np.clip(centres, 0, len(labels) - 1)]


def _auc(opening: np.ndarray, high: np.ndarray, low: np.ndarray) -> float:
    """P(opening[i] > opening[j]), ties half, for i in mask `high`, j in mask `low` [T] -> float or NaN."""
    a, b = opening[high & np.isfinite(opening)], opening[low & np.isfinite(opening)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    diff = a[:, None] - b[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _shifted(x: np.ndarray, lag: int) -> np.ndarray:
    """x [T] moved so that out[t] = x[t + lag] (NaN where that falls outside) -> [T]."""
    out = np.full(x.shape, np.nan)
    if lag >= 0:
        out[: x.size - lag] = x[lag:]
    else:
        out[-lag:] = x[:lag]
    return out


def best_lag_auc(opening: np.ndarray, phones: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Highest open-vowel-vs-labial AUC of `opening` [T] against `phones` [T] over lags within ±max_lag.

    Returns (auc, lag); ties go to the smallest |lag|; (NaN, 0) when a class is empty at every lag.
    """
    high, low = np.isin(phones, _OPEN_IDS), np.isin(phones, _LABIAL_IDS)
    best, best_lag = float("nan"), 0
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        value = _auc(_shifted(opening, lag), high, low)
        if math.isfinite(value) and not value <= best:
            best, best_lag = value, lag
    return best, best_lag


def audio_video_offset(
    opening: np.ndarray, phones: np.ndarray, fps: float, min_gain: float = OFFSET_MIN_AUC_GAIN
) -> tuple[int, float]:
    """The lag (frames, within ±OFFSET_SEARCH_SECONDS) at which lip openings [T] best match frame phones [T]
    (best_lag_auc's convention: video frame t + lag shows the audio of frame t, so a negative lag is a mouth
    ahead of its sound) and its AUC; the lag is 0 unless that AUC beats the one in step by `min_gain` (a mouth
    that moves periodically matches at several lags); (0, NaN) when a class is empty."""
    auc, lag = best_lag_auc(opening, phones, max(1, round(OFFSET_SEARCH_SECONDS * fps)))
    if not auc - best_lag_auc(opening, phones, 0)[0] >= min_gain:
        lag = 0
    return lag, auc


def null_shifts(n: int, min_shift: int, count: int) -> np.ndarray:
    """Up to `count` evenly spaced circular shifts [k] (ints) of a series of `n` frames that move it by at
    least `min_shift` frames either way: the chance levels of the scores (none when n < 2 * min_shift + 1)."""
    if n - 2 * min_shift < 1:
        return np.zeros(0, dtype=np.int64)
    shifts = np.linspace(min_shift, n - min_shift, min(count, n - 2 * min_shift + 1)).round()
    return np.unique(shifts).astype(np.int64)


def null_aucs(
    opening: np.ndarray, phones: np.ndarray, max_lag: int, min_shift: int, count: int
) -> np.ndarray:
    """Best-lag AUCs of `opening` [T] against `phones` [T] rolled by each of null_shifts -> [k] (finite values
    only)."""
    shifts = null_shifts(phones.size, min_shift, count)
    values = [best_lag_auc(opening, np.roll(phones, s), max_lag)[0] for s in shifts]
    return np.array([v for v in values if math.isfinite(v)])


def _silence_runs(phones: np.ndarray, min_len: int) -> np.ndarray:
    """Mask [T] of the frames inside runs of SIL at least `min_len` frames long."""
    mask = np.zeros(phones.size, bool)
    start = None
    for t, silent in enumerate(np.append(phones == _SIL_ID, False)):
        if silent and start is None:
            start = t
        elif not silent and start is not None:
            if t - start >= min_len:
                mask[start:t] = True
            start = None
    return mask


def _median(x: np.ndarray) -> float:
    """Median of the finite values of x, NaN if none."""
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def opening_agreement(opening: np.ndarray, reference: np.ndarray, fps: float) -> dict:
    """How closely lip openings [T] follow a reference video's openings [T] of the same speech (the person
    who spoke the driving audio; NaN = no face), both at `fps`: the highest Pearson correlation over lags
    within ±LAG_SECONDS, and the same for the reference shifted circularly by more than
    NULL_MIN_SHIFT_SECONDS (chance: a mouth saying something else) -> {"corr", "lag_frames", "frames",
    "null_mean", "null_std", "z"}; corr None when fewer than MIN_AGREEMENT_FRAMES frames show both faces or
    a series is constant. Unlike the phone score it reads no phones, so it stays fair to avatars driven by
    phone features."""
    n = min(opening.size, reference.size)
    opening, reference = np.asarray(opening[:n], float), np.asarray(reference[:n], float)
    max_lag, min_shift = max(1, round(LAG_SECONDS * fps)), math.ceil(NULL_MIN_SHIFT_SECONDS * fps)
    corr, lag = best_lag_correlation(reference, opening, max_lag, MIN_AGREEMENT_FRAMES)
    null = np.array(
        [
            best_lag_correlation(np.roll(reference, k), opening, max_lag, MIN_AGREEMENT_FRAMES)[0]
            for k in null_shifts(n, min_shift, NULL_SHIFTS)
        ]
    )
    null = null[np.isfinite(null)]
    finite = math.isfinite(corr) and null.size > 1 and null.std() > 0
    return {
        "corr": round(corr, 4) if math.isfinite(corr) else None,
        "lag_frames": lag,
        "frames": int((np.isfinite(opening) & np.isfinite(reference)).sum()),
        "null_mean": round(float(null.mean()), 4) if null.size else None,
        "null_std": round(float(null.std()), 4) if null.size > 1 else None,
        "z": round(float((corr - null.mean()) / null.std()), 2) if finite else None,
    }


def score_lipsync(lms: np.ndarray, wav: np.ndarray, sr: int, fps: float) -> LipSyncScore:
    """Score the lip sync of face landmarks [T,478,2] (video at `fps`) against mono speech `wav` [n] at `sr`.

    Frame t of the video is taken to show the moment t / fps of the audio; only the frames both cover are
    scored.
    """
    opening, phones = _aligned(lms, wav, sr, fps)
    return score_phones(opening, phones, fps)


def clip_sync(lms: np.ndarray, wav: np.ndarray, sr: int, fps: float) -> dict:
    """A real clip's lip sync: its landmarks [T,478,2] at `fps` against its own speech `wav` [n] at `sr` ->
    {score, judged, reason, open_frames, labial_frames, offset_frames, offset_ms} (the phones decoded once;
    offset: audio_video_offset, negative = the mouth ahead of its sound)."""
    opening, phones = _aligned(lms, wav, sr, fps)
    score = score_phones(opening, phones, fps).to_dict()
    lag, _ = audio_video_offset(opening, phones, fps)
    return {
        **{k: score[k] for k in ("score", "judged", "reason", "open_frames", "labial_frames")},
        "offset_frames": lag,
        "offset_ms": round(1000 * lag / fps),
    }


def _aligned(lms: np.ndarray, wav: np.ndarray, sr: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Lip openings [n] and frame phones [n] over the n frames both landmarks [T,478,2] and audio cover."""
    n = min(len(lms), int(len(wav) / sr * fps))
    return lip_opening(np.asarray(lms)[:n]), frame_phones(wav, sr, fps, n)


def score_phones(opening: np.ndarray, phones: np.ndarray, fps: float) -> LipSyncScore:
    """Score lip openings [T] (NaN = no face) against frame phones [T] (indices into PHONES) at `fps`."""
    n = opening.size
    max_lag = max(1, round(LAG_SECONDS * fps))
    auc, lag = best_lag_auc(opening, phones, max_lag)
    null = null_aucs(opening, phones, max_lag, math.ceil(NULL_MIN_SHIFT_SECONDS * fps), NULL_SHIFTS)
    face = np.isfinite(opening)
    open_frames = int((np.isin(phones, _OPEN_IDS) & face).sum())
    labial_frames = int((np.isin(phones, _LABIAL_IDS) & face).sum())
    reason = ""
    if min(open_frames, labial_frames) < MIN_FRAMES_PER_CLASS:
        reason = (
            f"too short to judge: {open_frames} open-vowel and {labial_frames} labial frames, "
            f"{MIN_FRAMES_PER_CLASS} of each needed (a few seconds of speech)"
        )
    elif null.size < 5:
        reason = (
            f"too short to judge: {n / fps:.1f} s leaves too few shifts of over {NULL_MIN_SHIFT_SECONDS:g} s"
        )
    null_mean = float(null.mean()) if null.size else float("nan")
    null_std = float(null.std()) if null.size else float("nan")
    if math.isfinite(auc) and math.isfinite(null_mean) and null_mean < 1:
        score = (auc - null_mean) / (1 - null_mean)
    else:
        score = float("nan")
    z = (auc - null_mean) / null_std if null_std > 0 else float("nan")
    p_value = (
        float((1 + (null >= auc).sum()) / (1 + null.size))
        if null.size and math.isfinite(auc)
        else float("nan")
    )
    return LipSyncScore(
        score=score,
        judged=not reason and math.isfinite(score),
        reason=reason or ("" if math.isfinite(score) else "no face or no speech to score"),
        auc=auc,
        lag_frames=lag,
        null_mean=null_mean,
        null_std=null_std,
        z=z,
        p_value=p_value,
        open_frames=open_frames,
        labial_frames=labial_frames,
        frames=n,
        fps=fps,
        silence_opening=_median(opening[_silence_runs(phones, math.ceil(SILENCE_RUN_SECONDS * fps))]),
        speech_opening=_median(opening[np.isin(phones, _OPEN_IDS)]),
    )


def lip_code_report(code: np.ndarray, opening: np.ndarray, phones: np.ndarray, fps: float) -> dict:
    """How the lip code that drove a render scores, and how the render follows it: the code's outer-lip
    opening [T'] (standardised; what the mouth was asked to show) scored against frame phones [T] like a
    video's opening (score_phones, on the first T frames; missing ones NaN), and the best-lag correlation
    (within ±LAG_SECONDS) of the rendered opening [T] with it -> {score, judged, auc, lag_frames, follows,
    follows_lag (positive: the render behind its code)}. A render that follows its code scores as the code
    does; one that scores lower loses sync in the renderer, not in the audio-to-lips prediction."""
    n = opening.size
    wanted = np.full(n, np.nan)
    wanted[: min(n, code.size)] = np.asarray(code, np.float64)[:n]
    score = score_phones(wanted, phones, fps).to_dict()
    corr, lag = best_lag_correlation(wanted, opening, max(1, round(LAG_SECONDS * fps)))
    return {
        **{k: score[k] for k in ("score", "judged", "auc", "lag_frames")},
        "follows": round(corr, 4) if math.isfinite(corr) else None,
        "follows_lag": lag,
    }


def strip_moments(phones: np.ndarray, count: int = 8) -> list[int]:
    """Frames [<= count] in time order at the middle of the longest open-vowel and labial runs of
    `phones` [T], half of each class where the clip has them."""
    runs: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # is_open -> [(length, middle)]
    classes = np.where(np.isin(phones, _OPEN_IDS), 1, np.where(np.isin(phones, _LABIAL_IDS), 2, 0))
    start = 0
    for t in range(1, classes.size + 1):
        if t == classes.size or classes[t] != classes[start]:
            if classes[start]:
                runs[bool(classes[start] == 1)].append((t - start, (start + t - 1) // 2))
            start = t
    picked = []
    for is_open in (True, False):
        picked += [mid for _, mid in sorted(runs[is_open], key=lambda r: (-r[0], r[1]))[: count // 2]]
    return sorted(picked)


def mouth_crop(frame: np.ndarray, lms: np.ndarray, size: int = 160) -> np.ndarray:
    """The mouth of RGB frame [H,W,3] (a square around the lips of landmarks [478,2]) -> [size,size,3]."""
    import cv2

    centre = lms[li.LIPS_OUTER].mean(axis=0)
    eyes = np.linalg.norm(lms[li.RIGHT_EYE_CORNERS[0]] - lms[li.LEFT_EYE_CORNERS[0]])
    half = max(4.0, 0.6 * eyes)
    x0, y0 = (centre - half).round().astype(int)
    x1, y1 = (centre + half).round().astype(int)
    h, w = frame.shape[:2]
    crop = frame[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def write_strip(
    frames: Mapping[int, np.ndarray],
    lms: np.ndarray,
    phones: np.ndarray,
    opening: np.ndarray,
    fps: float,
    path: Path,
) -> list[int]:
    """Write a PNG of the mouth at the strip_moments of `phones` [T], each captioned with the phone the
    audio has there, its time and the measured lip opening; `frames` maps (at least) those frame indices to
    RGB frames, landmarks [T,478,2] -> the frames shown ([] and no file when there is no such moment)."""
    from utils.plots import plot_image_strip

    shown = [t for t in strip_moments(phones) if np.isfinite(lms[t]).all()]
    if not shown:  # silence, or no face: nothing to show, nothing written
        return []
    crops = [mouth_crop(frames[t], lms[t]) for t in shown]
    captions = [f"{PHONES[phones[t]]} at {t / fps:.2f} s\nopening {opening[t]:.2f}" for t in shown]
    title = "what the audio says (open vowel: mouth should be open; P B M F V W: closed or narrow)"
    plot_image_strip(crops, captions, title, path)
    return shown


def score_video(
    video: Path,
    audio: Path | None = None,
    syncnet_weights: Path | None = None,
    strip: Path | None = None,
    reference_video: Path | None = None,
    lip_code: np.ndarray | None = None,
) -> dict:
    """Lip sync of the face video at `video` against `audio` (default: the video's own track) -> report dict.

    The report holds the phone-based score (`score` and what it rests on, see LipSyncScore), and LSE-C /
    LSE-D under `syncnet` when SyncNet weights are found (`find_syncnet_weights`), else "not measured".
    With `strip`, a PNG of the mouth at open-vowel and labial moments is written there (write_strip).
    With `reference_video` (a video of the person speaking `audio`), `video_reference` holds how closely the
    lip opening follows that person's (opening_agreement) over the frames scored, the reference
    sampled at this video's frame times.
    With `lip_code` (the outer-lip opening [T] of the lip code that drove a render, one per frame), `lip_code`
    holds its own score and how closely the render follows it (lip_code_report).
    The video is decoded once for the landmarks and again only for what SyncNet or the strip need, so
    memory does not grow with its length unless SyncNet runs (it needs every frame).
    """
    from data_utils.audio_io import SAMPLE_RATE, load_audio
    from data_utils.video_io import probe_video
    from evaluation.landmarks import read_video_frames, video_landmarks
    from evaluation.syncnet import find_syncnet_weights, lse_report, not_measured

    fps = probe_video(video).fps
    wav = load_audio(audio or video, SAMPLE_RATE)
    weights = find_syncnet_weights(syncnet_weights)
    lms = video_landmarks(read_video_frames(video))
    opening, phones = _aligned(lms, wav, SAMPLE_RATE, fps)
    result = score_phones(opening, phones, fps).to_dict()
    n = result["frames"]
    if lip_code is not None:
        result["lip_code"] = lip_code_report(lip_code, opening, phones, fps)
    if weights is not None:
        frames = np.stack(list(itertools.islice(read_video_frames(video), n)))
        result["syncnet"] = lse_report(frames, lms[:n], wav, SAMPLE_RATE, fps, weights)
    else:
        result["syncnet"] = not_measured()
    if strip is not None:
        wanted = set(strip_moments(phones))
        picked = {t: f for t, f in enumerate(itertools.islice(read_video_frames(video), n)) if t in wanted}
        shown = write_strip(picked, lms, phones, opening, fps, strip)
        result["strip"] = {"path": str(strip) if shown else None, "frames": shown}
    if reference_video is not None:
        ref_fps = probe_video(reference_video).fps
        ref_opening = lip_opening(video_landmarks(read_video_frames(reference_video)))
        at = np.round(np.arange(opening.size) / fps * ref_fps).astype(int)
        sampled = np.where(at < ref_opening.size, ref_opening[np.minimum(at, ref_opening.size - 1)], np.nan)
        agreement = opening_agreement(opening, sampled, fps)
        result["video_reference"] = {"video": str(reference_video), **agreement}
    return {"video": str(video), "audio": str(audio or video), **result}


def _fmt(value: float | None, digits: int = 2) -> str:
    """A number for the summary, or 'n/a'."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def summary_lines(report: dict) -> list[str]:
    """The readable summary of a lip-sync report."""
    lines = [
        f"lip-sync score {_fmt(report['score'])} (0 = chance, 1 = perfect)"
        + ("" if report["judged"] else f"  [{report['reason']}]"),
        f"  open-vowel vs labial AUC {_fmt(report['auc'])} at lag {report['lag_frames']:+d} frames; chance "
        f"{_fmt(report['null_mean'])} ± {_fmt(report['null_std'])}, z {_fmt(report['z'], 1)}, "
        f"p {_fmt(report['p_value'], 3)}",
        f"  rests on {report['open_frames']} open-vowel and {report['labial_frames']} labial frames of "
        f"{report['frames']} ({report['frames'] / report['fps']:.1f} s at {report['fps']:g} fps)",
        f"  lip opening: {_fmt(report['speech_opening'], 3)} on open vowels, "
        f"{_fmt(report['silence_opening'], 3)} in silences",
    ]
    if "video_reference" in report:
        ref = report["video_reference"]
        lines.append(
            f"  follows the speaker's own mouth ({Path(ref['video']).name}): correlation {_fmt(ref['corr'])} "
            f"at lag {ref['lag_frames']:+d} over {ref['frames']} frames; chance {_fmt(ref['null_mean'])} "
            f"± {_fmt(ref['null_std'])}, z {_fmt(ref['z'], 1)}"
        )
    if "lip_code" in report:
        code = report["lip_code"]
        lines.append(
            f"  the lip code that drove it scores {_fmt(code['score'])} (AUC {_fmt(code['auc'])}); the "
            f"render follows it with correlation {_fmt(code['follows'])} at lag {code['follows_lag']:+d}"
        )
    sync = report["syncnet"]
    if sync.get("lse_c") is None:
        lines.append(f"  LSE-C / LSE-D: {sync['status']}")
    else:
        lines.append(
            f"  LSE-C {sync['lse_c']:.3f}, LSE-D {sync['lse_d']:.3f}, "
            f"AV offset {sync['offset_frames']:+d} frames"
        )
    return lines
