"""Benchmark: the paper's specialists (section 5, Table 4) on two-digit MNIST.

Runs `keras-kd specialists` (`keras_kd.experiments.specialists`) once per variant
into `benchmarks/runs/specialists/<variant>/` (run folders: rerunning reuses every
finished model) and collects their results in `benchmarks/results/specialists.md`.
`--quick` runs the experiment's quick mode into `benchmarks/runs/specialists-quick/`
and writes the collected results there instead.

Run it in the background, from the repository root:

    KERAS_KD_DATA_DIR=../shared/data nice -n 10 \\
        .venv/bin/python benchmarks/specialists_paper.py > specialists.log 2>&1 &
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from keras_kd.experiments import specialists
from keras_kd.files import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "specialists.md"

# The experiment's defaults (hard labels only, as in section 5); the same with the
# generalist's soft targets as a regulariser (section 6.1); the paper's literal
# clustering on raw covariance columns; and three pooled clusterings without pairs,
# so that the number of specialists covering a class varies.
VARIANTS = {
    "hard_targets": [],
    "soft_targets": ["--soft-weight", "0.5"],
    "raw_covariance": ["--raw-covariance"],
    "three_clusterings": ["--num-subsets", "10,20,30", "--min-subset-size", "3"],
}


def section(name: str, results_md: str) -> str:
    """One variant's `results.md` as a section: its title becomes `## name`."""
    lines = results_md.splitlines()
    body = [("#" + line if line.startswith("## ") else line) for line in lines[1:]]
    return "\n".join([f"## {name}", *body]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen variants and writes the collected results.

    Args:
        argv: `--data-dir`, `--variants` (default: all, in order), `--quick`;
            any other option (e.g. `--repeats 3`) is passed to every variant.

    Returns:
        0 on success, else the failing variant's exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS)
    )
    parser.add_argument(
        "--quick", action="store_true", help="each variant's quick mode"
    )
    args, passed_on = parser.parse_known_args(argv)
    folder = "specialists-quick" if args.quick else "specialists"
    runs = ROOT / "benchmarks" / "runs" / folder
    results = runs / "results.md" if args.quick else RESULTS
    sections = [
        "# Specialists on two-digit MNIST (paper section 5, Table 4)\n",
        "Produced by `benchmarks/specialists_paper.py`; each variant's command is in "
        "its section.\n",
    ]
    for name in args.variants:
        options = ["--out", str(runs / name), *VARIANTS[name], *passed_on]
        options += ["--data-dir", args.data_dir] if args.data_dir else []
        options += ["--quick"] if args.quick else []
        status = specialists.main(options)
        if status:
            return status
        sections.append(section(name, (runs / name / "results.md").read_text()))
        atomic_write_text(results, "\n".join(sections))
    print(f"Wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
