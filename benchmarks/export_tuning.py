"""Benchmark: MNIST student export parity (SavedModel, TFLite) and a temperature search.

Trains a 784-1200-1200-10 teacher and distils the 784-800-800-10 student from it
(a few epochs each, to have a real student to ship), exports the student with
`keras_kd.export.export_student` and checks the done criteria of issue 6:

- float32 TFLite agrees with Keras on 100% of the 10,000 test predictions;
- full-integer int8 agrees on >= 99%, loses <= 0.3 points of accuracy and is
  >= 3.5x smaller than the float32 TFLite file;
- a temperature search over 6 temperatures (KerasTuner GridSearch on a
  `DistillationHyperModel`) finishes with the teacher evaluated once: a counting
  layer in front of the teacher records how many examples it saw.

Outputs go to `benchmarks/runs/export_tuning/` (models reused on a rerun) and the
summary to `benchmarks/results/export_tuning.md`.

Usage:

    KERAS_KD_DATA_DIR=../shared/data nohup nice -n 10 .venv/bin/python \
        benchmarks/export_tuning.py > benchmarks/runs/export_tuning.log 2>&1 &
    .venv/bin/python benchmarks/export_tuning.py --quick --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_kd import export, reports, tuning  # noqa: E402
from keras_kd.datasets.mnist import load_mnist  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402
from keras_kd.models import mlp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0)


class ExampleCounter(keras.layers.Layer):
    """Identity layer that counts the examples passing through (the teacher's input)."""

    def build(self, input_shape):
        self.seen = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="int64", name="seen"
        )

    def call(self, x):
        self.seen.assign_add(tf.cast(tf.shape(x)[0], "int64"))
        return x


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "export_tuning"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "export_tuning.md"))
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--student-epochs", type=int, default=6)
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small subsets, for a smoke run")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    command = "python benchmarks/export_tuning.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    x_train = x_train.reshape(-1, 784).astype("float32") / 255.0
    x_test = x_test.reshape(-1, 784).astype("float32") / 255.0
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:3000], y_train[:3000], x_test[:1000], y_test[:1000]
    held = len(x_train) // 12  # 5,000 of 60,000: validation for the search
    x_fit, y_fit, x_val, y_val = x_train[:-held], y_train[:-held], x_train[-held:], y_train[-held:]
    sce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    timings = {}

    teacher_path = out / "teacher_1200.keras"
    if teacher_path.exists():
        teacher = keras.models.load_model(teacher_path)
    else:
        start = time.perf_counter()
        teacher = mlp(784, (1200, 1200), 10, dropout=0.3, name="teacher_1200")
        teacher.compile(keras.optimizers.Adam(1e-3), sce, metrics=["accuracy"])
        teacher.fit(x_fit, y_fit, epochs=args.teacher_epochs, batch_size=128, verbose=2)
        teacher.save(teacher_path)
        timings["teacher_train_s"] = time.perf_counter() - start
    teacher_accuracy = float(np.mean(teacher.predict(x_test, verbose=0).argmax(-1) == y_test))

    student_path = out / "student_800.keras"
    if student_path.exists():
        student = keras.models.load_model(student_path)
    else:
        start = time.perf_counter()
        student = mlp(784, (800, 800), 10, name="student_800")
        distiller = Distiller(student=student, teacher=teacher, temperature=4.0, soft_weight=0.9)
        distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        distiller.fit(x_fit, y_fit, epochs=args.student_epochs, batch_size=128, verbose=2)
        student.save(student_path)
        timings["student_distill_s"] = time.perf_counter() - start

    start = time.perf_counter()
    parity = export.export_student(
        student, out / "export", x_test=x_test, y_test=y_test,
        representative_data=x_fit, calibration_examples=500, latency_examples=500,
    )
    timings["export_s"] = time.perf_counter() - start

    counter = ExampleCounter()
    inputs = keras.Input((784,))
    counted_teacher = keras.Model(inputs, teacher(counter(inputs)))
    hypermodel = tuning.DistillationHyperModel(
        lambda width: mlp(784, (800, 800), 10, name="student_800"),
        temperatures=TEMPERATURES, soft_weights=(0.9,),
    )
    tuner = keras_tuner.GridSearch(
        hypermodel, objective=keras_tuner.Objective(tuning.OBJECTIVE, "max"),
        max_trials=len(TEMPERATURES), directory=str(out / "tuner"), overwrite=True,
    )
    start = time.perf_counter()
    search = tuning.search_temperature(
        tuner, counted_teacher, x_fit, y_fit, validation_data=(x_val, y_val),
        epochs=args.trial_epochs, batch_size=128, output_dir=out / "search",
    )
    timings["search_s"] = time.perf_counter() - start
    seen = int(counter.seen.numpy())

    int8, f32 = parity["tflite_int8"], parity["tflite_float32"]
    checks = {
        "float32 TFLite top-1 agreement = 100%": f32["top1_agreement"] == 1.0,
        "int8 top-1 agreement >= 99%": int8["top1_agreement"] >= 0.99,
        "int8 accuracy loss <= 0.3 points": int8["accuracy_drop_points"] <= 0.3,
        "int8 >= 3.5x smaller than float32 TFLite": int8["size_ratio_vs_float32_tflite"] >= 3.5,
        f"search over {len(search.trials)} temperatures saw each transfer example once":
            seen == len(x_fit) and search.teacher_passes == 1
            and len({t["temperature"] for t in search.trials}) >= 5,
    }
    columns = [
        "format", "top1_agreement", "max_abs_logit_diff", "mean_abs_logit_diff",
        "accuracy", "accuracy_drop_points", "size_bytes", "size_ratio_vs_float32_tflite",
        "latency_ms_per_example",
    ]
    today = datetime.date.today().isoformat()
    text = [
        "# Export parity and temperature search on MNIST (issue 6)",
        "",
        f"Run {today} on this project's 2-core shared CPU machine (TF {tf.__version__}, "
        f"Keras {keras.__version__}, KerasTuner {keras_tuner.__version__}), command:",
        "",
        f"    KERAS_KD_DATA_DIR=../shared/data nice -n 10 {command}",
        "",
        f"Teacher 784-1200-1200-10 (dropout 0.3, {args.teacher_epochs} epochs Adam): test "
        f"accuracy {teacher_accuracy:.4f}. Student 784-800-800-10 distilled from it "
        f"(T = 4, soft weight 0.9, {args.student_epochs} epochs): Keras test accuracy "
        f"{f32['keras_accuracy']:.4f}. Trained on {len(x_fit)} training images; the last "
        f"{held} are the search's validation set. Parity on the {len(x_test)} test images; "
        "latency = mean of single-example calls (TFLite: tf.lite.Interpreter, 1 thread).",
        "",
        "## Export parity",
        "",
        reports.markdown_table(list(parity.values()), columns, digits=6),
        "## Temperature search (GridSearch, soft weight 0.9, "
        f"{args.trial_epochs} epochs per trial, objective val_accuracy at T = 1)",
        "",
        search.table,
        f"Teacher forward passes over the transfer set: {search.teacher_passes}; examples "
        f"the teacher saw (counting layer): {seen} = {seen / len(x_fit):.2f} x the "
        f"{len(x_fit)} transfer examples, for {len(search.trials)} trials x "
        f"{args.trial_epochs} epochs.",
        "",
        "## Done criteria",
        "",
        *[f"- [{'x' if ok else ' '}] {name}" for name, ok in checks.items()],
        "",
        "Wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
    ]
    results = Path(args.results) if not args.quick else out / "export_tuning.md"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("\n".join(text))
    reports.write_json(out / "summary.json", {
        "date": today, "command": command, "teacher_accuracy": teacher_accuracy,
        "parity": parity, "trials": search.trials, "teacher_examples_seen": seen,
        "checks": checks, "timings": timings,
    })
    print("\n".join(text))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
