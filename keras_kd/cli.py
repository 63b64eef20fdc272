"""The `keras-kd` command: thin argument parsing over the library.

Subcommands:
  demo        distil on scikit-learn's bundled digits (no download), print a table
  distill     distil a saved student from one or more saved teachers
  tune        search temperature and soft weight with KerasTuner (keras_kd.tuning)
  export      SavedModel / TFLite export with a parity report (keras_kd.export)
  mnist, acoustic, imagenet, specialists
              run the paper's experiments from `examples/` (source checkout)

Data for `distill`, `tune` and `export` (`--data`): `tfds:NAME` (a prepared
TensorFlow Datasets set under `--data-dir`), an image folder with `train/` and
`test/` (or `val/`) class sub-folders, or an `.npz` file with `x_train`, `y_train`,
`x_test` and `y_test`. A relative path not found in the working directory is
looked up in the data folder (`--data-dir` or `KERAS_KD_DATA_DIR`).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
from pathlib import Path

import numpy as np

from keras_kd.commands import (
    CommandError,
    CommandParser,
    float_list,
    fraction,
    positive,
    run_reporting_errors,
)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Experiment subcommands run the example scripts, which live beside the package in
# a source checkout (the Makefile installs it in editable mode).
EXAMPLES = {
    "mnist": ("mnist/distill_mnist.py", "MNIST, section 3 of the paper"),
    "acoustic": ("acoustic/distill_acoustic.py", "FSDD frame classification, sections 4 and 6"),
    "imagenet": ("imagenet/distill_imagenet.py", "ImageNet / Imagenette distillation"),
    "specialists": ("specialists/specialists_mnist.py", "specialist models, section 5"),
}


def examples_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list[str]) -> int:
    relative, _ = EXAMPLES[name]
    script = examples_dir() / relative
    if not script.is_file():
        raise CommandError(
            f"`keras-kd {name}` runs examples/{relative} from a source checkout, and "
            f"{script} does not exist. Clone the keras-kd repository and install it "
            "with `pip install -e .`."
        )
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _add_demo(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="teacher, student from scratch and distilled student on bundled digits",
        description=(
            "Trains a teacher, a small student from scratch and the same student "
            "distilled from the teacher on scikit-learn's bundled 8x8 digits, then "
            "prints their test accuracy and training time. Needs no download."
        ),
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model")
    parser.add_argument("--temperature", type=float, default=None, help="distillation temperature")
    parser.add_argument("--soft-weight", type=float, default=None, help="weight of the soft term")
    parser.add_argument("--seed", type=int, default=0, help="random seed")

    def run(args):
        from keras_kd import demo

        options = {k: v for k, v in vars(args).items() if k in ("epochs", "temperature", "soft_weight") and v is not None}
        demo.run_demo(seed=args.seed, **options)
        return 0

    parser.set_defaults(handler=run)


# ------------------------------------------------------------------ shared pieces

STRATEGY_NAMES = {"auto": "auto", "one": "default", "mirrored": "mirrored"}
# The same names as keras_kd.tuning.TUNERS and keras_kd.export.FORMATS, repeated so
# that `keras-kd --help` does not import TensorFlow (tests check they agree).
TUNER_KINDS = ("random", "bayesian", "hyperband")
EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_dynamic_int8", "tflite_int8")


_Parser = CommandParser
_positive = positive
_fraction = fraction
_float_list = float_list


def _data_path(spec: str, data_dir: str | None) -> Path:
    """`spec` as given, or inside the data folder when it is not found here."""
    from keras_kd.datasets.location import resolve_data_dir

    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute():
        return path
    root = resolve_data_dir(data_dir)
    if root is not None and (root / spec).exists():
        return root / spec
    where = "" if root is None else f" nor in the data folder {str(root)!r}"
    raise FileNotFoundError(
        f"--data {spec!r} was not found in the working directory{where}. Give a "
        "`tfds:NAME`, an image folder with train/ and test/, or an .npz file."
    )


def _load_npz(path: Path):
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in keys if key not in arrays.files]
            if missing:
                raise CommandError(
                    f"--data {str(path)!r} lacks the array(s) {missing}; it needs "
                    f"{list(keys)} (np.savez(path, x_train=..., ...))."
                )
            return tuple(arrays[key] for key in keys)
    except (OSError, ValueError) as error:
        raise CommandError(f"--data {str(path)!r} is not a readable .npz file ({error}).") from None


def _folder_split(folder: Path, image_size, class_names=None):
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", class_names=class_names,
        image_size=tuple(image_size), batch_size=256, shuffle=False, verbose=False,
    )
    names = dataset.class_names
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    if not images:
        raise CommandError(f"--data: no images found under {str(folder)!r}.")
    return np.concatenate(images), np.concatenate(labels), names


def _load_folder(path: Path, image_size):
    test_folder = next((path / n for n in ("test", "val") if (path / n).is_dir()), None)
    if not (path / "train").is_dir() or test_folder is None:
        raise CommandError(
            f"--data {str(path)!r} must hold train/ and test/ (or val/) folders, each "
            "with one sub-folder of images per class."
        )
    x_train, y_train, names = _folder_split(path / "train", image_size)
    x_test, y_test, _ = _folder_split(test_folder, image_size, class_names=names)
    return x_train, y_train, x_test, y_test


def _load_tfds(name: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    from keras_kd.datasets.location import resolve_data_dir

    root = resolve_data_dir(data_dir)
    try:
        train, test = tfds.load(
            name, split=["train", "test"], as_supervised=True, batch_size=-1,
            data_dir=None if root is None else str(root), download=False,
        )
    except Exception as error:  # tfds raises many types (DatasetNotFoundError, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(
            f"--data tfds:{name} could not be loaded without downloading ({first}). "
            "Prepare it under --data-dir / KERAS_KD_DATA_DIR first."
        ) from None
    x_train, y_train = tfds.as_numpy(train)
    x_test, y_test = tfds.as_numpy(test)
    return x_train, y_train, x_test, y_test


def load_data(spec: str, data_dir: str | None = None, image_size=(128, 128)):
    """Reads `--data` into arrays `(x_train, y_train, x_test, y_test)`.

    Args:
        spec: `tfds:NAME`, an image folder, or an `.npz` file (see module doc).
        data_dir: The `--data-dir` value, or `None` for `KERAS_KD_DATA_DIR`.
        image_size: `(height, width)` images from a folder are resized to.

    Returns:
        Four numpy arrays; labels are integer class ids.

    Raises:
        CommandError: for unreadable or incomplete data.
        FileNotFoundError: when the file or folder does not exist.

    Example:

    >>> x_train, y_train, x_test, y_test = load_data("digits.npz")  # doctest: +SKIP
    """
    if spec.startswith("tfds:"):
        return _load_tfds(spec.removeprefix("tfds:"), data_dir)
    path = _data_path(spec, data_dir)
    if path.is_dir():
        return _load_folder(path, image_size)
    if path.suffix != ".npz":
        raise CommandError(
            f"--data {spec!r} is neither `tfds:NAME`, an image folder, nor an .npz file."
        )
    return _load_npz(path)


def _load_model(path: str, flag: str):
    """Loads a `.keras` file, or raises a one-line error naming `flag`."""
    import keras

    import keras_kd.teachers  # noqa: F401  (registers TeacherEnsemble for loading)

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {path!r} does not exist.")
    if file.suffix != ".keras":
        raise CommandError(
            f"{flag} {path!r} is not a .keras file; save the model with "
            "model.save('name.keras')."
        )
    try:
        return keras.models.load_model(file, compile=False)
    except Exception as error:  # keras raises ValueError, TypeError, OSError, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CommandError(f"{flag} {path!r} cannot be loaded ({first}).") from None


def _load_teacher(paths: list[str], mean: str):
    """One teacher, or a `TeacherEnsemble` of several."""
    teachers = [_load_model(path, "--teacher") for path in paths]
    if len(teachers) == 1:
        return teachers[0]
    from keras_kd.teachers import TeacherEnsemble

    return TeacherEnsemble(teachers, mean=mean)


def _strategy(name: str):
    from keras_kd.distribute import make_strategy

    return make_strategy(STRATEGY_NAMES[name])


def _accuracy(model, x, y, batch_size) -> float:
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == np.asarray(y).reshape(-1)))


def _add_teacher_args(parser):
    parser.add_argument(
        "--teacher", action="append", required=True, metavar="PATH",
        help="saved teacher (.keras) that outputs logits; repeat for an ensemble",
    )
    parser.add_argument(
        "--ensemble-mean", choices=("geometric", "arithmetic"), default="geometric",
        help="how several teachers are combined (default: geometric)",
    )


def _add_data_args(parser):
    parser.add_argument(
        "--data", required=True, metavar="SPEC",
        help="tfds:NAME, an image folder with train/ and test/ (or val/), or an .npz "
        "with x_train, y_train, x_test, y_test; inputs are fed as stored (images as "
        "floats in [0, 255]), so put any preprocessing inside the models",
    )
    parser.add_argument(
        "--data-dir", default=None,
        help="data folder for tfds and relative paths (default: $KERAS_KD_DATA_DIR)",
    )
    parser.add_argument(
        "--image-size", type=_positive(int), nargs=2, default=(128, 128),
        metavar=("H", "W"), help="size images from a folder are resized to",
    )


def _add_training_args(parser, epochs):
    parser.add_argument("--epochs", type=_positive(int), default=epochs, help=f"training epochs (default: {epochs})")
    parser.add_argument("--batch-size", type=_positive(int), default=128, help="global batch size (default: 128)")
    parser.add_argument(
        "--learning-rate", type=_positive(float), default=1e-3, help="Adam learning rate (default: 0.001)"
    )
    parser.add_argument(
        "--strategy", choices=tuple(STRATEGY_NAMES), default="auto",
        help="tf.distribute strategy: auto (several GPUs or TF_CONFIG decide), one "
        "device, or mirrored over all local GPUs (default: auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--output-dir", required=True, help="folder for everything written")


# ------------------------------------------------------------------------ distill

def _run_distill(args) -> int:
    import keras
    import tensorflow as tf

    from keras_kd import reports
    from keras_kd.distiller import Distiller

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.data, args.data_dir, args.image_size)
    output = Path(args.output_dir)
    strategy = _strategy(args.strategy)
    with strategy.scope():
        teacher = _load_teacher(args.teacher, args.ensemble_mean)
        student = _load_model(args.student, "--student")
        distiller = Distiller(
            student=student, teacher=teacher, temperature=args.temperature, soft_weight=args.soft_weight,
            teacher_outputs=args.teacher_outputs,
        )
        distiller.compile(
            optimizer=keras.optimizers.Adam(args.learning_rate), metrics=["accuracy"]
        )
    dtype = student.inputs[0].dtype if student.inputs else "float32"

    def dataset(x, y, shuffle):
        data = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            data = data.shuffle(len(x), seed=args.seed, reshuffle_each_iteration=True)
        return data.batch(args.batch_size).map(lambda a, b: (tf.cast(a, dtype), b))

    start = time.perf_counter()
    history = distiller.fit(
        dataset(x_train, y_train, True), validation_data=dataset(x_test, y_test, False),
        epochs=args.epochs, verbose=2,
        callbacks=[keras.callbacks.TensorBoard(str(output / "logs"))],
    )
    seconds = time.perf_counter() - start
    output.mkdir(parents=True, exist_ok=True)
    student.save(output / "student.keras")
    common = {"temperature": args.temperature, "soft_weight": args.soft_weight}
    rows = [
        {"model": "teacher" if len(args.teacher) == 1 else f"teacher ensemble ({len(args.teacher)}, {args.ensemble_mean})",
         "test_accuracy": _accuracy(teacher, x_test, y_test, args.batch_size),
         "params": int(teacher.count_params())},
        {"model": "distilled student",
         "test_accuracy": _accuracy(student, x_test, y_test, args.batch_size),
         "params": int(student.count_params()), **common, "epochs": args.epochs,
         "train_seconds": round(seconds, 1)},
    ]
    table = reports.markdown_table(rows)
    (output / "results.md").write_text(table)
    reports.write_json(output / "results.json", {"results": rows, "history": history.history})
    print(table, end="")
    print(f"wrote {output / 'student.keras'}, results.md/.json and TensorBoard logs in {output / 'logs'}")
    return 0


def _add_distill(subparsers):
    parser = subparsers.add_parser(
        "distill",
        help="distil a saved student from saved teacher(s) on your data",
        description=(
            "Trains a saved, untrained student (.keras, outputs logits) on the soft "
            "targets of one or more saved teachers plus the hard labels, then writes "
            "OUTPUT_DIR/student.keras, results.md and results.json (test accuracy of "
            "teacher and student) and TensorBoard logs in OUTPUT_DIR/logs."
        ),
    )
    _add_teacher_args(parser)
    parser.add_argument("--student", required=True, metavar="PATH", help="saved untrained student (.keras) that outputs logits")
    _add_data_args(parser)
    parser.add_argument("--temperature", type=_positive(float), default=4.0, help="distillation temperature T (default: 4)")
    parser.add_argument("--soft-weight", type=_fraction, default=0.9, help="weight of the soft term in [0, 1]; the hard term gets 1 - it (default: 0.9)")
    parser.add_argument(
        "--teacher-outputs", choices=("logits", "probabilities"), default="logits",
        help="what the teacher outputs (default: logits)",
    )
    _add_training_args(parser, epochs=5)
    parser.set_defaults(handler=_run_distill)


# --------------------------------------------------------------------------- tune

def _run_tune(args) -> int:
    import keras

    from keras_kd import tuning

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.data, args.data_dir, args.image_size)
    order = np.random.default_rng(args.seed).permutation(len(x_train))
    held = max(1, int(round(args.validation_fraction * len(x_train))))
    if held >= len(x_train):
        raise CommandError(
            f"--validation-fraction {args.validation_fraction} leaves no training data "
            f"out of {len(x_train)} examples; use a smaller fraction."
        )
    fit_rows, val_rows = order[held:], order[:held]
    teacher = _load_teacher(args.teacher, args.ensemble_mean)
    template = _load_model(args.student, "--student")
    hypermodel = tuning.DistillationHyperModel(
        lambda width: keras.models.clone_model(template),
        temperatures=args.temperatures, soft_weights=args.soft_weights,
        optimizer=lambda: keras.optimizers.Adam(args.learning_rate),
    )
    output = Path(args.output_dir)
    tuner = tuning.make_tuner(
        args.tuner, hypermodel, max_trials=args.max_trials, max_epochs=args.epochs,
        directory=output / "tuner", strategy=_strategy(args.strategy), seed=args.seed,
    )
    result = tuning.search_temperature(
        tuner, teacher, x_train[fit_rows], y_train[fit_rows],
        validation_data=(x_train[val_rows], y_train[val_rows]),
        epochs=args.epochs, batch_size=args.batch_size, output_dir=output,
    )
    test_accuracy = _accuracy(result.best_student, x_test, y_test, args.batch_size)
    print(result.table, end="")
    print(
        f"best: {result.best_hyperparameters}, validation accuracy "
        f"{result.best_score:.4f}, test accuracy {test_accuracy:.4f}; teacher passes "
        f"over the transfer set: {result.teacher_passes}"
    )
    print(f"wrote {result.paths['student']}, {result.paths['table']} and {result.paths['json']}")
    return 0


def _add_tune(subparsers):
    parser = subparsers.add_parser(
        "tune",
        help="search temperature and soft weight with KerasTuner",
        description=(
            "Runs the teacher(s) once over the training split, then trains a fresh "
            "copy of the saved student per trial on the stored teacher logits, "
            "maximising validation accuracy at T = 1 on a held-out part of the "
            "training split. Writes OUTPUT_DIR/trials.md, trials.json and "
            "best_student.keras, and prints the best student's test accuracy."
        ),
    )
    _add_teacher_args(parser)
    parser.add_argument("--student", required=True, metavar="PATH", help="saved untrained student (.keras); each trial re-initialises a copy")
    _add_data_args(parser)
    parser.add_argument("--tuner", choices=TUNER_KINDS, default="random", help="search algorithm (default: random)")
    parser.add_argument("--max-trials", type=_positive(int), default=6, help="trials for random and bayesian (default: 6)")
    parser.add_argument("--temperatures", type=_float_list, default=[1.0, 2.0, 3.0, 5.0, 10.0, 20.0], help="comma-separated temperatures to try (default: 1,2,3,5,10,20)")
    parser.add_argument("--soft-weights", type=_float_list, default=[0.9], help="comma-separated soft-term weights to try (default: 0.9)")
    parser.add_argument(
        "--validation-fraction", type=_fraction, default=0.1,
        help="part of the training split held out for the objective (default: 0.1)",
    )
    _add_training_args(parser, epochs=3)
    parser.set_defaults(handler=_run_tune)


# ------------------------------------------------------------------------- export

def _run_export(args) -> int:
    from keras_kd import export

    _, _, x_test, y_test = data = load_data(args.data, args.data_dir, args.image_size)
    student = _load_model(args.student, "--student")
    results = export.export_student(
        student, args.output_dir, x_test=x_test, y_test=y_test,
        representative_data=data[0], formats=args.formats,
        calibration_examples=args.calibration_examples,
        latency_examples=args.latency_examples,
    )
    print((Path(args.output_dir) / "parity.md").read_text(), end="")
    print(f"wrote {', '.join(Path(r['path']).name for r in results.values())} and parity reports in {args.output_dir}")
    return 0


def _add_export(subparsers):
    def formats(text):
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [f for f in chosen if f not in EXPORT_FORMATS]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(
                f"unknown format(s) {unknown or text!r}; choose from {','.join(EXPORT_FORMATS)}"
            )
        return chosen

    parser = subparsers.add_parser(
        "export",
        help="export a student to SavedModel / TFLite with a parity report",
        description=(
            "Exports a saved student to a TF SavedModel and to TFLite (float32, "
            "dynamic-range int8, full-integer int8 calibrated on the training split) "
            "and writes, per export and in OUTPUT_DIR/parity.md, its parity with the "
            "Keras student on the test split: max and mean |logit difference|, top-1 "
            "agreement, accuracy, file size and per-example latency. A model with "
            "ops TFLite cannot convert is refused before anything is written."
        ),
    )
    parser.add_argument("--student", required=True, metavar="PATH", help="the trained student (.keras)")
    _add_data_args(parser)
    parser.add_argument("--formats", type=formats, default=list(EXPORT_FORMATS), help=f"comma-separated formats (default: {','.join(EXPORT_FORMATS)})")
    parser.add_argument("--calibration-examples", type=_positive(int), default=500, help="training examples for int8 calibration (default: 500)")
    parser.add_argument("--latency-examples", type=_positive(int), default=200, help="single-example calls timed for latency (default: 200)")
    parser.add_argument("--output-dir", required=True, help="folder for the exports and reports")
    parser.set_defaults(handler=_run_export)


def build_parser() -> argparse.ArgumentParser:
    """The `keras-kd` argument parser with all subcommands.

    Returns:
        An `argparse.ArgumentParser`.

    Example:

    >>> build_parser().parse_args(["demo", "--seed", "1"]).seed
    1
    """
    parser = _Parser(
        prog="keras-kd",
        description="Knowledge distillation (Hinton, Vinyals, Dean 2015) for Keras 3.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", parser_class=_Parser)
    _add_demo(subparsers)
    _add_distill(subparsers)
    _add_tune(subparsers)
    _add_export(subparsers)
    for name, (relative, summary) in EXAMPLES.items():
        example = subparsers.add_parser(
            name,
            help=f"{summary} (examples/{relative}; --help for its options)",
            add_help=False,
        )
        example.add_argument("example_args", nargs=argparse.REMAINDER)
        example.set_defaults(handler=lambda args, name=name: run_example(name, args.example_args))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keras-kd` console script.

    Args:
        argv: Arguments without the program name; default `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 2 for a bad argument, missing file or
        invalid data (reported as one line on stderr).

    Example:

    >>> main(["export", "--help"])  # doctest: +SKIP
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in EXAMPLES:
        # An example parses its own options; argparse's REMAINDER would reject a
        # first option such as `--data-dir`, so they bypass the parser entirely.
        return _run_reporting_errors(argv[0], lambda: run_example(argv[0], argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a bad argument (2, already printed)
        return int(exit_.code or 0)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return _run_reporting_errors(args.command, lambda: args.handler(args))


_run_reporting_errors = run_reporting_errors


if __name__ == "__main__":
    sys.exit(main())
