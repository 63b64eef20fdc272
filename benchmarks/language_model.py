"""Benchmark: token-level distillation of a causal Transformer LM on the stdlib source.

Runs `keras_kd.experiments.language_model` (`keras-kd language-model`) with the
configuration `FULL` in the run folder `--out` (default
`benchmarks/runs/language_model/`), then writes the table with the command,
date and duration to `benchmarks/results/language_model.md`: the teacher
(4 blocks, width 256), the student (2 blocks, width 128) from scratch,
distilled online and distilled from the teacher's top-64 cache (2 seeds
each), their held-out perplexity and training tokens per second, and the
cache's build time. Every model is backed up after each epoch: rerun the same command
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

import json
import math
import sys
from pathlib import Path

from keras_kd.experiments import language_model
from keras_kd.experiments._benchmarks import run_benchmark

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
    "--top-k", "64",
    "--seeds", "0,1",
    "--verbose", "2",
]  # fmt: skip


def check_quick(out: Path) -> int:
    """Exit status 1 when a quick run's perplexity is not finite or not below
    the vocabulary size."""
    payload = json.loads((out / "results.json").read_text())
    vocab = payload["settings"]["vocab_size"]
    for row in payload["rows"]:
        value = float(row["test perplexity"].split(" ")[0])
        print(f"{row['model']}: test perplexity {value:.2f}")
        if not math.isfinite(value) or not 1.0 < value < vocab:
            print(f"perplexity {value} is outside (1, {vocab})")
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return run_benchmark(
        argv,
        name="language_model",
        experiment_main=language_model.main,
        full=FULL,
        quick_check=check_quick,
        script=__file__,
        doc=__doc__,
    )


if __name__ == "__main__":
    sys.exit(main())
