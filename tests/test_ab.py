"""bench.ab end to end on the CPU: two arms and a broken one on a tiny generated subject (preprocessing
skipped: the dataset is already in place), the table, the failure report, and a rerun that redoes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import ab
from tests.dataset_factory import make_dataset
from utils.cli import UserError

TINY = "--init_points 300 --triplane_resolutions 8 16 --triplane_channels 4 --token_dim 8 --heads 2"


def test_arms_parse_with_an_extractor_and_bad_ones_are_refused() -> None:
    assert ab.parse_arm("lips=--audio_code lips") == ab.Arm("lips", "visemes", ("--audio_code", "lips"))
    assert ab.parse_arm("ph:phonemes=") == ab.Arm("ph", "phonemes", ())
    aligned = ab.parse_arm("al:visemes --align_audio=--seed 1")
    assert aligned == ab.Arm("al", "visemes", ("--seed", "1"), ("--align_audio",))
    assert ab.parse_arm("al2:--align_audio=") == ab.Arm("al2", "visemes", (), ("--align_audio",))
    arms = [ab.parse_arm("base="), aligned, ab.parse_arm("x:visemes=")]
    runs = ab.plan([Path("c.mp4")], arms, [0], Path("w"))
    assert [r.data.name for r in runs] == ["c__visemes", "c__visemes__align_audio", "c__visemes"]
    for bad in ("lips", "=--seed 1", "a b=--seed 1"):
        with pytest.raises(UserError, match="NAME=TRAIN_ARGS"):
            ab.parse_arm(bad)
    with pytest.raises(UserError, match="eval_parallel"):
        ab.main(["--videos", __file__, "--audio", __file__, "--arm", "x=", "--eval_parallel", "0"])
    with pytest.raises(UserError, match="must differ"):
        ab.plan([Path("a.mp4")], [ab.parse_arm("x="), ab.parse_arm("x=--seed 2")], [0], Path("w"))


def test_ab_imports_where_ray_is_not_installed() -> None:
    """The H200 image has no Ray: bench.ab (through many.stages) must not import it."""
    code = "import sys; sys.modules['ray'] = None; import bench.ab; assert 'many.driver' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_ab_trains_scores_reports_failures_and_reruns_nothing(
    tmp_path: Path, speech_wav: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at_once: dict[str, int] = {}
    run_pipelined = ab.run_pipelined

    def recorded(runs: list, train, evaluate, is_trained, parallel: int, eval_parallel: int) -> dict:
        at_once.update(train=parallel, evaluate=eval_parallel)
        return run_pipelined(runs, train, evaluate, is_trained, parallel, eval_parallel)

    monkeypatch.setattr(ab, "run_pipelined", recorded)
    work = tmp_path / "ab"
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read: the dataset below is already preprocessed")
    make_dataset(work / "data" / "clip__logmel", frames=24, size=32, fps=4)
    # the clip is among the driving audio too, as when the clips drive each other: never its own avatar
    argv = ["--videos", str(video), "--audio", str(speech_wav), str(video), "--output_dir", str(work)]
    argv += ["--iterations", "12"]
    argv += [
        "--arm",
        f"base:logmel={TINY} --audio_scope everywhere --audio_code free",
        "--arm",
        f"lips:logmel={TINY}",
    ]
    argv += ["--arm", "broken:logmel=--no_such_flag", "--parallel", "2", "--eval_parallel", "1"]
    assert ab.main(argv) == 1  # the broken arm fails; the others go on
    assert at_once == {"train": 2, "evaluate": 1}  # evaluations, which hold renders in memory, apart
    report = json.loads((work / "report.json").read_text())
    assert [(r["clip"], r["arm"]) for r in report["table"]] == [("clip", "base"), ("clip", "lips")]
    for row in report["table"]:
        assert row["val_psnr"] > 5 and row["train_seconds"] > 0 and row["seeds"] == 1
        assert list(row["lipsync"]) == [speech_wav.name]  # the silence is scored apart from the speakers
        assert row["video_corr"] is None  # no driving audio came as a video of its speaker
    base, lips = report["table"]  # the lip code that drove the mouth: saved and scored for lips models only
    assert base["lip_code_lipsync_mean"] is None and base["lip_code_follows"] is None
    cross = json.loads((work / "cross" / "clip__lips__s0" / "report.json").read_text())
    assert set(cross["audio"][speech_wav.name]["render"]["lip_code"]) >= {"score", "follows"}
    assert (work / "cross" / "clip__lips__s0" / speech_wav.stem / "lip_code.npy").is_file()
    assert "| lip code / render follows |" in (work / "report.md").read_text()
    assert "no_such_flag" in report["errors"]["train clip__broken__s0"]
    assert report["commit"] and report["arguments"]
    assert "| clip | lips | 1 |" in (work / "report.md").read_text()
    assert "| video corr |" in (work / "report.md").read_text()
    logs = {p: p.stat().st_mtime_ns for p in (work / "logs").glob("*__base__*")}
    assert len(logs) == 3  # train, render_direct, cross_driven
    assert len(list((work / "logs").glob("*__lips__*"))) == 4  # and render_direct --tracked_lips
    tracked = json.loads((work / "val_tracked" / "clip__lips__s0" / "metrics.json").read_text())
    assert tracked["tracked_lips"] is True and not (work / "val_tracked" / "clip__base__s0").exists()
    assert all("lmd_mouth_tracked_lips" in row for row in report["table"])
    # how far the lip code reaches: the held-out render against the tracked lips', lip-code models only
    reach = json.loads((work / "val_tracked" / "clip__lips__s0" / "lip_reach.json").read_text())
    assert set(reach) == {"far_share", "far_mean", "near_mean", "mouth_width_px"}
    assert lips["off_mouth_share"] == reach["far_share"] and base["off_mouth_share"] is None
    assert "| off-mouth change |" in (work / "report.md").read_text()
    # each evaluation keeps its silence statistics, so the table needs only the JSON files of the runs
    silence = json.loads((work / "cross" / "clip__base__s0" / "silence_opening.json").read_text())
    assert set(silence) == {"mean", "std", "p95"}
    shutil.rmtree(work / "models" / "clip__broken__s0", ignore_errors=True)
    assert ab.main(argv) == 1
    assert {p: p.stat().st_mtime_ns for p in logs} == logs  # nothing finished is run again
    assert json.loads((work / "report.json").read_text())["table"] == report["table"]
    # the runs' JSON files alone, copied away from the models and the clip, make the same table
    copied = tmp_path / "copied"
    for path in work.rglob("*.json"):
        (copied / path.relative_to(work)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copied / path.relative_to(work))
    video.unlink()
    again = [
        *argv[: argv.index("--output_dir")],
        "--output_dir",
        str(copied),
        *argv[argv.index("--iterations") :],
    ]
    assert ab.main([*again, "--report_only"]) == 0
    assert json.loads((copied / "report.json").read_text())["table"] == report["table"]
    assert not (copied / "logs").exists()  # nothing was run
    with pytest.raises(UserError, match="no run under .* is evaluated"):
        ab.main(
            [
                *again[: again.index("--output_dir") + 1],
                str(tmp_path / "none"),
                "--report_only",
                "--arm",
                "x=",
            ]
        )


def test_each_run_is_evaluated_as_soon_as_it_is_trained(tmp_path: Path) -> None:
    arm = ab.parse_arm("a=")
    runs = [ab.Run(clip, arm, 0, tmp_path) for clip in ("slow", "fast", "broken")]
    done: set[str] = set()
    order: list[str] = []
    fast_evaluated = threading.Event()

    def train(run: ab.Run) -> str | None:
        if run.clip == "slow":  # ends only once the fast run is scored: no waiting for every training
            assert fast_evaluated.wait(10)
        order.append(f"train {run.clip}")
        if run.clip == "broken":
            return "no model"
        done.add(run.clip)
        return None

    def evaluate(run: ab.Run) -> str | None:
        order.append(f"evaluate {run.clip}")
        if run.clip == "fast":
            fast_evaluated.set()
        return None

    errors = ab.run_pipelined(runs, train, evaluate, lambda r: r.clip in done, 2, 1)
    assert errors == {"train broken__a__s0": "no model"}
    assert order.index("evaluate fast") < order.index("train slow") < order.index("evaluate slow")
    assert "evaluate broken" not in order
    done.add("broken")  # trained meanwhile: a rerun evaluates it only
    order.clear()
    assert ab.run_pipelined(runs[2:], train, evaluate, lambda r: r.clip in done, 2, 1) == {}
    assert order == ["evaluate broken"]


def test_table_averages_the_video_correlation_over_speakers_and_seeds(tmp_path: Path) -> None:
    arm = ab.parse_arm("base=")
    runs = ab.plan([Path("clip.mp4")], [arm], [0, 1], tmp_path)
    stats = {"mean": 0.2, "std": 0.01, "p95": 0.3}
    scores = {
        r.name: {
            "val_psnr": 30.0,
            "val_face_psnr": 28.0,
            "lmd_mouth": 2.0,
            "lipsync": {"other.mp4": 0.5, "speech.wav": 0.3},
            "video_corr": corr,
            "real_clip_lipsync": 0.8,
            "real_clip_silence_opening": 0.2,
            "real_clip_speech_opening": 0.3,
            "silence_opening": stats,
            "train_seconds": 10.0,
        }
        for r, corr in zip(runs, [{"other.mp4": 0.4, "third.mp4": 0.2}, {"other.mp4": 0.1}], strict=True)
    }
    scores[runs[0].name]["lmd_mouth_shape"] = 1.5  # the other run's report predates the shape
    (row,) = ab.table(scores, runs)
    assert row["lmd_mouth_shape"] == 1.5 and "| 2.00 (1.50) / n/a |" in ab.markdown([row])
    assert row["video_corr"] == pytest.approx((0.3 + 0.1) / 2) and row["lipsync_mean"] == pytest.approx(0.4)
    assert "| 0.20 |" in ab.markdown([row])
    assert row["lip_code_lipsync_mean"] is None and "| n/a / n/a |" in ab.markdown([row])  # older reports
    for r, follows in zip(runs, [0.9, 0.5], strict=True):
        scores[r.name]["lip_code_lipsync"] = {"other.mp4": 0.7, "speech.wav": 0.5}
        scores[r.name]["lip_code_follows"] = {"other.mp4": follows, "speech.wav": follows - 0.2}
    (row,) = ab.table(scores, runs)
    assert row["lip_code_lipsync_mean"] == pytest.approx(0.6)
    assert row["lip_code_follows"] == pytest.approx((0.8 + 0.4) / 2)
    assert "| 0.60 / 0.60 |" in ab.markdown([row])
