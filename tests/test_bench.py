"""bench/: every tool parses --help as `python -m bench.<tool>`, and every JSON report carries the metadata
of bench.report (commit, dirty, machine, versions, arguments, created); the cheap tools run here on tiny
inputs, the others are checked where their own tests run them (test_length_curve, test_pose_correction,
test_train_step_profile, test_lipsync)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report as bench_report

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted(
    f"bench.{p.relative_to(REPO / 'bench').with_suffix('').as_posix().replace('/', '.')}"
    for p in [*(REPO / "bench").glob("*.py"), *(REPO / "bench" / "diagnostics").glob("*.py")]
    if p.stem not in ("__init__", "report")
)


def assert_metadata(report: dict, **arguments: object) -> None:
    """`report` carries bench.report's metadata block, with these parsed arguments among its arguments."""
    assert set(bench_report.METADATA_KEYS) <= set(report)
    assert report["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", report["commit"])
    assert report["dirty"] in (True, False, None)
    assert {"cpu", "cores", "gpus"} <= set(report["machine"]) and isinstance(report["machine"]["gpus"], list)
    assert {"python", "torch", "numpy", "gsplat", "mediapipe", "pocketsphinx"} <= set(report["versions"])
    assert report["versions"]["python"] == f"{sys.version_info.major}.{sys.version_info.minor}." + str(
        sys.version_info.micro
    )
    assert isinstance(report["arguments"]["argv"], list)
    for key, value in arguments.items():
        assert report["arguments"][key] == value, key
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", report["created"])
    json.dumps(report)  # JSON as written


def test_every_tool_is_listed() -> None:
    names = {t.rsplit(".", 1)[1] for t in TOOLS}
    assert {
        "evaluate",
        "cross_driven",
        "render_speed",
        "lipsync",
        "error_regions",
        "train_step_profile",
    } <= names
    assert all(t.startswith("bench.diagnostics.") for t in TOOLS if t.endswith(("error_regions", "profile")))


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_parses_help(tool: str, capsys: pytest.CaptureFixture) -> None:
    try:
        module = importlib.import_module(tool)
    except ImportError as err:  # an optional dependency of one tool (e.g. ray) that this venv lacks
        pytest.skip(f"{tool}: {err}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {tool}"), out[:200]
    assert (
        "--workdir" not in out and "--data " not in out and "--work " not in out
    ), "one flag name per concept"


# Issue #18, one flag name per concept (docs/benchmarks.md): frames rendered at once --batch_size (a list
# to time: --batch_sizes), render size --resolution, timed repeats --runs, a Gaussian count --synthetic, an
# output folder --output_dir, underscores only. The names they replaced must not come back.
RETIRED_FLAGS = {
    "--batch",
    "--size",
    "--sizes",
    "--iters",
    "--trials",
    "--num",
    "--workdir",
    "--work",
    "--data",
}
# --size stays where it is preprocess.sh's own flag (the dataset's frame side), passed through to it.
PREPROCESS_SIZE = {"bench.evaluate", "bench.preprocess_speed"}
FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")


def _help_text(module_name: str, capsys: pytest.CaptureFixture) -> str:
    """What `module_name`.main(["--help"]) prints (skipped when an optional dependency is missing)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        pytest.skip(f"{module_name}: {err}")
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("tool", [*TOOLS, "scripts.run_sample", "data_utils.bfm.install"])
def test_retired_flag_names_stay_retired(tool: str, capsys: pytest.CaptureFixture) -> None:
    flags = set(FLAG.findall(_help_text(tool, capsys)))
    retired = RETIRED_FLAGS - ({"--size"} if tool in PREPROCESS_SIZE else set())
    assert not flags & retired, f"{tool}: retired flag names {sorted(flags & retired)} (docs/benchmarks.md)"
    hyphenated = sorted(f for f in flags if "-" in f[2:])
    assert not hyphenated, f"{tool}: flags are spelled with underscores, not {hyphenated}"


def test_output_folder_and_report_file_flags(capsys: pytest.CaptureFixture) -> None:
    sample = set(FLAG.findall(_help_text("scripts.run_sample", capsys)))
    assert "--output_dir" in sample and "--out" not in sample, "run_sample.sh writes a folder: --output_dir"
    raw = set(FLAG.findall(_help_text("bench.diagnostics.render_speed_raw", capsys)))
    assert {"--synthetic", "--batch_sizes", "--resolution", "--runs", "--out"} <= raw
    agreement = set(FLAG.findall(_help_text("bench.diagnostics.rasterizer_agreement", capsys)))
    assert {"--synthetic", "--batch_size", "--resolution", "--out"} <= agreement
    assert "--runs" in set(FLAG.findall(_help_text("bench.live_latency", capsys)))


def test_python_m_runs_a_tool_and_a_diagnostic() -> None:
    for tool in ("bench.lipsync", "bench.diagnostics.render_speed_raw"):
        done = subprocess.run(
            [sys.executable, "-m", tool, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0 and f"python -m {tool}" in done.stdout, done.stderr


def test_metadata_block(tmp_path: Path) -> None:
    import argparse

    args = argparse.Namespace(reference_path=tmp_path / "data", sizes=(1, 2), flag=True)
    record = bench_report.write_report(tmp_path / "r.json", {"score": 0.5, "machine": "kept"}, args)
    assert json.loads((tmp_path / "r.json").read_text()) == record
    assert record["score"] == 0.5 and record["machine"] == "kept", "the report's own keys win"
    assert list(record)[: len(bench_report.METADATA_KEYS)] == list(bench_report.METADATA_KEYS)
    record["machine"] = bench_report.machine()
    assert_metadata(record, reference_path=str(tmp_path / "data"), sizes=[1, 2], flag=True)
    assert record["commit"] is not None or not (REPO / ".git").exists(), "a git checkout has a commit"


def test_render_speed_report_carries_metadata(tmp_path: Path) -> None:
    from bench import render_speed

    out = tmp_path / "speed.json"
    argv = ["--synthetic", "300", "--resolution", "24", "--batch_sizes", "1", "--warmup", "0", "--runs", "1"]
    assert render_speed.main([*argv, "--device", "cpu", "--variants", "fp32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert_metadata(report, synthetic=300, out=str(out))
    assert report["results"][0]["fps"] > 0


def test_render_speed_times_a_synthetic_avatar_with_two_lip_predictors(tmp_path: Path) -> None:
    import torch

    from bench import render_speed
    from utils.cli import UserError

    setup = render_speed.synthetic_avatar(300, torch.device("cpu"), lip_predictors=2)
    batch = render_speed.make_batch(setup, 2, 24, torch.device("cpu"))
    with torch.no_grad():
        lips = setup.avatar.deform.lip_predictions(batch.audio)
    assert lips.shape == (2, 2, 3), "the second predictor is built and run"
    out = tmp_path / "speed.json"
    argv = ["--synthetic", "300", "--lip_predictors", "2", "--resolution", "24", "--batch_sizes", "1"]
    argv += ["--warmup", "0", "--runs", "1", "--device", "cpu", "--variants", "fp32", "--out", str(out)]
    assert render_speed.main(argv) == 0
    assert "2 lip predictors, lip_encoder attention" in json.loads(out.read_text())["source"]
    assert render_speed.main([*argv, "--lip_encoder", "linear_corpus"]) == 0
    assert "2 lip predictors, lip_encoder linear_corpus" in json.loads(out.read_text())["source"]
    refused = ["--model_path", str(tmp_path), "--reference_path", str(tmp_path), "--lip_predictors", "2"]
    with pytest.raises(UserError, match="--synthetic"):
        render_speed.main(refused)
    with pytest.raises(UserError, match="--synthetic"):
        render_speed.main([*refused[:4], "--lip_encoder", "linear"])


def test_render_speed_raw_report_carries_metadata(tmp_path: Path) -> None:
    from bench.diagnostics import render_speed_raw

    out = tmp_path / "raw.json"
    argv = ["--synthetic", "200", "--batch_sizes", "1", "--resolution", "24", "--warmup", "0", "--runs", "1"]
    assert render_speed_raw.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert_metadata(report, synthetic=[200], batch_sizes=[1], resolution=24, runs=1)
    assert report["rows"][0]["forward_fps"] > 0


def test_preprocess_speed_report_carries_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import preprocess_speed

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    monkeypatch.setattr(preprocess_speed, "run_clip", lambda video, size, fps: {"clip": video.name})
    monkeypatch.setattr(preprocess_speed, "format_table", lambda records: "table")
    out = tmp_path / "prep.json"
    assert preprocess_speed.main(["--videos", str(clip), "--out", str(out), "--size", "64"]) == 0
    report = json.loads(out.read_text())
    assert_metadata(report, videos=[str(clip)], size=64)
    assert report["clips"] == [{"clip": "clip.mp4"}]
