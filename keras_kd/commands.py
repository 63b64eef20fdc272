"""What every `keras-kd` subcommand shares: one-line errors and argument types.

A user's mistake (a bad option, a missing file, invalid data, a run folder with
other settings) is printed as one line, `keras-kd COMMAND: error: ...`, and the
command exits with status 2, never with a traceback. The library raises
`ValueError`, `TypeError`, `FileNotFoundError` or `CommandError` for such mistakes;
`run_reporting_errors` turns them into that line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError)


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_reporting_errors(command: str, run: Callable[[], int | None]) -> int:
    """Runs a subcommand; a user error becomes one line on stderr and exit 2.

    Args:
        command: The subcommand's name, e.g. `"mnist"`.
        run: The subcommand's body; returns its exit status (None means 0).

    Returns:
        The exit status.
    """
    from keras_kd.runs import RunFolderBusyError

    try:
        return int(run() or 0)
    except (CommandError, RunFolderBusyError, *USER_ERRORS) as error:
        message = " ".join(str(error).split())
        print(f"keras-kd {command}: error: {message}", file=sys.stderr)
        return 2


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` that is > 0."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__} > 0, got {text!r}"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__} > 0, got {text!r}"
            )
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """An argparse type: comma-separated numbers, e.g. `1,2.5,4`."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 1,2,5,10, got {text!r}"
        )
    return values


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers, e.g. `800,800`."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 800,800, got {text!r}"
        )
    return values
