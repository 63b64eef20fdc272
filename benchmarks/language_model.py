"""Benchmark: token-level distillation of a causal Transformer LM on the stdlib source.

Runs `keras_kd.experiments.language_model` (`keras-kd language-model`) with the
configuration `FULL` in the run folder `--out` (default
`benchmarks/runs/language_model/`), then writes the table with the command,
date and duration to `benchmarks/results/language_model.md`: the teacher
(4 blocks, width 256), the student (2 blocks, width 128) from scratch and
distilled (2 seeds each), their held-out perplexity and training tokens per
second. Every model is backed up after each epoch: rerun the same command
after an interruption to resume; a folder made with other settings (or from
another Python's library) is refused. Options after `--` go to the experiment
(they win over `FULL`), e.g. `-- --seeds 0,1,2`.

Cost (an estimate; the full run was not timed end to end): `FULL` uses 4 MB
of source, about 3.3 MB of training text or 1.1 M training tokens per epoch at
2,048 ids. One epoch of each model over a 400 kB slice (86 k tokens, tracing
included), on 2 cores shared with other jobs (load average 9.5), 2026-11-26:
teacher 900 tokens/s, student from scratch 3,300, distilled student 940 (it
runs the teacher's forward pass on every batch). At those rates `FULL` (teacher
4 epochs, 4 students 3 epochs) takes about 3.9 hours; on 2 idle cores, assuming
the 3-4x speed-up we expect but did not measure, about 60-80 minutes.

`--quick` runs the experiment's quick mode and checks that each model's
held-out perplexity is finite and below the vocabulary size.

Usage:

    nohup nice -n 10 python benchmarks/language_model.py \\
        > benchmarks/runs/language_model.log 2>&1 &
    python benchmarks/language_model.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import sys
import time
from pathlib import Path

from keras_kd import files
from keras_kd.experiments import language_model

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs" / "language_model"
RESULTS = ROOT / "benchmarks" / "results" / "language_model.md"

FULL = [
    "--max-bytes", "4000000",
    "--vocab-size", "2048",
    "--sequence-length", "128",
    "--batch-size", "32",
    "--teacher-layers", "4", "--teacher-width", "256", "--teacher-heads", "4",
    "--teacher-epochs", "4",
    "--student-layers", "2", "--student-width", "128", "--student-heads", "4",
    "--student-epochs", "3",
    "--temperature", "2",
    "--soft-weight", "0.5",
    "--seeds", "0,1",
    "--verbose", "2",
]  # fmt: skip


def run_quick(out: Path, extra: list[str]) -> int:
    """Quick mode; exit status 1 when a perplexity is not finite or not below the vocabulary."""
    status = language_model.main(["--quick", "--out", str(out), *extra])
    if status:
        return status
    payload = json.loads((out / "results.json").read_text())
    vocab = payload["settings"]["vocab_size"]
    for row in payload["rows"]:
        value = float(row["test perplexity"].split(" ")[0])
        print(f"{row['model']}: test perplexity {value:.2f}")
        if not math.isfinite(value) or not 1.0 < value < vocab:
            print(f"perplexity {value} is outside (1, {vocab})")
            return 1
    return 0


def run_full(out: Path, extra: list[str], command: str) -> int:
    """The full configuration; writes `benchmarks/results/language_model.md` at the end."""
    started = time.time()
    status = language_model.main([*FULL, "--out", str(out), *extra])
    if status:
        return status
    minutes = (time.time() - started) / 60
    heading, table = (out / "results.md").read_text().split("\n", 1)
    files.atomic_write_text(
        RESULTS,
        f"{heading}\n\n"
        f"Command: `{command}`  \n"
        f"Finished: {datetime.date.today().isoformat()}, {minutes:.0f} min for this "
        "invocation (models finished by an earlier invocation are reused, not "
        "retrained)\n\n" + table.lstrip("\n"),
    )
    print(f"wrote {RESULTS}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, extra = argv, []
    if "--" in argv:
        ours, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick mode and check")
    parser.add_argument("--out", default=None, help=f"run folder (default {RUNS})")
    args = parser.parse_args(ours)
    if args.quick:
        return run_quick(Path(args.out or RUNS.with_name("language_model-quick")), extra)
    command = "python benchmarks/language_model.py " + shlex.join(argv)
    return run_full(Path(args.out or RUNS), extra, command.strip())


if __name__ == "__main__":
    sys.exit(main())
