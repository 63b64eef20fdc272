"""Specialist models on two-digit MNIST (Hinton, Vinyals and Dean 2015, section 5).

Two-digit MNIST has 100 classes, 00 to 99: each image is two MNIST digits side by
side (28 high, 56 wide), the label is `10 * left + right`. Training pairs are drawn
from MNIST's training split, test pairs from its test split. A deliberately small
generalist confuses classes that share a digit or have look-alike digits; the run

1. trains the generalist on the training pairs minus a held-out part,
2. clusters the classes it confuses (K-means on the covariance of its predicted
   probabilities on the held-out part),
3. trains one specialist per cluster (generalist's weights, head over the cluster's
   classes plus a dustbin, half of each batch from the cluster, optional soft
   targets), then corrects each dustbin logit for the oversampling,
4. combines generalist and specialists per test image (paper eq. 5) and reports
   both accuracies and the paper's Table 4: the change in correct answers grouped by
   the number of specialists covering the correct class.

Every finished model is saved in `--output-dir`, and a rerun with the same options
picks up where the last one stopped. Run with `keras-kd specialists --help`.

Example:

    KERAS_KD_DATA_DIR=../shared/data keras-kd specialists --output-dir runs/specialists
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_kd import reports  # noqa: E402
from keras_kd import specialists as sp  # noqa: E402
from keras_kd.datasets.mnist import load_mnist  # noqa: E402

NUM_CLASSES = 100
CLASS_NAMES = [f"{c:02d}" for c in range(NUM_CLASSES)]


def two_digit_mnist(images: np.ndarray, labels: np.ndarray, num_pairs: int, seed: int):
    """Random pairs of MNIST digits side by side.

    Args:
        images: uint8 array `(n, 28, 28)` from one MNIST split.
        labels: Digit labels `(n,)`.
        num_pairs: Number of two-digit images to make.
        seed: Seed of the pairing.

    Returns:
        `(x, y)`: uint8 images `(num_pairs, 28, 56)` and int32 labels
        `10 * left + right`.

    Example:

    >>> x, y = two_digit_mnist(np.zeros((5, 28, 28), np.uint8), np.arange(5), 3, 0)
    >>> x.shape
    (3, 28, 56)
    """
    rng = np.random.default_rng(seed)
    left = rng.integers(0, len(images), num_pairs)
    right = rng.integers(0, len(images), num_pairs)
    x = np.concatenate([images[left], images[right]], axis=2)
    y = (10 * labels[left].astype(np.int32) + labels[right].astype(np.int32))
    return x, y.astype(np.int32)


def build_generalist(hidden_units: int) -> keras.Model:
    """A small MLP giving 100 logits from a 28x56 uint8 image.

    Args:
        hidden_units: Width of the single hidden layer.

    Returns:
        An uncompiled `keras.Model` whose last layer is `Dense(100)`.
    """
    inputs = keras.Input((28, 56), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hidden_units, activation="relu")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="generalist")


def parse_args(argv=None) -> argparse.Namespace:
    """The experiment's options (a leading `--`, as `keras-kd specialists -- ...` passes
    it, is ignored)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="keras-kd specialists",
        description="Specialist models on two-digit MNIST (paper section 5).",
    )
    parser.add_argument("--data-dir", default=None, help="data root (else KERAS_KD_DATA_DIR)")
    parser.add_argument("--output-dir", default="runs/specialists", help="models and results")
    parser.add_argument("--train-pairs", type=int, default=60000, help="training images")
    parser.add_argument("--test-pairs", type=int, default=10000, help="test images")
    parser.add_argument("--holdout", type=int, default=6000,
                        help="training images held out to find the clusters")
    parser.add_argument("--hidden-units", type=int, default=32, help="generalist width")
    parser.add_argument("--generalist-epochs", type=int, default=2)
    parser.add_argument("--num-subsets", default="10,20",
                        help="K of K-means; several (comma-separated) are pooled")
    parser.add_argument("--min-subset-size", type=int, default=2)
    parser.add_argument("--raw-covariance", action="store_true",
                        help="K-means on raw covariance columns (default: unit length)")
    parser.add_argument("--specialist-epochs", type=int, default=2)
    parser.add_argument("--specialist-examples", type=int, default=20000,
                        help="examples per specialist epoch (half from its subset)")
    parser.add_argument("--soft-target-weight", type=float, default=0.0,
                        help="alpha of the generalist's folded soft targets (0: off)")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--top-n", type=int, default=2,
                        help="generalist's top classes that select specialists")
    parser.add_argument("--solver-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                        help="Keras progress: 0 silent, 1 bar, 2 a line per epoch")
    return parser.parse_args(argv)


def _check_resumable(output_dir: Path, config: dict) -> None:
    """Stores the options; refuses to mix models trained with other options."""
    path = output_dir / "config.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        changed = sorted(k for k in config if stored.get(k) != config[k])
        if changed:
            raise ValueError(
                f"--output-dir {str(output_dir)!r} holds a run with other options "
                f"({', '.join(changed)}); use a new --output-dir or delete that one."
            )
    reports.write_json(path, config)


def _load_or(path: Path, make):
    if path.is_file():
        return keras.saving.load_model(path)
    model = make()
    model.save(path)
    return model


def run(args: argparse.Namespace) -> dict:
    """Runs the experiment and writes `results.json` and `results.md`.

    Args:
        args: Options from `parse_args`.

    Returns:
        The results as a dict (also in `results.json`).
    """
    started = time.time()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ("output_dir", "verbose", "data_dir")}
    _check_resumable(output_dir, config)
    if args.holdout >= args.train_pairs:
        raise ValueError(
            f"--holdout {args.holdout} must be smaller than --train-pairs "
            f"{args.train_pairs}."
        )

    (mnist_x, mnist_y), (mnist_xt, mnist_yt) = load_mnist(args.data_dir)
    x_all, y_all = two_digit_mnist(mnist_x, mnist_y, args.train_pairs, args.seed)
    x_test, y_test = two_digit_mnist(mnist_xt, mnist_yt, args.test_pairs, args.seed + 1)
    x_train, y_train = x_all[args.holdout:], y_all[args.holdout:]
    x_held = x_all[:args.holdout]

    def train_generalist():
        keras.utils.set_random_seed(args.seed)
        model = build_generalist(args.hidden_units)
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        print(f"Training the generalist ({args.generalist_epochs} epochs)")
        model.fit(x_train, y_train, batch_size=args.batch_size,
                  epochs=args.generalist_epochs, verbose=args.verbose)
        return model

    generalist = _load_or(output_dir / "generalist.keras", train_generalist)

    clusters_path = output_dir / "clusters.json"
    if clusters_path.is_file():
        clusters = sp.ConfusableSubsets.from_dict(json.loads(clusters_path.read_text()))
    else:
        held_logits = generalist.predict(x_held, batch_size=1000, verbose=0)
        counts = [int(k) for k in str(args.num_subsets).split(",")]
        clusters = sp.find_confusable_subsets(
            keras.ops.convert_to_numpy(keras.ops.softmax(held_logits)),
            counts, seed=args.seed, min_size=args.min_subset_size,
            normalize=not args.raw_covariance,
        )
        reports.write_json(clusters_path, clusters.to_dict())
    print(clusters.report(CLASS_NAMES))

    train_logits = generalist.predict(x_train, batch_size=1000, verbose=0)
    specialists, infos = [], []
    for m, subset in enumerate(clusters.subsets):
        path = output_dir / f"specialist_{m:02d}.keras"
        info_path = output_dir / f"specialist_{m:02d}.json"
        if path.is_file() and info_path.is_file():
            specialists.append(keras.saving.load_model(path))
            infos.append(json.loads(info_path.read_text()))
            continue
        print(f"Specialist {m + 1}/{len(clusters.subsets)}: classes "
              f"{' '.join(CLASS_NAMES[c] for c in subset)}")
        keras.utils.set_random_seed(args.seed + 1 + m)
        specialist, info = sp.train_specialist(
            generalist, subset, x_train, y_train,
            generalist_logits=train_logits,
            num_examples=args.specialist_examples,
            epochs=args.specialist_epochs,
            batch_size=args.batch_size,
            soft_weight=args.soft_weight,
            temperature=args.temperature,
            seed=args.seed + m,
            verbose=args.verbose,
        )
        specialist.save(path)
        reports.write_json(info_path, info)
        specialists.append(specialist)
        infos.append(info)

    ensemble = sp.SpecialistEnsemble(
        generalist, specialists, clusters, top_n=args.top_n, steps=args.solver_steps
    )
    ensemble.save(output_dir / "ensemble.keras")
    generalist_pred = np.argmax(generalist.predict(x_test, batch_size=1000, verbose=0), -1)
    combined_pred = np.argmax(ensemble.predict(x_test, batch_size=500, verbose=0), -1)
    membership = sp.membership_matrix(clusters.subsets, NUM_CLASSES)
    active = keras.ops.convert_to_numpy(sp.active_specialists(
        generalist.predict(x_test, batch_size=1000, verbose=0), membership, args.top_n))
    table = sp.coverage_table(y_test, generalist_pred, combined_pred, clusters)
    generalist_accuracy = float((generalist_pred == y_test).mean())
    combined_accuracy = float((combined_pred == y_test).mean())
    results = {
        "date": datetime.date.today().isoformat(),
        "command": "keras-kd specialists " + shlex.join(sys.argv[1:]),
        "config": config,
        "generalist_accuracy": generalist_accuracy,
        "combined_accuracy": combined_accuracy,
        "relative_gain": (combined_accuracy - generalist_accuracy) / generalist_accuracy,
        "num_specialists": len(clusters.subsets),
        "mean_active_specialists": float(active.sum(axis=1).mean()),
        "clusters": clusters.to_dict(),
        "specialists": [
            {k: v for k, v in info.items() if k != "history"}
            | {"final_accuracy_on_mix": info["history"]["accuracy"][-1]}
            for info in infos
        ],
        "coverage_table": table,
        "wall_seconds_this_call": time.time() - started,
    }
    reports.write_json(output_dir / "results.json", results)
    (output_dir / "results.md").write_text(results_markdown(results, clusters))
    print(results_markdown(results, clusters))
    return results


def results_markdown(results: dict, clusters: sp.ConfusableSubsets) -> str:
    """The results as Markdown: accuracies, the coverage table and the clusters.

    Args:
        results: The dict `run` returns.
        clusters: The specialists' subsets.

    Returns:
        Markdown text.
    """
    lines = [
        "## Specialists on two-digit MNIST",
        "",
        f"- date: {results['date']}",
        f"- command: `{results['command']}`",
        f"- generalist test accuracy: {results['generalist_accuracy']:.4f}",
        f"- generalist + specialists (eq. 5): {results['combined_accuracy']:.4f} "
        f"(relative change {100 * results['relative_gain']:+.1f}%)",
        f"- specialists: {results['num_specialists']}, active per test image: "
        f"{results['mean_active_specialists']:.2f} on average",
        "",
        "Change in correct test answers by the number of specialists whose subset holds "
        "the correct class (the paper's Table 4; relative change = change / generalist "
        "correct in the group):",
        "",
        reports.markdown_table(results["coverage_table"], digits=4),
        "Subsets (K-means on the covariance of the generalist's predictions):",
        "",
        "```",
        clusters.report(CLASS_NAMES),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point: parses the options and runs the experiment."""
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
