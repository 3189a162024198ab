"""Entry of the shell wrappers: `launch.py MODULE ARGS...` stops cleanly on Ctrl-C, SIGTERM or SIGHUP even
during the first seconds of importing MODULE (torch, mediapipe), then runs MODULE.main through run_cli."""

from __future__ import annotations

import importlib
import sys

from utils.cli import exit_interrupted, install_signal_handlers, run_cli


def launch(argv: list[str]) -> None:
    """Import the module argv[0] with the signal handlers in place, then run its main() on argv[1:]."""
    install_signal_handlers()
    name = argv[0]
    sys.argv = [name, *argv[1:]]
    try:
        module = importlib.import_module(name)
    except KeyboardInterrupt as err:
        exit_interrupted(err)
    run_cli(module.main)


if __name__ == "__main__":
    launch(sys.argv[1:])
