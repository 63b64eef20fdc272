"""What validation costs: the keras.io MNIST example's models, evaluated four ways.

Issue 19 measured that `Distiller.evaluate` on the keras.io "Knowledge
Distillation" example took 17 s with the teacher against 1.7 s for the student
alone. This benchmark times one `evaluate` pass over MNIST's 10,000 test images,
in interleaved rounds (so a change of load hits every variant alike), for:

- `student`: `student.evaluate` (the floor);
- `kd always`: `keras_kd.Distiller(validation_teacher="always")`, the teacher
  on every batch (keras-kd 0.2's behaviour);
- `kd reuse`: `validation_teacher="reuse"` (0.3's default) after its first
  pass, i.e. what every later epoch's validation costs;
- `peer`: `keras.distillation.Distiller` (`keras_kd.peers.keras_distillation_peer`).

The models are the example's (a 256/512-filter convolutional teacher, a
16/32-filter student), untrained: the cost of a pass does not depend on the
weights. It reports the median seconds per pass and each variant's ratio to
`kd always`, and writes `results.md` / `results.json` through
`keras_kd.runs.RunFolder` (`--out`).

Example:

    KERAS_KD_DATA_DIR=../shared/data python benchmarks/validation_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _models():
    import keras

    def convnet(filters, name):
        return keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(filters[0], 3, strides=2, padding="same"),
                keras.layers.LeakyReLU(negative_slope=0.2),
                keras.layers.MaxPooling2D(2, strides=1, padding="same"),
                keras.layers.Conv2D(filters[1], 3, strides=2, padding="same"),
                keras.layers.Flatten(),
                keras.layers.Dense(10),
            ],
            name=name,
        )

    keras.utils.set_random_seed(0)
    return convnet((256, 512), "teacher"), convnet((16, 32), "student")


def _variants(teacher, student):
    import keras

    import keras_kd
    from keras_kd.peers import keras_distillation_peer

    def loss():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    plain = keras.models.clone_model(student)
    plain.set_weights(student.get_weights())
    plain.compile(loss=loss(), metrics=["accuracy"])
    variants = {"student": plain}
    for mode in ("always", "reuse"):
        distiller = keras_kd.Distiller(
            student=student, teacher=teacher, temperature=10.0, soft_weight=0.9,
            validation_teacher=mode,
        )
        distiller.compile(optimizer="adam", loss=loss(), metrics=["accuracy"])
        variants[f"kd {mode}"] = distiller
    variants["peer"] = keras_distillation_peer(
        student=student, teacher=teacher, temperature=10.0, soft_weight=0.9,
        optimizer="adam", metrics=["accuracy"],
    )
    return variants


def measure(args) -> dict:
    """Times every variant's `evaluate` in interleaved rounds; returns the record."""
    import numpy as np

    from keras_kd.datasets.mnist import load_mnist

    (_, _), (x_test, y_test) = load_mnist(args.data_dir)
    x = (x_test[..., None] / 255.0).astype("float32")
    y = y_test.astype("int64")
    teacher, student = _models()
    variants = _variants(teacher, student)
    for model in variants.values():  # trace, and fill the "reuse" memory once
        model.evaluate(x, y, batch_size=args.batch_size, verbose=0)
    seconds = {name: [] for name in variants}
    order = list(variants)
    for round_ in range(args.rounds):
        for name in order[round_ % len(order):] + order[: round_ % len(order)]:
            start = time.perf_counter()
            variants[name].evaluate(x, y, batch_size=args.batch_size, verbose=0)
            seconds[name].append(time.perf_counter() - start)
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{name} {values[-1]:.2f} s" for name, values in seconds.items()))
    return {
        "seconds": seconds,
        "median": {name: statistics.median(values) for name, values in seconds.items()},
        "examples": int(len(x)),
        "load_average": list(np.round(__import__("os").getloadavg(), 2)),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "validation_cost"))
    args = parser.parse_args(argv)

    from keras_kd.commands import run_reporting_errors

    return run_reporting_errors("validation cost benchmark", lambda: _run(args))


def _run(args) -> int:
    from keras_kd.runs import RunFolder

    settings = {"rounds": args.rounds, "batch_size": args.batch_size}
    with RunFolder(args.out) as runs:
        record = runs.model("measurement", settings).get_or_measure(lambda run: measure(args))
        median = record["median"]
        rows = [
            {
                "evaluate pass over 10,000 MNIST test images": name,
                "median s": f"{median[name]:.2f}",
                "time / kd always": f"{median[name] / median['kd always']:.2f}",
                "rounds (s)": " ".join(f"{v:.2f}" for v in record["seconds"][name]),
            }
            for name in median
        ]
        runs.write_results(
            rows,
            title="Validation cost: keras.io MNIST example models",
            notes=f"Load average at the end: {record['load_average']}.",
            extra=settings,
        )
    for row in rows:
        print(" | ".join(row.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
