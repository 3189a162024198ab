"""The one output-folder policy of every script: where an output may go, when an existing one may be replaced,
and an exclusive claim on the output name for the length of a run."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from utils.cli import UserError


@dataclass(frozen=True)
class OutputKind:
    """What a script writes: its name in messages, the flag naming it and the files that mark it as ours."""

    kind: str  # "dataset", "model", "results"
    flag: str  # "OUT_DIR", "--model_path", "--output_dir"
    markers: tuple[str, ...] = ()  # a folder holding one of these was written by the tool; () = any folder
    replace_advice: str = "pass --force to overwrite it"


DATASET = OutputKind("dataset", "OUT_DIR", ("preprocess.json",))
MODEL = OutputKind(
    "model", "--model_path", ("cfg_args", "metrics.jsonl"), "pass --resume to continue or --force"
)
RESULTS = OutputKind("results", "--output_dir", ("summary.json",))
ANY_FOLDER = OutputKind("output", "the output")


def check_separate(output: Path, inputs: Iterable[Path | None], kind: OutputKind = ANY_FOLDER) -> None:
    """Raise UserError if `output` equals, contains or lies inside any of `inputs` (None entries skipped)."""
    out = Path(output).resolve()
    for given in inputs:
        if given is None:
            continue
        inp = Path(given).resolve()
        if out == inp:
            relation = "is"
        elif inp.is_relative_to(out):
            relation = "contains"
        elif inp.is_dir() and out.is_relative_to(inp):
            relation = "lies inside"
        else:
            continue
        raise UserError(
            f"{kind.flag} '{output}' {relation} the input '{given}'; "
            "choose an output folder outside every input"
        )


def _blocking_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a folder, else None."""
    for parent in Path(path).absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def holds_marker(path: Path, kind: OutputKind) -> bool:
    """True if folder `path` holds one of the kind's marker files (any folder when it has none)."""
    return not kind.markers or any((Path(path) / m).exists() for m in kind.markers)


def check_output(
    output: Path,
    force: bool,
    kind: OutputKind = ANY_FOLDER,
    inputs: Iterable[Path | None] = (),
    file_advice: str | None = None,
) -> bool:
    """Apply the policy before any work; return True if `output` holds an earlier result of this tool.

    UserError when `output` overlaps an input, cannot be created (a file on its path), is a file, is a
    non-empty folder this tool did not write, or is an earlier result and `force` is False."""
    output = Path(output)
    check_separate(output, inputs, kind)
    blocker = _blocking_ancestor(output)
    if blocker is not None:
        raise UserError(
            f"'{blocker}' is a file, so '{output}' cannot be created in it; choose another {kind.flag}"
        )
    if not output.exists() and not output.is_symlink():
        return False
    if not output.is_dir():
        advice = file_advice or f"choose a new folder name for {kind.flag}"
        raise UserError(f"'{output}' is a file, not a {kind.kind} folder; {advice}")
    if not any(output.iterdir()):
        return False
    if not holds_marker(output, kind):
        raise UserError(
            f"'{output}' is not empty and holds no {kind.markers[0]}, so it is not a {kind.kind} folder this "
            f"tool wrote; choose another {kind.flag}"
        )
    if not force:
        raise UserError(f"output '{output}' already exists; {kind.replace_advice}")
    return True


def _make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of `path`; return the ones created (outermost first)."""
    created: list[Path] = []
    for folder in reversed(Path(path).absolute().parents):
        if folder.is_dir():
            continue
        try:
            folder.mkdir()
        except FileExistsError:
            continue  # another run made it meanwhile: it is theirs to remove, not ours
        except OSError as err:
            _remove_empty(created)
            raise UserError(f"cannot create '{path}': {err.strerror}; choose a writable folder") from err
        created.append(folder)
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove the given folders, innermost first, where they are empty."""
    for folder in reversed(folders):
        with suppress(OSError):
            folder.rmdir()


def temporaries(output: Path) -> list[Path]:
    """The hidden temporary and replaced copies of `output` left next to it (.NAME.tmp-*, .NAME.old-*)."""
    output = Path(output)
    if not output.parent.is_dir():
        return []
    prefixes = (f".{output.name}.tmp-", f".{output.name}.old-")
    return sorted(p for p in output.parent.iterdir() if p.name.startswith(prefixes))


def sweep_temporaries(output: Path) -> None:
    """Delete the temporaries of `output` that killed runs left (only while holding its claim)."""
    for path in temporaries(output):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _lock(lock_path: Path, output: Path) -> int:
    """Open and exclusively lock `lock_path` (the file still at that path); return its descriptor."""
    for _ in range(5):
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        except FileNotFoundError:
            _make_parents(output)  # a concurrent run removed the empty parent it had made: make it again
            continue
        except OSError as err:
            raise UserError(
                f"cannot write next to '{output}': {err.strerror}; choose a writable folder"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"another run is writing '{output}' now; wait for it to finish or choose another folder"
                ) from err
            raise UserError(f"cannot lock '{lock_path}': {err.strerror}") from err
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed the file meanwhile: lock the new one
    raise UserError(f"cannot lock '{lock_path}'; try again")


@contextmanager
def claim_output(output: Path) -> Iterator[None]:
    """Hold an exclusive claim on the name `output` for the with-block (a locked hidden `.NAME.lock` next to
    it), sweeping the temporaries of killed runs; UserError while another run holds it. Parent folders
    created here are removed again if `output` does not exist at the end."""
    output = Path(output)
    created = _make_parents(output)
    lock_path = output.parent / f".{output.name}.lock"
    try:
        fd = _lock(lock_path, output)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        sweep_temporaries(output)
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)
        if not output.exists():
            _remove_empty(created)
