"""Atomic outputs and one-line CLI errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from utils.atomic import atomic_dir, atomic_write_json, check_output_dir
from utils.cli import UserError, run_cli


def test_atomic_dir_renames_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="--force"):
        check_output_dir(final, force=False)
    with pytest.raises(UserError), atomic_dir(final):
        pass
    assert (final / "keep.txt").read_text() == "user data"
    with atomic_dir(final, force=True) as tmp:
        (tmp / "new.txt").write_text("y")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_atomic_write_json_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": 1})
    assert path.read_text().strip().startswith("{")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def test_run_cli_user_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def main(argv: list[str] | None) -> int:
        raise UserError("missing thing; do this")

    with pytest.raises(SystemExit) as exc:
        run_cli(main, [])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: missing thing; do this\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
