"""Atomic outputs: write into a temporary sibling, rename into place only when complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from utils.cli import UserError
from utils.output_policy import ANY_FOLDER, OutputKind, check_output, claim_output


def _umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path: Path, force: bool, kind: OutputKind = ANY_FOLDER) -> None:
    """Raise UserError if `path` may not be written (see utils.output_policy.check_output)."""
    check_output(path, force, kind)


@contextmanager
def atomic_dir(
    final: Path,
    force: bool = False,
    kind: OutputKind = ANY_FOLDER,
    inputs: Iterable[Path | None] = (),
    file_advice: str | None = None,
) -> Iterator[Path]:
    """Yield a temporary directory next to `final` while holding the claim on its name; on success replace
    `final` with it, else delete it. The output policy is checked before and again under the claim."""
    final = Path(final)
    check_output(final, force, kind, inputs, file_advice)
    with claim_output(final):
        check_output(final, force, kind, inputs, file_advice)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        except OSError as err:
            raise UserError(
                f"cannot write in '{final.parent}': {err.strerror}; choose a writable folder"
            ) from err
        tmp.chmod(0o777 & ~_umask())
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _replace_dir(final, tmp)


def _replace_dir(final: Path, tmp: Path) -> None:
    """Rename folder `tmp` to `final`, moving an earlier folder `final` aside and deleting it afterwards."""
    if not final.exists():
        tmp.rename(final)
        return
    if not final.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"'{final}' became a file during the run; it was left as it is")
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())
