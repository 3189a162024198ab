"""train_many on the CPU with one local Ray instance: two tiny generated clips and one bad file go through
preprocess -> train -> render_direct; the clips finish, the bad file is reported, a rerun skips the finished
ones. Plus the pieces: naming, step plans, error lines, clean stop of a step, flag checks, progress lines."""

from __future__ import annotations

import _thread
import io
import json
import re
import sys
import threading
import time
from pathlib import Path

import pytest
import ray

import train_many
from data_utils.sample import generate_sample
from many.driver import ManyConfig, run_many
from many.progress import Board
from many.stages import ERROR_CHARS, StageOptions, error_line, run_logged, train_args
from many.subjects import Subject, find_videos, subject_names
from many.summary import markdown_table, subject_row
from utils.cli import UserError

ITERATIONS = 20


@pytest.fixture(scope="module")
def local_ray() -> None:
    """One local Ray instance with two CPUs for the module."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of two 2.5 s, 128 px talking-face clips and one file that is no video."""
    folder = tmp_path_factory.mktemp("videos")
    for seed, name in enumerate(("alice", "bob")):
        generate_sample(folder / f"{name}.mp4", seconds=2.5, fps=25, size=128, seed=seed)
    (folder / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    return folder


def _config(videos: Path, out: Path) -> ManyConfig:
    """A tiny run: 64 px datasets, 20 iterations at 32 px, one CPU per task."""
    return ManyConfig(
        videos=[videos],
        out=out,
        iterations=ITERATIONS,
        preprocess_args=["--size", "64", "--no_preview"],
        train_args=["--resolution", "32", "--init_points", "300", "--eval_every", "20"],
        cpus_per_task=1,
        progress_every=0,
    )


@pytest.fixture(scope="module")
def first_run(local_ray: None, videos: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(config, rows, progress output) of the first run over the three videos."""
    cfg = _config(videos, tmp_path_factory.mktemp("runs") / "team")
    stream = io.StringIO()
    rows = run_many(cfg, stream)
    return cfg, {r["subject"]: r for r in rows}, stream.getvalue()


def test_clips_finish_and_bad_file_is_reported(first_run: tuple) -> None:
    cfg, rows, progress = first_run
    assert set(rows) == {"alice", "bob", "broken"}
    for name in ("alice", "bob"):
        row, folder = rows[name], Path(cfg.out) / name
        assert row["status"] == "finished", row
        assert row["psnr"] > 10 and row["gaussians"] > 0
        assert (folder / "model" / f"chkpnt{ITERATIONS}.pth").is_file()
        metrics = json.loads((folder / "results" / "metrics.json").read_text())
        assert metrics["iteration"] == ITERATIONS and metrics["psnr"] == pytest.approx(row["psnr"])
        assert "=== " in (folder / "log.txt").read_text()
        assert json.loads((folder / "status.json").read_text())["status"] == "finished"
    bad = rows["broken"]
    assert bad["status"] == "failed" and bad["stage"] == "preprocess"
    assert "not a readable video" in bad["error"] and "\n" not in bad["error"]
    summary = json.loads((Path(cfg.out) / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2, "failed": 1}
    table = (Path(cfg.out) / "summary.md").read_text()
    assert "| alice | finished |" in table and "- broken (preprocess): " in table
    # the training line reads "train 8/12, ..." once it logged a step, else "train, 3s": both are its stage
    assert re.search(r"\] (alice|bob) +train\b", progress) and "failed at preprocess" in progress


def test_rerun_skips_finished_subjects(first_run: tuple) -> None:
    cfg, _, _ = first_run
    out = Path(cfg.out)
    logs = {n: (out / n / "log.txt").read_bytes() for n in ("alice", "bob")}
    rows = {r["subject"]: r for r in run_many(cfg, io.StringIO())}
    assert rows["alice"]["status"] == rows["bob"]["status"] == "skipped"
    assert rows["broken"]["status"] == "failed"  # a failed subject is tried again
    assert {n: (out / n / "log.txt").read_bytes() for n in logs} == logs  # no step ran again


def test_out_must_be_a_run_folder(videos: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="train_many.json"):
        run_many(_config(videos, foreign))
    with pytest.raises(UserError, match="contains the input"):
        run_many(_config(videos, videos.parent))


def test_videos_and_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    clips = [tmp_path / "a" / "Jo Smith.mp4", tmp_path / "b" / "Jo Smith.mp4", tmp_path / "a" / "kim.MOV"]
    for clip in clips:
        clip.write_bytes(b"x")
    found = find_videos([tmp_path / "a", clips[1], clips[0]])
    assert found == [clips[0], clips[2], clips[1]]  # folder sorted, repeats dropped
    names = subject_names(found)
    assert names[1] == "kim" and names[0].startswith("Jo_Smith-") and names[0] != names[2]
    with pytest.raises(UserError, match="does not exist"):
        find_videos([tmp_path / "missing.mp4"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no video"):
        find_videos([tmp_path / "empty"])


def test_train_step_continues_what_is_on_disk(tmp_path: Path) -> None:
    subject = Subject("s", tmp_path / "s.mp4", tmp_path / "s")
    opts = StageOptions(iterations=100, train_args=("--bf16",))
    assert "--resume" not in train_args(subject, opts) and "--force" not in train_args(subject, opts)
    subject.model.mkdir(parents=True)
    assert "--force" in train_args(subject, opts)  # stopped before its first checkpoint
    (subject.model / "chkpnt40.pth").write_bytes(b"")
    assert train_args(subject, opts)[-2:] == ["--resume", "--bf16"]
    (subject.model / "train_summary.json").write_text(json.dumps({"iterations": 100}))
    assert train_args(subject, opts) is None


def test_error_line() -> None:
    log = "train: 10%\rtrain: 20%\nTraceback (most recent call last):\n  x\nRuntimeError: bad thing\n"
    assert error_line(log, 1) == "RuntimeError: bad thing"
    assert error_line("noise\nerror: out of GPU memory (batch_size 1)\nmore\n", 2) == (
        "out of GPU memory (batch_size 1)"
    )
    assert error_line("", -9) == "killed by SIGKILL (out of memory?)"
    oom = "torch.OutOfMemoryError: CUDA out of memory. " + "Process 5613 has 6.06 GiB memory in use. " * 20
    short = error_line(f"Traceback (most recent call last):\n{oom}\n", 1)
    assert short.startswith("torch.OutOfMemoryError: CUDA out of memory.") and short.endswith("…")
    assert len(short) <= ERROR_CHARS


def test_interrupt_stops_the_step_cleanly(tmp_path: Path) -> None:
    marker, log = tmp_path / "saved", tmp_path / "log.txt"
    child = (
        "import signal, sys, time\n"
        f"def stop(*_):\n    open({str(marker)!r}, 'w').write('checkpoint'); sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\nprint('rea' + 'dy', flush=True)\ntime.sleep(60)\n"
    )

    def interrupt_when_ready() -> None:
        while "ready\n" not in (log.read_text() if log.exists() else ""):  # not the command in its header
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_logged([sys.executable, "-c", child], log)
    assert marker.read_text() == "checkpoint" and time.monotonic() - start < 30


def test_cli_checks_flags_before_any_work(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    with pytest.raises(UserError, match="train_many sets it itself"):
        train_many.main([str(video), "--out", str(tmp_path / "o"), "--train_args=--force"])
    with pytest.raises(UserError, match="unrecognized arguments: --bogus"):
        train_many.main([str(video), "--out", str(tmp_path / "o"), "--train_args=--bogus"])
    assert not (tmp_path / "o").exists()


def test_board_prints_state_changes_at_once_and_training_lines_at_most_every_period() -> None:
    stream = io.StringIO()
    board = Board(["a"], stream, every=3600)
    board.set("a", "train 1/10", "train")
    board.show()
    board.set("a", "train 2/10", "train")
    board.show()
    board.set("a", "render, 0s", "render")
    board.show()
    assert stream.getvalue().splitlines() == ["[1/1] a  train 1/10", "[1/1] a  render, 0s"]


def test_summary_shows_only_judged_lip_sync_and_says_why_not(tmp_path: Path) -> None:
    rows = []
    for name, lipsync in (
        ("long", {"score": 0.81, "judged": True, "reason": ""}),
        ("short", {"score": 0.4, "judged": False, "reason": "too short to judge: 3 open-vowel frames"}),
        ("silent", {}),
    ):
        subject = Subject(name, tmp_path / f"{name}.mp4", tmp_path / name)
        subject.results.mkdir(parents=True)
        summary = {"num_gaussians": 10, "metrics": {"psnr": 30.0, "lmd_mouth": 2.0}, "lipsync": lipsync}
        (subject.results / "summary.json").write_text(json.dumps(summary))
        rows.append(subject_row(subject, {"status": "finished", "seconds": {"train": 5.0}}))
    assert [r["lipsync"] for r in rows] == [0.81, None, None]  # an unjudged score is not shown as one
    table = markdown_table(rows)
    assert "| long | finished | 5s | 10 | 30.00 | 2.00 | 0.810 |" in table
    assert "| short | finished | 5s | 10 | 30.00 | 2.00 | - |" in table
    assert "- short: lip sync not judged: too short to judge: 3 open-vowel frames" in table
    assert "silent: lip sync" not in table  # not scored at all (--no_lipsync): nothing to explain
