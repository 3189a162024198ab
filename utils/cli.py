"""Command-line helpers shared by the entry scripts: one-line user errors and a main() wrapper."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """An error caused by the user's input; printed as one line, exit code 2."""


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)` and exit: UserError -> one line on stderr and exit 2, Ctrl-C -> exit 130."""
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse parser whose usage errors are one-line UserErrors (exit 2 through run_cli)."""

    def error(self, message: str) -> NoReturn:
        """Raise the argparse error `message` as a UserError that points to --help."""
        raise UserError(f"{message}; see --help")
