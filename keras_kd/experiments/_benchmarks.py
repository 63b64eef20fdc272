"""What the benchmark scripts under `benchmarks/` share: their command line and
the copy of a finished run's table into `benchmarks/results/<name>.md`.

A benchmark is an experiment (`keras_kd.experiments.<name>.main`) run with a
recorded configuration. `run_benchmark` is its whole command line: `--quick`
runs the experiment's quick mode and the script's own check of the result;
otherwise the full configuration runs, resumable in its run folder, and its
`results.md` is copied, headed by the command, date and duration, to the
results file. The scripts keep only their configuration and their check.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from keras_kd import files


def run_benchmark(
    argv: Sequence[str] | None,
    *,
    name: str,
    experiment_main: Callable[[list[str]], int],
    full: Sequence[str],
    quick_check: Callable[[Path], int],
    script: str,
    doc: str,
    data_dir: bool = False,
    environment: str = "",
) -> int:
    """Runs a benchmark script's command line; returns the exit status.

    Options before `--` are the benchmark's (`--quick`, `--out`, and with
    `data_dir` `--data-dir`); those after it go to the experiment and win over
    `full`.

    The benchmark's files, under the repository root (the script's folder's
    parent): the run folder `benchmarks/runs/<name>/` (`--out` overrides it),
    `benchmarks/runs/<name>-quick/` for `--quick`, and the results
    `benchmarks/results/<name>.md`.

    Args:
        argv: The script's arguments (default: `sys.argv[1:]`).
        name: The benchmark's name in its file names, e.g. `"mnist"`.
        experiment_main: The experiment's `main(argv) -> int`.
        full: The experiment options of the full configuration.
        quick_check: Judges a finished quick run from its run folder; returns
            the exit status (1 when the check fails, after printing why).
        script: The script's file (its `__file__`).
        doc: The script's docstring; its first paragraph is the `--help`
            description.
        data_dir: Offer `--data-dir`, passed on to the experiment.
        environment: Shown before the command in `results`, e.g.
            `"KERAS_KD_DATA_DIR=../shared/data "`.

    Returns:
        The experiment's exit status when it fails, else the quick check's
        (with `--quick`) or 0; argparse exits 2 for a bad benchmark option.

    Example:

    ```python
    run_benchmark(["--quick"], name="mnist", experiment_main=mnist.main, ...)
    ```
    """
    script_path = Path(script).resolve()
    root = script_path.parent.parent
    out = root / "benchmarks" / "runs" / name
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, extra = argv, []
    if "--" in argv:
        ours, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick mode and check")
    parser.add_argument("--out", default=None, help=f"run folder (default {out})")
    if data_dir:
        parser.add_argument(
            "--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR"
        )
    args = parser.parse_args(ours)
    if getattr(args, "data_dir", None):
        extra = ["--data-dir", args.data_dir, *extra]
    if args.quick:
        folder = Path(args.out or out.with_name(f"{name}-quick"))
        status = experiment_main(["--quick", "--out", str(folder), *extra])
        return status or quick_check(folder)
    command = f"python {script_path.relative_to(root)} " + shlex.join(argv)
    folder = Path(args.out or out)
    started = time.time()
    status = experiment_main([*full, "--out", str(folder), *extra])
    if status:
        return status
    results = root / "benchmarks" / "results" / f"{name}.md"
    _write_results(results, folder, environment + command.strip(), started)
    return 0


def _write_results(results: Path, folder: Path, command: str, started: float) -> None:
    """Copies `folder/results.md` to `results` under its heading, with the
    command, today's date and the minutes since `started`."""
    minutes = (time.time() - started) / 60
    heading, table = (folder / "results.md").read_text().split("\n", 1)
    files.atomic_write_text(
        results,
        f"{heading}\n\n"
        f"Command: `{command}`  \n"
        f"Finished: {datetime.date.today().isoformat()}, {minutes:.0f} min for this "
        "invocation (models finished by an earlier invocation are reused, not "
        "retrained)\n\n" + table.lstrip("\n"),
    )
    print(f"wrote {results}")
