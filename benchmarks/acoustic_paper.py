"""Full runs of the acoustic experiment (paper sections 4 and 6) on FSDD, resumable.

Runs `keras_kd.experiments.acoustic` (`keras-kd acoustic`) once per split with
the settings recorded in `benchmarks/results/acoustic.md`, each split in its own
run folder `--out/<split>` (default `benchmarks/runs/acoustic/`). Every model is
saved when it finishes, so an interrupted run picks up where it stopped when
started again; a folder made with other settings is refused.

`--quick` runs the experiment's quick mode on each split instead (well under a
minute per split).

Example (full run, in the background, on a shared machine):

    KERAS_KD_DATA_DIR=../shared/data nohup nice -n 10 python benchmarks/acoustic_paper.py \\
        > benchmarks/runs/acoustic.log 2>&1 &
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from keras_kd.experiments import acoustic

ROOT = Path(__file__).resolve().parent.parent

# The recorded full run: small nets and an 11-frame context keep 24 models on one
# split within about 20 minutes of a shared 2-core CPU; 2 seeds of every distilled
# and fraction model, and T = 2 or 5 for the soft targets on 3% of the frames.
FULL = [
    "--hidden", "256,256",
    "--left", "5",
    "--right", "5",
    "--epochs", "6",
    "--members", "10",
    "--temperatures", "1,2,5,10",
    "--soft-weight", "0.5",
    "--fraction", "0.03",
    "--fraction-epochs", "100",
    "--fraction-temperatures", "2,5",
    "--fraction-soft-weight", "1",
    "--repeats", "2",
    "--verbose", "2",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs every split in turn; returns the first non-zero exit status, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="quick mode per split")
    parser.add_argument("--splits", default="speaker,standard", help="comma-separated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "acoustic"))
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    args = parser.parse_args(argv)
    for split in (s.strip() for s in args.splits.split(",") if s.strip()):
        options = ["--quick"] if args.quick else FULL
        options += ["--split", split, "--out", str(Path(args.out) / split)]
        if args.data_dir:
            options += ["--data-dir", args.data_dir]
        start = time.time()
        status = acoustic.main(options)
        print(f"split {split}: {time.time() - start:.1f} s, exit status {status}")
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
