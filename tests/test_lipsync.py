"""Tests for evaluation.lipsync (the phone-based lip-sync score) and its command, python -m bench.lipsync."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_utils import landmark_indices as li
from data_utils.audio_features import PHONES
from data_utils.audio_io import load_audio
from evaluation.lipsync import (
    LABIALS,
    MIN_AGREEMENT_FRAMES,
    OPEN_VOWELS,
    audio_video_offset,
    best_lag_auc,
    lip_code_report,
    lip_opening,
    opening_agreement,
    score_lipsync,
    score_phones,
)
from tests.test_bench import assert_metadata

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0


def _phone_track(seconds: float, seed: int = 0) -> np.ndarray:
    """Random frame phones [T]: runs of 2-5 frames of open vowels, labials, other phones, SIL."""
    rng = np.random.default_rng(seed)
    pools = [
        [PHONES.index(p) for p in OPEN_VOWELS],
        [PHONES.index(p) for p in LABIALS],
        [PHONES.index(p) for p in ("S", "T", "IY", "K")],
        [PHONES.index("SIL")],
    ]
    track: list[int] = []
    while len(track) < seconds * FPS:
        pool = pools[rng.integers(len(pools))]
        track += [int(rng.choice(pool))] * int(rng.integers(2, 6))
    return np.asarray(track[: int(seconds * FPS)])


def _opening_following(phones: np.ndarray, noise: float = 0.03, seed: int = 1) -> np.ndarray:
    """Lip openings [T] a speaker shows for `phones`: wide on open vowels, shut on labials, plus noise."""
    rng = np.random.default_rng(seed)
    target = np.full(phones.size, 0.12)
    target[np.isin(phones, [PHONES.index(p) for p in OPEN_VOWELS])] = 0.35
    target[np.isin(phones, [PHONES.index(p) for p in LABIALS])] = 0.02
    return target + rng.normal(0.0, noise, phones.size)


@pytest.mark.parametrize("lead", [0, 3, -5])
def test_audio_video_offset_finds_a_mouth_ahead_of_or_behind_its_sound(lead: int) -> None:
    phones = _phone_track(12.0)
    opening = np.roll(_opening_following(phones), -lead)  # opening[t] shows phones[t + lead]
    lag, auc = audio_video_offset(opening, phones, FPS)
    assert lag == -lead and auc > 0.95  # negative: the mouth ahead of its sound
    assert audio_video_offset(opening, phones, FPS, min_gain=1.01)[0] == 0  # not clearer than in step: 0
    if abs(lead) <= 3:  # within the score's own lag search, it finds the same lag
        assert score_phones(opening, phones, FPS).lag_frames == -lead


def test_score_is_high_when_the_mouth_follows_the_phones_and_near_chance_otherwise() -> None:
    phones = _phone_track(12.0)
    opening = _opening_following(phones)
    own = score_phones(opening, phones, FPS)
    assert own.judged and own.reason == ""
    assert own.score > 0.8 and own.auc > 0.95 and own.p_value < 0.05 and own.z > 3
    assert own.open_frames >= 5 and own.labial_frames >= 5 and own.frames == phones.size
    other = score_phones(opening, _phone_track(12.0, seed=7), FPS)
    assert abs(other.score) < 0.35 and other.p_value > 0.05
    shifted = score_phones(opening, np.roll(phones, int(2 * FPS)), FPS)
    assert shifted.score < own.score - 0.5


def test_lip_code_report_tells_a_render_that_loses_its_code_from_one_that_follows_it() -> None:
    phones = _phone_track(12.0)
    code = (_opening_following(phones, seed=2) - 0.15) / 0.1  # standardised, as the lip code is
    follows = 0.1 * np.roll(code, 2) + 0.2 + np.random.default_rng(3).normal(0, 0.005, code.size)
    report = lip_code_report(code, follows, phones, FPS)
    assert report["judged"] and report["score"] > 0.8 and report["auc"] > 0.95
    assert report["follows"] > 0.95 and report["follows_lag"] == 2  # the render 2 frames behind its code
    lost = _opening_following(_phone_track(12.0, seed=9))  # a render that ignores its code
    report = lip_code_report(code, lost, phones, FPS)
    assert report["score"] > 0.8 and abs(report["follows"]) < 0.3  # the code kept sync, the render lost it
    short = lip_code_report(code[:100], follows, phones, FPS)  # frames beyond the code are not scored
    assert short["score"] == pytest.approx(score_phones(np.r_[code[:100], [np.nan] * 200], phones, FPS).score)


def test_best_lag_is_recovered_with_its_sign() -> None:
    phones = _phone_track(10.0, seed=3)
    opening = _opening_following(phones, noise=0.01)
    late = np.concatenate([np.full(2, 0.12), opening[:-2]])  # the mouth shows each phone 2 frames late
    auc, lag = best_lag_auc(late, phones, max_lag=3)
    assert lag == 2 and auc > 0.95
    assert score_phones(late, phones, FPS).lag_frames == 2


def test_too_few_labial_frames_is_not_judged() -> None:
    phones = np.full(100, PHONES.index("AA"))
    phones[40:43] = PHONES.index("M")  # 3 labial frames only
    result = score_phones(_opening_following(phones), phones, FPS)
    assert not result.judged and result.reason.startswith("too short to judge")
    assert result.labial_frames == 3
    assert result.to_dict()["judged"] is False


def test_frames_without_a_face_are_skipped() -> None:
    phones = _phone_track(12.0)
    opening = _opening_following(phones)
    opening[::3] = np.nan
    result = score_phones(opening, phones, FPS)
    assert result.judged and result.score > 0.7
    assert result.open_frames == int(
        (np.isin(phones, [PHONES.index(p) for p in OPEN_VOWELS]) & np.isfinite(opening)).sum()
    )


def test_silence_and_speech_opening_are_medians_of_their_frames() -> None:
    phones = np.full(200, PHONES.index("AA"))
    phones[100:150] = PHONES.index("SIL")  # a 2 s silence
    opening = np.where(phones == PHONES.index("SIL"), 0.01, 0.3)
    result = score_phones(opening, phones, FPS)
    assert result.silence_opening == pytest.approx(0.01) and result.speech_opening == pytest.approx(0.3)


def test_lip_opening_is_outer_lip_gap_over_eye_distance_and_scale_free() -> None:
    lms = np.zeros((2, li.NUM_LANDMARKS, 2))
    lms[:, li.RIGHT_EYE_CORNERS[0]] = [100.0, 100.0]
    lms[:, li.LEFT_EYE_CORNERS[0]] = [200.0, 100.0]
    lms[:, li.UPPER_LIP_OUTER_MID] = [150.0, 200.0]
    lms[0, li.LOWER_LIP_OUTER_MID] = [150.0, 210.0]
    lms[1, li.LOWER_LIP_OUTER_MID] = [150.0, 240.0]
    np.testing.assert_allclose(lip_opening(lms), [0.1, 0.4])
    np.testing.assert_allclose(lip_opening(lms * 2.5), [0.1, 0.4])


def test_generated_talking_face_scores_above_its_shifted_audio(sample_video: Path) -> None:
    from evaluation.landmarks import read_video_frames, video_landmarks

    lms = video_landmarks(read_video_frames(sample_video))
    wav = load_audio(sample_video)
    own = score_lipsync(lms, wav, 16000, FPS)
    half = 8000  # 0.5 s
    shifted = score_lipsync(lms, np.concatenate([np.zeros(half, np.float32), wav[:-half]]), 16000, FPS)
    assert own.frames == len(lms)
    assert own.score > shifted.score + 0.2


def _lipsync_cli(*args: str) -> subprocess.CompletedProcess:
    """Run python -m bench.lipsync with `args` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "bench.lipsync", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_lipsync_command_prints_score_and_writes_json(sample_video: Path, tmp_path: Path) -> None:
    out, strip = tmp_path / "report.json", tmp_path / "strip.png"
    result = _lipsync_cli("--video", str(sample_video), "--out", str(out), "--strip", str(strip))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert_metadata(report, video=str(sample_video), strip=str(strip))
    assert strip.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report["strip"]["path"] == str(strip)
    assert 1 <= len(report["strip"]["frames"]) <= 8 and report["strip"]["frames"] == sorted(
        report["strip"]["frames"]
    )
    assert isinstance(report["score"], float) and -1.0 <= report["score"] <= 1.0
    assert f"lip-sync score {report['score']:.2f}" in result.stdout
    assert report["syncnet"]["lse_c"] is None and "not measured" in report["syncnet"]["status"]
    assert "0 is chance" in _lipsync_cli("--help").stdout


def test_strip_of_silence_writes_nothing(tmp_path: Path) -> None:
    from evaluation.lipsync import write_strip

    phones = np.full(50, PHONES.index("SIL"))
    frames = dict.fromkeys(range(50), np.zeros((64, 64, 3), np.uint8))
    lms = np.full((50, li.NUM_LANDMARKS, 2), 30.0)
    assert write_strip(frames, lms, phones, np.zeros(50), FPS, tmp_path / "s.png") == []
    assert not (tmp_path / "s.png").exists()


def test_opening_agreement_finds_the_lag_and_needs_enough_frames() -> None:
    rng = np.random.default_rng(0)
    speaker = np.convolve(rng.normal(size=120), np.ones(5) / 5, mode="same")
    avatar = np.roll(speaker, 2) + rng.normal(0, 0.05, 120)  # follows two frames late
    avatar[40:50] = np.nan  # no face there
    agreement = opening_agreement(avatar, speaker, FPS)
    assert agreement["lag_frames"] == 2 and agreement["corr"] > 0.9 and agreement["frames"] == 110
    assert abs(agreement["null_mean"]) < 0.3 and agreement["z"] > 3  # far above the shifted references
    unrelated = opening_agreement(rng.normal(size=120), speaker, FPS)
    assert abs(unrelated["corr"]) < 0.35 and unrelated["z"] < 3
    short = MIN_AGREEMENT_FRAMES - 1
    assert opening_agreement(avatar[:short], speaker[:short], FPS)["corr"] is None
    assert opening_agreement(np.ones(120), speaker, FPS)["corr"] is None


def test_lipsync_command_missing_video_is_one_line_error(tmp_path: Path) -> None:
    result = _lipsync_cli("--video", str(tmp_path / "none.mp4"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: video '{tmp_path / 'none.mp4'}' not found; pass an existing file with --video"
    ]


def test_strip_moments_pick_the_longest_runs_of_each_class_in_time_order() -> None:
    from evaluation.lipsync import strip_moments

    aa, m, s = PHONES.index("AA"), PHONES.index("M"), PHONES.index("S")
    phones = np.array([s, aa, aa, aa, s, m, m, s, aa, s, m, m, m, m, s])
    assert strip_moments(phones, count=2) == [2, 11]
    assert strip_moments(phones, count=4) == [2, 5, 8, 11]
    assert strip_moments(np.full(5, s), count=4) == []


def test_validation_helpers_shift_and_loop() -> None:
    from bench.diagnostics.lipsync_validation import looped, shifted

    wav = np.arange(1, 32001, dtype=np.float32)  # 2 s at 16 kHz
    later, earlier = shifted(wav, 0.5), shifted(wav, -0.5)
    assert later.size == earlier.size == wav.size
    assert (later[:8000] == 0).all() and later[8000] == 1.0 and earlier[0] == 8001.0
    assert (earlier[-8000:] == 0).all()
    np.testing.assert_array_equal(looped(wav[:3], 7), [1, 2, 3, 1, 2, 3, 1])


def test_validation_command_scores_own_shifted_and_other_audio(
    sample_video: Path, speech_wav: Path, tmp_path: Path
) -> None:
    out = tmp_path / "validation.json"
    args = ["--videos", str(sample_video), "--audio", str(speech_wav), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "bench.diagnostics.lipsync_validation", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(out.read_text())
    assert_metadata(report, videos=[str(sample_video)], shift=0.5)
    scores = report["clips"][sample_video.stem]
    assert set(scores) == {"own", "own +0.5 s", "own -0.5 s", speech_wav.stem}
    assert scores["own"]["score"] > scores["own +0.5 s"]["score"]
    assert {s["frames"] for s in scores.values()} == {scores["own"]["frames"]}
    passed = result.stdout.strip().splitlines()[1].split()[-1]
    assert passed == ("True" if result.returncode == 0 else "False")


def test_cross_driven_report_scores_the_render_against_the_real_clip(
    sample_video: Path, speech_wav: Path, tmp_path: Path
) -> None:
    from bench.evaluate import cross_driven_lipsync

    real = {"score": 0.5}
    report = cross_driven_lipsync(sample_video, speech_wav, tmp_path / "data", {"fps": 25}, tmp_path, real)
    render = report["render"]
    assert render["audio"] == str(speech_wav) and render["frames"] == 50  # the 2 s of speech over a 3 s video
    assert report["reference_real_clip"] is real
    if render["score"] is None:
        assert report["ratio_to_real_clip"] is None
    else:
        assert report["ratio_to_real_clip"] == pytest.approx(render["score"] / 0.5)
    assert "video_reference" not in render  # speech without a video of its speaker
    assert "lip_code" not in render  # no lip_code.npy beside the video: not a lip-code model's render
    strip = render["strip"]
    assert (tmp_path / "lipsync_strip_cross.png").is_file() == bool(strip["frames"])
    assert strip["path"] == (str(tmp_path / "lipsync_strip_cross.png") if strip["frames"] else None)


def test_speech_given_as_a_video_is_compared_with_its_speakers_mouth(
    sample_video: Path, tmp_path: Path
) -> None:
    """Driven by a video's audio, the render's mouth is also compared with the mouth in that video: here the
    video itself, which follows its own mouth exactly."""
    from bench.evaluate import cross_driven_lipsync

    real = {"score": 0.5}
    report = cross_driven_lipsync(sample_video, sample_video, tmp_path / "data", {"fps": 25}, tmp_path, real)
    reference = report["render"]["video_reference"]
    assert reference["video"] == str(sample_video) and reference["lag_frames"] == 0
    assert reference["corr"] == pytest.approx(1.0) and reference["frames"] == 75
    assert reference["null_mean"] < 0.9 and reference["z"] > 2
    result = _lipsync_cli("--video", str(sample_video), "--reference_video", str(tmp_path / "missing.mp4"))
    assert result.returncode != 0 and "--reference_video" in result.stderr.strip().splitlines()[-1]
