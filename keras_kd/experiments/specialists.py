"""Specialist models on two-digit MNIST (Hinton, Vinyals and Dean 2015, section 5).

The body of `keras-kd specialists`, on two-digit MNIST
(`keras_kd.datasets.two_digit_mnist`: 100 classes, two digits side by side). A
deliberately small generalist confuses classes that share a digit or have
look-alike digits. For each seed the run

1. trains the generalist (`keras_kd.models.mlp`, one hidden layer) on the
   training pairs minus a held-out part,
2. clusters the classes it confuses (`find_confusable_subsets`: K-means on the
   covariance of its predicted probabilities on the held-out part),
3. trains one specialist per cluster (`train_specialist`: the generalist's
   weights, a head over the cluster plus a dustbin, half of each batch from the
   cluster, optional soft targets, dustbin corrected for the oversampling),
4. combines generalist and specialists per test image (`SpecialistEnsemble`,
   paper eq. 5) and reports both accuracies and the paper's Table 4.

Every model is a run of a `keras_kd.runs.RunFolder` under `--out`, fingerprinted
with every setting that shaped it (a specialist's include its generalist's and
the clustering's): a rerun reuses finished models, and a rerun with another
setting is refused with a message naming it. Each model trains in seconds to a
minute, so an interrupted run resumes at the first unfinished model. The
defaults are keras-kd 0.1.0's recipe and give its figures exactly.

Example:

    KERAS_KD_DATA_DIR=../shared/data keras-kd specialists --quick --out runs/spec
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from keras_kd import specialists as sp
from keras_kd.commands import (
    CommandParser,
    add_renamed,
    fraction,
    int_list,
    positive,
    run_reporting_errors,
)
from keras_kd.datasets.two_digit_mnist import (
    CLASS_NAMES,
    IMAGE_SHAPE,
    NUM_CLASSES,
    load_two_digit_mnist,
)
from keras_kd.evaluation import accuracy, predict_logits
from keras_kd.models import mlp
from keras_kd.reports import markdown_table
from keras_kd.runs import RunFolder, seed_summary

# --quick: about a minute on two shared cores; explicit flags still win.
QUICK = {
    "train_pairs": 12000,
    "holdout": 2000,
    "test_pairs": 2000,
    "generalist_epochs": 3,
    "specialist_examples": 2000,
    "specialist_epochs": 1,
}

# Share of each specialist's training mix drawn from its subset (the paper's 1/2).
SUBSET_FRACTION = 0.5

# The options that shape each stage's model, in order (see `stage_settings`).
STAGE_OPTIONS = {
    "generalist": (
        "train_pairs",
        "holdout",
        "hidden_units",
        "generalist_epochs",
        "batch_size",
    ),
    "clusters": ("num_subsets", "min_subset_size", "raw_covariance"),
    "specialist": (
        "specialist_epochs",
        "specialist_examples",
        "soft_weight",
        "temperature",
    ),
    "ensemble": ("test_pairs", "top_n", "solver_steps"),
}

# Column order of the paper's Table 4 (records come back from JSON with sorted keys).
COVERAGE_COLUMNS = (
    "specialists covering",
    "examples",
    "generalist_correct",
    "combined_correct",
    "correct_change",
    "relative_change",
)


@dataclass(frozen=True)
class TwoDigitData:
    """The pairs of one seed: training, held-out (for clustering) and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(args: argparse.Namespace, seed: int) -> TwoDigitData:
    """The pairs of `seed`; the first `args.holdout` training pairs are held out."""
    (x_all, y_all), (x_test, y_test) = load_two_digit_mnist(
        args.data_dir,
        train_pairs=args.train_pairs,
        test_pairs=args.test_pairs,
        seed=seed,
    )
    return TwoDigitData(
        x_train=x_all[args.holdout :],
        y_train=y_all[args.holdout :],
        x_held=x_all[: args.holdout],
        x_test=x_test,
        y_test=y_test,
    )


def stage_settings(args: argparse.Namespace, seed: int, stage: str) -> dict:
    """Every setting that shapes the model of `stage` for `seed`.

    A stage's settings are its own options (`STAGE_OPTIONS`) and those of every
    stage before it: a specialist is fingerprinted with its generalist's and the
    clustering's settings, so none of them can change under it unnoticed.

    Example:

    >>> args = parse_args([])
    >>> sorted(stage_settings(args, 0, "generalist"))  # doctest: +NORMALIZE_WHITESPACE
    ['batch_size', 'data', 'generalist_epochs', 'hidden_units', 'holdout', 'seed',
     'train_pairs']
    """
    settings = {"data": "two-digit mnist", "seed": seed}
    for name, options in STAGE_OPTIONS.items():
        settings |= {option: getattr(args, option) for option in options}
        if name == stage:
            return settings
    raise ValueError(f"Unknown stage {stage!r}; expected one of {list(STAGE_OPTIONS)}.")


def train_generalist(args: argparse.Namespace, seed: int, data: TwoDigitData):
    """Trains the small generalist; returns `(model, record)`."""
    keras.utils.set_random_seed(seed)
    model = mlp(IMAGE_SHAPE, (args.hidden_units,), NUM_CLASSES, name="generalist")
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(f"Training the generalist ({args.generalist_epochs} epochs)")
    history = model.fit(
        data.x_train,
        data.y_train,
        batch_size=args.batch_size,
        epochs=args.generalist_epochs,
        verbose=args.verbose,
    )
    return model, {"history": _plain_history(history.history)}


def cluster_classes(
    args: argparse.Namespace, seed: int, generalist, data: TwoDigitData
) -> sp.ConfusableSubsets:
    """The confusable subsets from the generalist's predictions on held-out pairs."""
    held_logits = predict_logits(generalist, data.x_held, batch_size=1000)
    return sp.find_confusable_subsets(
        keras.ops.convert_to_numpy(keras.ops.softmax(held_logits)),
        list(args.num_subsets),
        seed=seed,
        min_size=args.min_subset_size,
        normalize=not args.raw_covariance,
    )


def train_one_specialist(
    args: argparse.Namespace,
    seed: int,
    index: int,
    subset: Sequence[int],
    generalist,
    train_logits: np.ndarray,
    data: TwoDigitData,
):
    """Trains specialist `index` over `subset`; returns `(model, info)`."""
    keras.utils.set_random_seed(seed + 1 + index)
    return sp.train_specialist(
        generalist,
        subset,
        data.x_train,
        data.y_train,
        generalist_logits=train_logits,
        num_examples=args.specialist_examples,
        epochs=args.specialist_epochs,
        batch_size=args.batch_size,
        subset_fraction=SUBSET_FRACTION,
        soft_weight=args.soft_weight,
        temperature=args.temperature,
        seed=seed + index,
        verbose=args.verbose,
    )


def evaluate(args, generalist, ensemble, clusters, infos, data: TwoDigitData) -> dict:
    """Test accuracies of the generalist and the combination, and Table 4."""
    generalist_logits = predict_logits(generalist, data.x_test, batch_size=1000)
    combined = predict_logits(ensemble, data.x_test, batch_size=500)  # probabilities
    membership = sp.membership_matrix(clusters.subsets, NUM_CLASSES)
    active = np.asarray(
        sp.active_specialists(generalist_logits, membership, args.top_n)
    )
    generalist_accuracy = accuracy(generalist_logits, data.y_test)
    combined_accuracy = accuracy(combined, data.y_test)
    return {
        "generalist_accuracy": generalist_accuracy,
        "combined_accuracy": combined_accuracy,
        "relative_gain": (combined_accuracy - generalist_accuracy)
        / generalist_accuracy,
        "num_specialists": len(clusters.subsets),
        "mean_active_specialists": float(active.sum(axis=1).mean()),
        "clusters": clusters.to_dict(),
        "specialists": [
            {k: v for k, v in info.items() if k != "history"}
            | {"final_accuracy_on_mix": info["history"]["accuracy"][-1]}
            for info in infos
        ],
        "coverage_table": sp.coverage_table(
            data.y_test,
            np.argmax(generalist_logits, -1),
            np.argmax(combined, -1),
            clusters,
        ),
    }


def run_seed(runs: RunFolder, args: argparse.Namespace, seed: int) -> dict:
    """Generalist, clusters, specialists and combination of one seed.

    Args:
        runs: The open run folder.
        args: The parsed options.
        seed: The seed (data pairing, initialisation, K-means, mixes).

    Returns:
        The evaluation record (see `evaluate`).

    Raises:
        keras_kd.runs.RunSettingsError: when a model of the folder was trained
            with other settings; raised before anything trains.
    """
    generalist_run = runs.model(
        f"generalist-s{seed}", stage_settings(args, seed, "generalist")
    )
    clusters_run = runs.model(
        f"clusters-s{seed}", stage_settings(args, seed, "clusters")
    )
    ensemble_run = runs.model(
        f"ensemble-top{args.top_n}-s{seed}", stage_settings(args, seed, "ensemble")
    )
    if ensemble_run.finished:
        return ensemble_run.record
    data = load_data(args, seed)
    generalist, _ = generalist_run.get_or_train(
        lambda _: train_generalist(args, seed, data)
    )
    if not clusters_run.finished:
        clusters = cluster_classes(args, seed, generalist, data)
        clusters_run.finish(None, clusters.to_dict())
    clusters = sp.ConfusableSubsets.from_dict(clusters_run.record)
    print(clusters.report(CLASS_NAMES))

    specialist_runs = [
        runs.model(
            f"specialist{m:02d}-s{seed}",
            stage_settings(args, seed, "specialist") | {"subset": list(subset)},
        )
        for m, subset in enumerate(clusters.subsets)
    ]
    train_logits = None
    specialists, infos = [], []
    for m, (run, subset) in enumerate(zip(specialist_runs, clusters.subsets)):
        if not run.finished:
            print(
                f"Specialist {m + 1}/{len(clusters.subsets)}: classes "
                f"{' '.join(CLASS_NAMES[c] for c in subset)}"
            )
            if train_logits is None:
                train_logits = predict_logits(generalist, data.x_train, batch_size=1000)
        specialist, info = run.get_or_train(
            lambda _, m=m, subset=subset, logits=train_logits: train_one_specialist(
                args, seed, m, subset, generalist, logits, data
            )
        )
        specialists.append(specialist)
        infos.append(info)

    ensemble = sp.SpecialistEnsemble(
        generalist, specialists, clusters, top_n=args.top_n, steps=args.solver_steps
    )
    ensemble_run.finish(
        ensemble, evaluate(args, generalist, ensemble, clusters, infos, data)
    )
    return ensemble_run.record


def summary_rows(records: dict[int, dict]) -> list[dict]:
    """One results row per seed, plus the mean over seeds when there are several."""
    rows = [
        {
            "seed": seed,
            "generalist accuracy": r["generalist_accuracy"],
            "with specialists (eq. 5)": r["combined_accuracy"],
            "relative change": r["relative_gain"],
            "specialists": r["num_specialists"],
            "active per image": r["mean_active_specialists"],
        }
        for seed, r in records.items()
    ]
    if len(rows) > 1:
        mean = {"seed": "mean (each seed)"}
        for column in list(rows[0])[1:]:
            mean[column] = seed_summary([row[column] for row in rows]).format(4)
        rows.append(mean)
    return rows


def results_notes(records: dict[int, dict], command: str, date: str) -> str:
    """The Markdown under the results table: command, Table 4 and subsets per seed."""
    lines = [
        f"- date: {date}",
        f"- command: `{command}`",
        "- relative change = (with specialists - generalist) / generalist; "
        "paper, on JFT: 25.0% -> 26.1% top-1 (+4.4% relative)",
        "",
    ]
    for seed, record in records.items():
        clusters = sp.ConfusableSubsets.from_dict(record["clusters"])
        lines += [
            f"## Seed {seed}",
            "",
            "Change in correct test answers by the number of specialists whose "
            "subset holds the correct class (the paper's Table 4; relative change = "
            "change / generalist correct in the group):",
            "",
            markdown_table(record["coverage_table"], COVERAGE_COLUMNS, digits=4),
            "Subsets (K-means on the covariance of the generalist's predictions):",
            "",
            "```",
            clusters.report(CLASS_NAMES),
            "```",
            "",
        ]
    return "\n".join(lines)


def run(args: argparse.Namespace, command: str = "keras-kd specialists") -> dict:
    """Runs the experiment and writes `results.md` / `results.json` in `args.out`.

    Args:
        args: Options from `parse_args`.
        command: The command line to record in the results.

    Returns:
        `{"command", "date", "settings", "seeds": {seed: record}, "rows"}`.

    Raises:
        ValueError: for inconsistent options (see `check_args`).
        keras_kd.runs.RunSettingsError: when `--out` holds models trained with
            other settings.
        FileNotFoundError: when MNIST is not found.
    """
    check_args(args)
    started = time.time()
    with RunFolder(args.out) as runs:
        seeds = range(args.seed, args.seed + args.repeats)
        records = {seed: run_seed(runs, args, seed) for seed in seeds}
        date = datetime.date.today().isoformat()
        rows = summary_rows(records)
        settings = {
            k: v
            for k, v in vars(args).items()
            if k not in ("out", "data_dir", "verbose")
        }
        results = {"command": command, "date": date, "settings": settings}
        runs.write_results(
            rows,
            title="Specialists on two-digit MNIST (paper section 5)",
            notes=results_notes(records, command, date),
            extra=results
            | {
                "seeds": {str(seed): record for seed, record in records.items()},
                "wall_seconds_this_call": time.time() - started,
            },
        )
        print((runs.root / "results.md").read_text())
    return results | {"seeds": records, "rows": rows}


def check_args(args: argparse.Namespace) -> None:
    """Raises `ValueError` for options that cannot go together."""
    if not 2 <= args.holdout < args.train_pairs:
        raise ValueError(
            f"--holdout {args.holdout} must be at least 2 and smaller than "
            f"--train-pairs {args.train_pairs} (the rest trains the generalist)."
        )
    too_many = [k for k in args.num_subsets if k > NUM_CLASSES]
    if too_many:
        raise ValueError(
            f"--num-subsets {too_many} exceeds the {NUM_CLASSES} classes; use K in "
            f"[1, {NUM_CLASSES}]."
        )
    if args.top_n > NUM_CLASSES:
        raise ValueError(f"--top-n {args.top_n} exceeds the {NUM_CLASSES} classes.")
    for option, value in (("--seed", args.seed), ("--solver-steps", args.solver_steps)):
        if value < 0:
            raise ValueError(f"{option} must be >= 0, got {value}.")


def _plain_history(history: dict) -> dict:
    return {k: [float(v) for v in values] for k, values in history.items()}


def build_parser() -> CommandParser:
    """The options of `keras-kd specialists` (defaults: the 0.1.0 benchmark recipe).

    Example:

    >>> build_parser().parse_args(["--soft-weight", "0.5"]).soft_weight
    0.5
    """
    parser = CommandParser(
        prog="keras-kd specialists",
        description=(
            "Specialist models on two-digit MNIST (Hinton et al. 2015, section 5): "
            "generalist, confusable subsets, specialists with a dustbin class, and "
            "their combination (eq. 5). Finished models in --out are reused; a "
            "rerun with other settings for the same --out is refused."
        ),
    )
    add = parser.add_argument
    add("--out", default="runs/specialists", help="run folder (default: %(default)s)")
    add("--data-dir", default=None, help="data root (default: $KERAS_KD_DATA_DIR)")
    add(
        "--quick",
        action="store_true",
        help="small run of about a minute: "
        + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    add(
        "--seed",
        type=int,
        default=0,
        help="seed of the pairs, the initialisation, K-means and the mixes",
    )
    add(
        "--repeats",
        type=positive(int),
        default=1,
        help="full runs with seeds --seed, --seed + 1, ...; results show the mean",
    )
    add("--train-pairs", type=positive(int), default=60000, help="training images")
    add(
        "--holdout",
        type=positive(int),
        default=6000,
        help="training images held out to find the clusters",
    )
    add("--test-pairs", type=positive(int), default=10000, help="test images")
    add("--hidden-units", type=positive(int), default=32, help="generalist width")
    add("--generalist-epochs", type=positive(int), default=2)
    add("--batch-size", type=positive(int), default=128)
    add(
        "--num-subsets",
        type=int_list,
        default=[10, 20],
        help="K of K-means; several (comma-separated) clusterings are pooled",
    )
    add("--min-subset-size", type=positive(int), default=2)
    add(
        "--raw-covariance",
        action="store_true",
        help="K-means on raw covariance columns (default: unit length)",
    )
    add("--specialist-epochs", type=positive(int), default=2)
    add(
        "--specialist-examples",
        type=positive(int),
        default=20000,
        help="examples per specialist epoch (half from its subset)",
    )
    add(
        "--soft-weight",
        type=fraction,
        default=0.0,
        help="weight of the generalist's folded soft targets (0: hard labels only)",
    )
    add(
        "--temperature",
        type=positive(float),
        default=2.0,
        help="temperature of the soft targets",
    )
    add(
        "--top-n",
        type=positive(int),
        default=2,
        help="generalist's top classes that select specialists",
    )
    add(
        "--solver-steps",
        type=int,
        default=50,
        help="steps of the eq. 5 solver",
    )
    add(
        "--verbose",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="Keras progress: 0 silent, 1 bar, 2 a line per epoch",
    )
    for old, new in (
        ("--soft-target-weight", "--soft-weight"),
        ("--output-dir", "--out"),
    ):
        add_renamed(parser, old, new)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses `argv`; `--quick` changes the defaults (explicit flags still win).

    A leading `--` (as older `keras-kd specialists -- ...` commands passed it) is
    ignored.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `keras-kd specialists`; returns the exit status.

    Example:

    ```python
    main(["--quick", "--out", "runs/specialists-quick"])  # 0, after about a minute
    ```

    A user error is one line (on stderr, shown here) and exit status 2:

    >>> import contextlib, sys, tempfile
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["--data-dir", "no-such-folder", "--out", tempfile.mkdtemp()])
    keras-kd specialists: error: The data folder 'no-such-folder' (from --data-dir) does not exist. ...
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = f"keras-kd specialists {shlex.join(argv)}".strip()

    def body() -> int:
        run(parse_args(argv), command=command)
        return 0

    return run_reporting_errors("specialists", body)


if __name__ == "__main__":
    sys.exit(main())
