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

Everything lives in a `keras_kd.runs.RunFolder` under `--out` (default
benchmarks/runs/export_tuning, or benchmarks/runs/export_tuning-quick with
`--quick`): the teacher (`teacher_1200`), the student (`student_800`) and the
measurement (`export_search`: the export, the tuner's project, the search's
files) are runs fingerprinted by every setting that shaped them. A rerun with the
same options reuses the finished runs (a finished measurement is not repeated:
give another `--out` to measure again); a rerun with other options is refused,
naming each one that differs. The folder gets `results.md` and `results.json`;
`--results PATH` also copies `results.md` to PATH (how benchmarks/results/ is
recorded).

Usage:

    KERAS_KD_DATA_DIR=../shared/data nohup nice -n 10 .venv/bin/python \
        benchmarks/export_tuning.py --results benchmarks/results/export_tuning.md \
        > /tmp/export_tuning.log 2>&1 &
    .venv/bin/python benchmarks/export_tuning.py --quick --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
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

from keras_kd import commands, export, files, reports, tuning  # noqa: E402
from keras_kd.datasets.mnist import load_mnist  # noqa: E402
from keras_kd.distiller import Distiller  # noqa: E402
from keras_kd.models import mlp  # noqa: E402
from keras_kd.runs import RunFolder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs" / "export_tuning"
TITLE = "Export parity and temperature search on MNIST (issue 6)"
TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
PARITY_COLUMNS = (
    "format", "top1_agreement", "max_abs_logit_diff", "mean_abs_logit_diff",
    "accuracy", "accuracy_drop_points", "size_bytes", "size_ratio_vs_float32_tflite",
    "latency_ms_per_example",
)
SCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: $KERAS_KD_DATA_DIR")
    parser.add_argument("--out", default=None,
                        help=f"run folder (default: {RUNS}, or {RUNS}-quick with --quick)")
    parser.add_argument("--results", default=None,
                        help="also copy results.md here, e.g. benchmarks/results/export_tuning.md")
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--student-epochs", type=int, default=6)
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small subsets, for a smoke run")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return commands.run_reporting_errors("export_tuning benchmark", lambda: run(args, argv))


def run(args, argv) -> int:
    """Trains (or reuses) the models, measures (or reuses) export and search, writes results.

    Returns:
        0 when every done criterion holds, else 1.

    Raises:
        keras_kd.runs.RunSettingsError: when `--out` holds a model or a
            measurement made with other settings; the message names each one.
    """
    command = "python benchmarks/export_tuning.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = Path(args.out or (RUNS.with_name(RUNS.name + "-quick") if args.quick else RUNS))
    keras.utils.set_random_seed(0)
    data = load_data(args)
    teacher_settings = {**data.settings, "hidden": [1200, 1200], "dropout": 0.3,
                        "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 128,
                        "epochs": args.teacher_epochs}
    student_settings = {**prefixed("teacher_", teacher_settings), "hidden": [800, 800],
                        "temperature": 4.0, "soft_weight": 0.9, "optimizer": "adam",
                        "learning_rate": 1e-3, "batch_size": 128, "epochs": args.student_epochs}
    measurement_settings = {**prefixed("student_", student_settings),
                            "temperatures": list(TEMPERATURES), "search_soft_weight": 0.9,
                            "trial_epochs": args.trial_epochs, "calibration_examples": 500,
                            "latency_examples": 500}
    with RunFolder(out) as runs:
        teacher_run = runs.model("teacher_1200", teacher_settings)
        student_run = runs.model("student_800", student_settings)

        def train_and_measure(measurement) -> dict:
            timings = {}
            teacher = train_teacher(teacher_run, data, args.teacher_epochs, timings)
            student = distil_student(student_run, teacher, data, args.student_epochs, timings)
            record = measure(teacher, student, data, args.trial_epochs, measurement.folder, timings)
            return {**record, "command": command, "args": vars(args)}

        record = runs.model("export_search", measurement_settings).get_or_measure(
            train_and_measure)
        report = write_results(runs, record)
    print(report)
    if args.results:
        files.atomic_write_text(Path(args.results), report)
        print(f"wrote {args.results}")
    return 0 if all(ok for _, ok in record["checks"]) else 1


def prefixed(prefix: str, settings: dict) -> dict:
    """`settings` with every key prefixed (a model's settings inside another's)."""
    return {prefix + key: value for key, value in settings.items()}


class Data:
    """The MNIST split of the benchmark, flattened to [0, 1] floats."""

    def __init__(self, x_train, y_train, x_test, y_test):
        self.held = len(x_train) // 12  # 5,000 of 60,000: validation for the search
        self.x_fit, self.y_fit = x_train[: -self.held], y_train[: -self.held]
        self.x_val, self.y_val = x_train[-self.held :], y_train[-self.held :]
        self.x_test, self.y_test = x_test, y_test
        digest = hashlib.sha256()
        for array in (x_train, y_train, x_test, y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        self.settings = {"train_images": len(x_train), "test_images": len(x_test),
                         "heldout_images": self.held, "data_sha256": digest.hexdigest()[:16]}


def load_data(args) -> Data:
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    x_train = x_train.reshape(-1, 784).astype("float32") / 255.0
    x_test = x_test.reshape(-1, 784).astype("float32") / 255.0
    if args.quick:
        x_train, y_train, x_test, y_test = x_train[:3000], y_train[:3000], x_test[:1000], y_test[:1000]
    return Data(x_train, y_train, x_test, y_test)


def train_teacher(run, data: Data, epochs: int, timings: dict) -> keras.Model:
    """The 784-1200-1200-10 teacher: reused when finished, else trained (timed)."""
    if run.finished:
        return run.load()
    start = time.perf_counter()
    teacher = mlp(784, (1200, 1200), 10, dropout=0.3, name="teacher_1200")
    teacher.compile(keras.optimizers.Adam(1e-3), SCE, metrics=["accuracy"])
    teacher.fit(data.x_fit, data.y_fit, epochs=epochs, batch_size=128, verbose=2)
    timings["teacher_train_s"] = time.perf_counter() - start
    run.finish(teacher, {"train_s": timings["teacher_train_s"]})
    return teacher


def distil_student(run, teacher, data: Data, epochs: int, timings: dict) -> keras.Model:
    """The 784-800-800-10 student distilled at T = 4, soft weight 0.9 (timed)."""
    if run.finished:
        return run.load()
    start = time.perf_counter()
    student = mlp(784, (800, 800), 10, name="student_800")
    distiller = Distiller(student=student, teacher=teacher, temperature=4.0, soft_weight=0.9)
    distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    distiller.fit(data.x_fit, data.y_fit, epochs=epochs, batch_size=128, verbose=2)
    timings["student_distill_s"] = time.perf_counter() - start
    run.finish(student, {"distill_s": timings["student_distill_s"]})
    return student


def measure(teacher, student, data: Data, trial_epochs: int, folder: Path, timings: dict) -> dict:
    """Exports `student`, searches the temperature; returns the measurement's record.

    The export, the tuner's project and the search's outputs go below `folder`.
    """
    teacher_accuracy = float(np.mean(teacher.predict(data.x_test, verbose=0).argmax(-1) == data.y_test))
    start = time.perf_counter()
    parity = export.export_student(
        student, folder / "export", x_test=data.x_test, y_test=data.y_test,
        representative_data=data.x_fit, calibration_examples=500, latency_examples=500,
    )
    timings["export_s"] = time.perf_counter() - start

    counter = tuning.ExampleCounter()
    inputs = keras.Input((784,))
    counted_teacher = keras.Model(inputs, teacher(counter(inputs)))
    hypermodel = tuning.DistillationHyperModel(
        lambda width: mlp(784, (800, 800), 10, name="student_800"),
        temperatures=TEMPERATURES, soft_weights=(0.9,),
    )
    tuner = keras_tuner.GridSearch(
        hypermodel, objective=keras_tuner.Objective(tuning.OBJECTIVE, "max"),
        max_trials=len(TEMPERATURES), directory=str(folder / "tuner"), overwrite=True,
    )
    start = time.perf_counter()
    search = tuning.search_temperature(
        tuner, counted_teacher, data.x_fit, data.y_fit, validation_data=(data.x_val, data.y_val),
        epochs=trial_epochs, batch_size=128, output_dir=folder / "search",
    )
    timings["search_s"] = time.perf_counter() - start
    seen = int(counter.seen.numpy())

    int8, f32 = parity["tflite_int8"], parity["tflite_float32"]
    checks = [
        ("float32 TFLite top-1 agreement = 100%", f32["top1_agreement"] == 1.0),
        ("int8 top-1 agreement >= 99%", int8["top1_agreement"] >= 0.99),
        ("int8 accuracy loss <= 0.3 points", int8["accuracy_drop_points"] <= 0.3),
        ("int8 >= 3.5x smaller than float32 TFLite", int8["size_ratio_vs_float32_tflite"] >= 3.5),
        (f"search over {len(search.trials)} temperatures saw each transfer example once",
         seen == len(data.x_fit) and search.teacher_passes == 1
         and len({t["temperature"] for t in search.trials}) >= 5),
    ]
    return {
        "date": datetime.date.today().isoformat(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "keras_tuner": keras_tuner.__version__},
        "teacher_accuracy": teacher_accuracy, "student_accuracy": f32["keras_accuracy"],
        "fit_images": len(data.x_fit), "heldout_images": data.held,
        "test_images": len(data.x_test), "parity": list(parity.values()),
        "trials": search.trials, "trials_table": search.table,
        "teacher_passes": search.teacher_passes, "teacher_examples_seen": seen,
        "checks": checks, "timings": list(timings.items()),
    }


def write_results(runs, record: dict) -> str:
    """Writes `results.md` and `results.json` of the measurement; returns the Markdown."""
    args, versions = record["args"], record["versions"]
    fit = record["fit_images"]
    seen = record["teacher_examples_seen"]
    notes = "\n".join([
        f"Run {record['date']} on this project's 2-core shared CPU machine (TF "
        f"{versions['tensorflow']}, Keras {versions['keras']}, KerasTuner "
        f"{versions['keras_tuner']}), command:",
        "",
        f"    KERAS_KD_DATA_DIR=../shared/data nice -n 10 {record['command']}",
        "",
        f"Teacher 784-1200-1200-10 (dropout 0.3, {args['teacher_epochs']} epochs Adam): test "
        f"accuracy {record['teacher_accuracy']:.4f}. Student 784-800-800-10 distilled from it "
        f"(T = 4, soft weight 0.9, {args['student_epochs']} epochs): Keras test accuracy "
        f"{record['student_accuracy']:.4f}. Trained on {fit} training images; the last "
        f"{record['heldout_images']} are the search's validation set. Parity on the "
        f"{record['test_images']} test images; latency = mean of single-example calls "
        "(TFLite: tf.lite.Interpreter, 1 thread).",
        "",
        "## Export parity",
        "",
        reports.markdown_table(record["parity"], PARITY_COLUMNS, digits=6),
        "## Temperature search (GridSearch, soft weight 0.9, "
        f"{args['trial_epochs']} epochs per trial, objective val_accuracy at T = 1)",
        "",
        record["trials_table"],
        f"Teacher forward passes over the transfer set: {record['teacher_passes']}; examples "
        f"the teacher saw (counting layer): {seen} = {seen / fit:.2f} x the {fit} transfer "
        f"examples, for {len(record['trials'])} trials x {args['trial_epochs']} epochs.",
        "",
        "Wall time (s), of the work done by the invocation that measured: "
        + ", ".join(f"{name} {seconds:.0f}" for name, seconds in record["timings"]),
    ])
    rows = [{"done criterion (issue 6)": name, "met": "yes" if ok else "no"}
            for name, ok in record["checks"]]
    paths = runs.write_results(rows, title=TITLE, notes=notes, extra=record)
    return paths["markdown"].read_text()


if __name__ == "__main__":
    sys.exit(main())
