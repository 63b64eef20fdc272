"""Full runs of the acoustic experiment (paper sections 4 and 6) on FSDD, resumable.

Runs `examples/acoustic/distill_acoustic.py` with the settings recorded in
`benchmarks/results/acoustic.md`, once per split, writing features, models,
teacher caches, `results.json`, `summary.json` and `tables.md` under
`--out/<split>` (default `benchmarks/runs/acoustic-val/`). Every model is saved
when it finishes, so an interrupted run picks up where it stopped when started
again. A validation set carved from the training recordings (takes 5-9 of every
speaker on the standard split, the training speaker `george` on the speaker split)
chooses the temperatures; every distilled and fraction model is trained from 2
seeds and the ratios use the means.

`--quick` runs a tiny version (takes 0-7, 2 members, 1 epoch, 32 hidden units) in
well under a minute; the tests use it.

Example (full run, in the background, on a shared machine):

    KERAS_KD_DATA_DIR=../shared/data nohup nice -n 10 python benchmarks/acoustic_paper.py \\
        > benchmarks/runs/acoustic-val.log 2>&1 &
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "acoustic" / "distill_acoustic.py"

# Settings of the recorded full run: small nets and an 11-frame context keep 24
# models on one split within about 20 minutes of a shared 2-core CPU.
FULL = {
    "hidden": (256, 256),
    "left": 5,
    "right": 5,
    "epochs": 6,
    "members": 10,
    "temperatures": (1.0, 2.0, 5.0, 10.0),
    "alpha": 0.5,
    "fraction": 0.03,
    "fraction_epochs": 100,
    "fraction_temperatures": (2.0, 5.0),
    "fraction_alpha": 1.0,
    "repeats": 2,
    "verbose": 2,
}
QUICK = {
    "hidden": (32,),
    "left": 2,
    "right": 2,
    "epochs": 1,
    "members": 2,
    "temperatures": (2.0,),
    "fraction": 0.1,
    "fraction_epochs": 3,
    "max_takes": 8,
    "verbose": 0,
}


def load_example():
    """Imports the example script as a module (it is not part of the package).

    Returns:
        The module `distill_acoustic`.

    Raises:
        FileNotFoundError: when the example is missing (not a source checkout).
    """
    if not EXAMPLE.is_file():
        raise FileNotFoundError(f"{EXAMPLE} does not exist; run from a source checkout.")
    spec = importlib.util.spec_from_file_location("distill_acoustic", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run(
    splits=("speaker", "standard"),
    *,
    quick: bool = False,
    out: str | os.PathLike = ROOT / "benchmarks" / "runs" / "acoustic-val",
    data_dir: str | None = None,
) -> dict:
    """Runs the experiment on each split; returns `{split: summary}`.

    Args:
        splits: FSDD splits to run, in order.
        quick: Use the tiny `QUICK` settings instead of `FULL`.
        out: Output root; each split writes to `out/<split>`.
        data_dir: Data root (default `KERAS_KD_DATA_DIR`).

    Returns:
        The example's summary per split, with `seconds` added.

    Raises:
        FileNotFoundError: when the data or the example is missing.

    Example:

    >>> run(("speaker",), quick=True, out="/tmp/acoustic")  # doctest: +SKIP
    """
    example = load_example()
    options = QUICK if quick else FULL
    summaries = {}
    for split in splits:
        settings = dataclasses.replace(
            example.Settings(), data_dir=data_dir, out=str(Path(out) / split),
            split=split, **options,
        )
        start = time.time()
        summary = example.run(settings)
        summary["seconds"] = round(time.time() - start, 1)
        summaries[split] = summary
        print(f"split {split}: {summary['seconds']} s")
    return summaries


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (< 1 minute)")
    parser.add_argument("--splits", default="speaker,standard", help="comma-separated FSDD splits")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "acoustic-val"))
    parser.add_argument("--data-dir", default=None, help="data root (default: $KERAS_KD_DATA_DIR)")
    args = parser.parse_args(argv)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    run(splits, quick=args.quick, out=args.out, data_dir=args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
