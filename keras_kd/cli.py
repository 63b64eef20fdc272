"""The `keras-kd` command: argument parsing over the library, nothing more.

Subcommands:
  demo        distil on scikit-learn's bundled digits (no download), print a table
  distill     distil a saved student from one or more saved teachers (resumable)
  tune        search temperature and soft weight with KerasTuner
  export      SavedModel / TFLite export with a parity report
              (their bodies: keras_kd.jobs)
  mnist, acoustic, specialists, imagenet, language-model
              the paper's experiments and the language model
              (keras_kd.experiments.<name>.main)

Data for `distill`, `tune` and `export` (`--data`) is read by
`keras_kd.datasets.load_data`: `tfds:NAME`, an image folder with `train/` and
`test/` (or `val/`) class sub-folders, or an `.npz` file with `x_train`,
`y_train`, `x_test` and `y_test`.

`keras-kd --help` and the tools' `--help` do not import TensorFlow. Every other
call starts TensorFlow through `keras_kd.commands.start_tensorflow`, which hides
its start-up lines unless `--verbose` is given or `TF_CPP_MIN_LOG_LEVEL` is set.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from keras_kd import __version__
from keras_kd.commands import (
    CommandError,
    CommandParser,
    add_renamed,
    float_list,
    fraction,
    names,
    positive,
    run_reporting_errors,
    start_tensorflow,
)

EXPERIMENTS = {
    "mnist": "MNIST, section 3 of the paper",
    "acoustic": "FSDD frame classification, sections 4 and 6",
    "specialists": "specialist models, section 5",
    "imagenet": "ImageNet / Imagenette distillation",
    "language-model": "token-level distillation of a causal Transformer language model",
}
STRATEGIES = ("auto", "one", "mirrored")
# The same names as keras_kd.tuning.TUNERS and keras_kd.export.FORMATS, repeated so
# that `keras-kd --help` does not import TensorFlow (tests check they agree).
TUNER_KINDS = ("random", "bayesian", "hyperband")
EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_dynamic_int8", "tflite_int8")


def _add_demo(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="teacher, student from scratch and distilled student on bundled digits",
        description=(
            "Trains a teacher, a small student from scratch and the same student "
            "distilled from the teacher on scikit-learn's bundled 8x8 digits, then "
            "prints their test accuracy and training time. Needs no download."
        ),
    )
    parser.add_argument("--epochs", type=positive(int), default=None, help="epochs per model (default: 60)")
    parser.add_argument("--temperature", type=positive(float), default=None, help="distillation temperature (default: 4)")
    parser.add_argument("--soft-weight", type=fraction, default=None, help="weight of the soft term in [0, 1] (default: 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_renamed(parser, "--alpha", "--soft-weight")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    from keras_kd import demo

    chosen = {"epochs": args.epochs, "temperature": args.temperature, "soft_weight": args.soft_weight}
    demo.run_demo(seed=args.seed, **{k: v for k, v in chosen.items() if v is not None})
    return 0


def _add_teacher_args(parser) -> None:
    parser.add_argument(
        "--teacher", action="append", required=True, metavar="PATH",
        help="saved teacher (.keras) that outputs logits; repeat for an ensemble",
    )
    parser.add_argument(
        "--ensemble-mean", choices=("geometric", "arithmetic"), default="geometric",
        help="how several teachers are combined (default: geometric)",
    )


def _add_data_args(parser) -> None:
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
        "--image-size", type=positive(int), nargs=2, default=(128, 128),
        metavar=("H", "W"), help="size images from a folder are resized to",
    )


def _add_training_args(parser, epochs: int) -> None:
    parser.add_argument("--epochs", type=positive(int), default=epochs, help=f"training epochs (default: {epochs})")
    parser.add_argument("--batch-size", type=positive(int), default=128, help="global batch size (default: 128)")
    parser.add_argument("--learning-rate", type=positive(float), default=1e-3, help="Adam learning rate (default: 0.001)")
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="auto",
        help="tf.distribute strategy: auto (several GPUs or TF_CONFIG decide), one "
        "device, or mirrored over all local GPUs (default: auto)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _job_options(args, *groups: str) -> dict:
    """The `keras_kd.jobs` arguments of the option groups every job shares:
    student and data, plus `"teachers"` and `"training"` when asked for."""
    options = {
        "student": args.student, "data": args.data, "output_dir": args.output_dir,
        "data_dir": args.data_dir, "image_size": args.image_size,
    }
    if "teachers" in groups:
        options.update(teachers=args.teacher, ensemble_mean=args.ensemble_mean)
    if "training" in groups:
        options.update(
            epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.learning_rate, strategy=args.strategy, seed=args.seed,
        )
    return options


def _add_distill(subparsers) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="distil a saved student from saved teacher(s) on your data",
        description=(
            "Trains a saved, untrained student (.keras, outputs logits) on the soft "
            "targets of one or more saved teachers plus the hard labels, then writes "
            "OUTPUT_DIR/student.keras, results.md, results.json and curves.png (test "
            "accuracy of teacher and student) and TensorBoard logs in OUTPUT_DIR/logs. "
            "OUTPUT_DIR is a run folder: rerunning the same command after an "
            "interruption resumes training, and a rerun with other settings is "
            "refused."
        ),
    )
    _add_teacher_args(parser)
    parser.add_argument("--student", required=True, metavar="PATH", help="saved untrained student (.keras) that outputs logits")
    _add_data_args(parser)
    parser.add_argument("--temperature", type=positive(float), default=4.0, help="distillation temperature T (default: 4)")
    parser.add_argument("--soft-weight", type=fraction, default=0.9, help="weight of the soft term in [0, 1]; the hard term gets 1 - it (default: 0.9)")
    parser.add_argument(
        "--teacher-outputs", choices=("logits", "probabilities"), default="logits",
        help="what the teacher outputs (default: logits)",
    )
    _add_training_args(parser, epochs=5)
    add_renamed(parser, "--alpha", "--soft-weight")
    parser.add_argument("--out", dest="output_dir", required=True, help="run folder for everything written (new, empty, or an earlier run of this command)")
    add_renamed(parser, "--output-dir", "--out")
    parser.set_defaults(handler=_run_distill)


def _run_distill(args) -> int:
    from keras_kd import jobs, reports

    rows = jobs.distill_saved_models(
        **_job_options(args, "teachers", "training"),
        temperature=args.temperature, soft_weight=args.soft_weight,
        teacher_outputs=args.teacher_outputs,
    )
    output = Path(args.output_dir)
    print(reports.markdown_table(rows, jobs.RESULT_COLUMNS), end="")
    print(f"wrote {output / 'student.keras'}, results.md/.json and TensorBoard logs in {output / 'logs'}")
    return 0


def _add_tune(subparsers) -> None:
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
    parser.add_argument("--max-trials", type=positive(int), default=6, help="trials for random and bayesian (default: 6)")
    parser.add_argument("--temperatures", type=float_list, default=[1.0, 2.0, 3.0, 5.0, 10.0, 20.0], help="comma-separated temperatures to try (default: 1,2,3,5,10,20)")
    parser.add_argument("--soft-weights", type=float_list, default=[0.9], help="comma-separated soft-term weights to try (default: 0.9)")
    parser.add_argument(
        "--validation-fraction", type=fraction, default=0.1,
        help="part of the training split held out for the objective (default: 0.1)",
    )
    _add_training_args(parser, epochs=3)
    add_renamed(parser, "--alphas", "--soft-weights")
    parser.add_argument("--out", dest="output_dir", required=True, help="folder for the trials and the best student")
    add_renamed(parser, "--output-dir", "--out")
    parser.set_defaults(handler=_run_tune)


def _run_tune(args) -> int:
    from keras_kd import jobs

    result, test_accuracy = jobs.tune_saved_models(
        **_job_options(args, "teachers", "training"),
        tuner=args.tuner, max_trials=args.max_trials,
        temperatures=args.temperatures, soft_weights=args.soft_weights,
        validation_fraction=args.validation_fraction,
    )
    print(result.table, end="")
    print(
        f"best: {result.best_hyperparameters}, validation accuracy "
        f"{result.best_score:.4f}, test accuracy {test_accuracy:.4f}; teacher passes "
        f"over the transfer set: {result.teacher_passes}"
    )
    print(f"wrote {result.paths['student']}, {result.paths['table']} and {result.paths['json']}")
    return 0


def _add_export(subparsers) -> None:
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
    parser.add_argument("--formats", type=names(EXPORT_FORMATS), default=EXPORT_FORMATS, help=f"comma-separated formats (default: {','.join(EXPORT_FORMATS)})")
    parser.add_argument("--calibration-examples", type=positive(int), default=500, help="training examples for int8 calibration (default: 500)")
    parser.add_argument("--latency-examples", type=positive(int), default=200, help="single-example calls timed for latency (default: 200)")
    parser.add_argument("--out", dest="output_dir", required=True, help="folder for the exports and reports")
    add_renamed(parser, "--output-dir", "--out")
    parser.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from keras_kd import jobs

    results = jobs.export_saved_student(
        **_job_options(args), formats=args.formats,
        calibration_examples=args.calibration_examples,
        latency_examples=args.latency_examples,
    )
    print((Path(args.output_dir) / "parity.md").read_text(), end="")
    print(f"wrote {', '.join(Path(r['path']).name for r in results.values())} and parity reports in {args.output_dir}")
    return 0


def run_experiment(name: str, argv: list[str]) -> int:
    """Runs `keras_kd.experiments.<name>.main(argv)` (`keras-kd NAME ...`).

    Raises:
        CommandError: when this installation has no such experiment module.
    """
    module_name = f"keras_kd.experiments.{name.replace('-', '_')}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise CommandError(
            f"this installation of keras-kd {__version__} lacks {module_name}; "
            "reinstall keras-kd."
        ) from None
    try:
        return int(module.main(argv) or 0)
    except SystemExit as exit_:  # argparse's --help (0) and usage errors (2)
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        raise CommandError(str(exit_.code)) from None


def build_parser() -> argparse.ArgumentParser:
    """The `keras-kd` argument parser with all subcommands.

    The experiment subcommands appear here for `--help`; `main` hands their
    arguments to the experiment's own parser.

    Returns:
        An `argparse.ArgumentParser`.

    Example:

    >>> build_parser().parse_args(["demo", "--seed", "1"]).seed
    1
    """
    parser = CommandParser(
        prog="keras-kd",
        description="Knowledge distillation (Hinton, Vinyals, Dean 2015) for Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"keras-kd {__version__}")
    parser.add_argument(
        "--verbose", action="store_true",
        help="show TensorFlow's start-up lines and absl warnings (hidden unless "
        "TF_CPP_MIN_LOG_LEVEL is set), and the traceback above an error's one line",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="command", parser_class=CommandParser)
    _add_demo(subparsers)
    _add_distill(subparsers)
    _add_tune(subparsers)
    _add_export(subparsers)
    for name, summary in EXPERIMENTS.items():
        subparsers.add_parser(name, help=f"{summary} (keras-kd {name} --help for its options)", add_help=False)
    return parser


def _split_experiment(argv: list[str]) -> tuple[list[str], str, list[str]] | None:
    """`(global options, name, experiment arguments)` when `argv` names an
    experiment; its arguments bypass argparse, whose REMAINDER would reject a
    first option such as `--data-dir`."""
    for index, word in enumerate(argv):
        if not word.startswith("-"):
            if word in EXPERIMENTS:
                return argv[:index], word, argv[index + 1 :]
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keras-kd` console script.

    Args:
        argv: Arguments without the program name; default `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 2 for a bad argument, missing file,
        invalid data or a Keras backend other than TensorFlow (reported as one
        line on stderr), 130 when interrupted.

    Example:

    >>> main(["export", "--help"])
    usage: keras-kd export [-h] --student PATH --data SPEC ...
    0

    A user error is one line (on stderr, shown here) and exit status 2:

    >>> import contextlib, sys, tempfile
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["export", "--student", "missing.keras", "--data", "d.npz",
    ...           "--out", tempfile.mkdtemp()])
    keras-kd export: error: --student 'missing.keras' does not exist.
    2
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    experiment = _split_experiment(argv)
    try:
        args = parser.parse_args(experiment[0] if experiment else argv)
    except SystemExit as exit_:  # --help, --version (0) or a bad argument (2, printed)
        return int(exit_.code or 0)
    command = experiment[1] if experiment else args.command
    if command is None:
        parser.print_help()
        return 2
    if experiment:
        body = lambda: run_experiment(experiment[1], experiment[2])  # noqa: E731
    else:
        body = lambda: args.handler(args)  # noqa: E731
    return run_reporting_errors(
        command, lambda: _started(args.verbose, command, body), traceback=args.verbose
    )


def _started(verbose: bool, command: str, body) -> int:
    """Starts TensorFlow quietly, then runs `body` with skipped-image notices
    shown as one line each."""
    start_tensorflow(verbose)
    from keras_kd.datasets import SkippedImagesWarning

    with warnings.catch_warnings():
        show = warnings.showwarning

        def show_notice(message, category, *rest, **kwargs):
            if issubclass(category, SkippedImagesWarning):
                print(f"keras-kd {command}: note: {message}", file=sys.stderr)
            else:
                show(message, category, *rest, **kwargs)

        warnings.simplefilter("always", SkippedImagesWarning)
        warnings.showwarning = show_notice
        return body()


if __name__ == "__main__":
    sys.exit(main())
