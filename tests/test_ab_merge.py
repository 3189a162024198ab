"""bench.ab_merge: the table of runs that several bench.ab reports hold (a rerun of the failed cells), seeds
counted, the later report winning, what is still missing named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import ab_merge
from utils.cli import UserError


def scores(sync: float, psnr: float) -> dict:
    """The scores of one run as bench.ab.run_scores writes them."""
    return {
        "val_psnr": psnr,
        "val_face_psnr": psnr - 1,
        "lmd_mouth": 3.0,
        "lipsync": {"a.wav": sync, "b.wav": sync / 2},
        "real_clip_lipsync": 0.8,
        "real_clip_silence_opening": 0.2,
        "real_clip_speech_opening": 0.3,
        "silence_opening": {"mean": 0.21, "std": 0.01, "p95": 0.23},
        "train_seconds": 100.0,
    }


def write(path: Path, runs: dict, errors: dict) -> Path:
    """A bench.ab report holding `runs` and `errors` at `path`."""
    path.write_text(json.dumps({"commit": "abc", "runs": runs, "errors": errors}))
    return path


def test_merge_fills_the_failed_cells_and_the_later_report_wins(tmp_path: Path) -> None:
    first = write(
        tmp_path / "first.json",
        {"clip_a__base__s0": scores(0.4, 30.0), "clip_a__ph__s1": scores(0.0, 20.0)},
        {"evaluate clip_a__ph__s0": "out of memory", "evaluate clip_b__base__s0": "out of memory"},
    )
    second = write(
        tmp_path / "second.json",
        {"clip_a__ph__s0": scores(0.6, 31.0), "clip_a__ph__s1": scores(0.8, 32.0)},
        {},
    )
    out = tmp_path / "merged.json"
    assert ab_merge.main([str(first), str(second), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    rows = {(r["clip"], r["arm"]): r for r in merged["table"]}
    assert list(rows) == [("clip_a", "base"), ("clip_a", "ph")]
    assert rows[("clip_a", "base")]["seeds"] == 1 and rows[("clip_a", "ph")]["seeds"] == 2
    # ph: seed 0 from the second report, seed 1 from the second too (it replaces the first's)
    assert rows[("clip_a", "ph")]["val_psnr"] == pytest.approx(31.5)
    assert rows[("clip_a", "ph")]["lipsync"]["a.wav"] == pytest.approx(0.7)
    assert rows[("clip_a", "ph")]["ratio_to_real"] == pytest.approx((0.7 + 0.35) / 2 / 0.8, abs=1e-3)
    assert merged["errors"] == {"evaluate clip_b__base__s0": "out of memory"}
    assert [s["path"] for s in merged["sources"]] == [str(first), str(second)]
    assert "| clip_a | ph | 2 |" in out.with_suffix(".md").read_text()


def test_merge_refuses_what_is_not_a_bench_ab_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"table": []}))
    with pytest.raises(UserError, match="runs"):
        ab_merge.main([str(bad), "--out", str(tmp_path / "m.json")])
    with pytest.raises(UserError, match="not found"):
        ab_merge.main([str(tmp_path / "none.json"), "--out", str(tmp_path / "m.json")])
    with pytest.raises(UserError, match="run name"):
        ab_merge.run_of("clip_without_seed")
