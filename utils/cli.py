"""Command-line helpers shared by the entry scripts: one-line user errors, signals and a main() wrapper."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that the same cleanup (and train.sh's checkpoint) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    """Signal handler: raise Terminated(signum) in the main thread."""
    raise Terminated(signum)


def install_signal_handlers() -> dict[int, Any]:
    """Make SIGTERM and SIGHUP raise Terminated; return the previous handlers (restore_signal_handlers)."""
    previous = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, _raise_terminated)
    return previous


def restore_signal_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers that install_signal_handlers replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def exit_interrupted(err: KeyboardInterrupt) -> NoReturn:
    """Print why the run stopped and exit 128 + the signal number (130 for Ctrl-C)."""
    signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
    name = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    print(f"{name}; nothing half-written was left", file=sys.stderr)
    sys.exit(128 + int(signum))


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)` and exit: UserError -> one line on stderr and exit 2, Ctrl-C -> exit 130,
    SIGTERM/SIGHUP -> exit 143/129 (both raised as Terminated, a KeyboardInterrupt)."""
    previous = install_signal_handlers()
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as err:
        exit_interrupted(err)
    finally:
        restore_signal_handlers(previous)
    sys.exit(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one-line UserErrors (exit 2 through run_cli) and that takes no
    abbreviated flags (a truncated flag is an error, not a guess)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise the argparse error `message` as a UserError that points to --help."""
        raise UserError(f"{message}; see --help")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Add the required --model_path (a train.sh output) and --reference_path (its preprocessed dataset) that
    every tool using a trained model takes, under the same names and help."""
    p.add_argument("--model_path", required=True, type=Path, help="trained model folder (output of train.sh)")
    p.add_argument(
        "--reference_path",
        required=True,
        type=Path,
        help="preprocessed dataset folder of the subject (backgrounds, torso, training cameras and audio)",
    )
