"""Section 3 of Hinton, Vinyals and Dean (2015) on MNIST: `keras-kd mnist`.

Parts (`--parts`, comma-separated, default all):

- `teacher`: a 784-1200-1200-10 ReLU net with dropout and max-norm weights,
  trained on images jittered by up to `--jitter-pixels` in each direction.
- `baseline`: the 800-800 student on hard labels, unregularized.
- `distilled`: the same student on the teacher's soft targets at each of
  `--temperatures`, plus the hard-label term (`--soft-weight` weighs the soft
  term); the students see the unjittered images.
- `small`: 30-30 and 300-300 students from scratch and distilled at each of
  `--small-temperatures`; the soft weight and learning rate of each (from
  `--small-soft-weights`, `--small-learning-rates`) and the best temperature are
  chosen on held-out training images.
- `omit3`: the 800-800 student distilled on a transfer set without any 3, then
  class 3's bias raised by a shift chosen on held-out training images.
- `only78`: distilled on only the 7s and 8s; their biases lowered likewise.

Every hyper-parameter choice uses held-out *training* images, never the test
set: `--heldout` images for the small nets and the bias shifts,
`--teacher-heldout` / `--student-heldout` (default 0: the paper's 60,000
training images) to hold some out of the teacher's or the 800-800 students'
training, e.g. to choose their schedule, and `--select-epoch heldout` to keep
each model at its best held-out epoch.

Every model is a run of a `keras_kd.runs.RunFolder` under `--out`, fingerprinted
with every setting that shaped it (a student's include its teacher's and its
data subset): a rerun reuses finished models, resumes an interrupted one from its
last finished epoch exactly, and refuses a model asked for with other settings,
naming each difference. After every epoch each model's held-out and test errors
are written to `models/<name>/curve.json` (watch it during a long run); the
results, beside the paper's figures, go to `results.md`, `results.json` and
`curves.png`.

Example:

    keras-kd mnist --quick --out runs/mnist-quick
    keras-kd mnist --parts teacher,baseline,distilled --out runs/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Sequence

from keras_kd import commands

PARTS = ("teacher", "baseline", "distilled", "small", "omit3", "only78")
OPTIMIZERS = ("adam", "sgd")
SELECTIONS = ("last", "heldout")

# Section 3 of the paper: test errors out of 10,000 (percent for only78).
PAPER = {
    "teacher": "67",
    "baseline": "146",
    "distilled T=20": "74",
    "omit3": "206 (133 on 3s)",
    "omit3 + bias": "109 (14 on 3s), shift +3.5",
    "only78": "47.3%",
    "only78 + bias": "13.2%, shift -7.6",
}


@dataclasses.dataclass(frozen=True)
class Settings(commands.StudentSeeds):
    """Options of the MNIST experiment; the defaults are keras-kd 0.1.0's recipe.

    Args:
        out: The run folder.
        data_dir: Data root or MNIST folder (`None`: `KERAS_KD_DATA_DIR`).
        parts: Subset of `PARTS` to run.
        seed: Seed of the teacher and of the data split (which training images
            are held out or used at all).
        seeds: Seeds of the students; each student is trained once per seed
            and the table shows the mean and each seed. `None`: `(seed,)`.
        batch_size: Batch size of every model.
        teacher_hidden: The teacher's hidden layer widths.
        teacher_dropout: Dropout rate after each of the teacher's hidden layers.
        teacher_input_dropout: Dropout rate on the teacher's input pixels.
        max_norm: Max-norm bound on the teacher's incoming weight vectors
            (`None`: no constraint).
        teacher_optimizer: `"adam"` or `"sgd"` (with `momentum`).
        momentum: Momentum of the teacher's SGD.
        teacher_learning_rate: The teacher's starting learning rate (cosine
            decay to 1% of it over the run, as every model here).
        teacher_epochs: The teacher's epochs.
        jitter_pixels: Largest shift of the teacher's inputs, in pixels (0: no
            jitter).
        teacher_heldout: Training images kept out of the teacher's training
            (its curve then shows held-out errors); 0: all of them.
        student_hidden: Hidden widths of the baseline, distilled and bias-part
            students.
        student_epochs: Their epochs.
        student_learning_rate: Their starting learning rate (Adam).
        student_heldout: Training images kept out of the baseline and distilled
            students' training; 0: all of them.
        temperatures: Temperatures of the distilled students (the bias parts
            use the first).
        soft_weight: Weight of the soft term of every distilled 800-800
            student; the hard term gets `1 - soft_weight`.
        student_jitter: Also jitter the distilled students' inputs (the teacher
            then runs on every batch). Not the paper's recipe.
        teacher_cache: Folder of a `keras_kd.cache` teacher-output cache for the
            students' soft targets (`None`: one prediction pass, kept in the
            run folder).
        small_widths: Widths of the small students' two hidden layers.
        small_temperatures: Temperatures of the small distilled students.
        small_soft_weights: Soft weights tried for each small student, chosen on
            held-out images (`None`: `(soft_weight,)`).
        small_learning_rates: Learning rates tried for each small student,
            chosen on held-out images (`None`: `(student_learning_rate,)`).
        small_student_epochs: Epochs of the small students (`None`:
            `student_epochs`).
        heldout: Training images held out for the small students' and the bias
            parts' choices (at most a fifth of the training images).
        select_epoch: `"last"`, or `"heldout"`: keep every model that has a
            held-out set at its epoch with the fewest held-out errors.
        curve_every: Record held-out and test errors after every this many
            epochs (and the last); with `select_epoch="heldout"` only these
            epochs can be chosen.
        train_subset: Use only this many training images (`None`: 60,000).
        test_subset: Report on the first this many test images (`None`: 10,000).
        verbose: Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.
        threads: TensorFlow's intra- and inter-op thread counts (`None`:
            TensorFlow's choice).

    Raises:
        ValueError: for an option out of range, naming it.
    """

    out: str = "runs/mnist"
    data_dir: str | None = None
    parts: tuple[str, ...] = PARTS
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    batch_size: int = 256
    teacher_hidden: tuple[int, ...] = (1200, 1200)
    teacher_dropout: float = 0.3
    teacher_input_dropout: float = 0.1
    max_norm: float | None = 3.5
    teacher_optimizer: str = "adam"
    momentum: float = 0.9
    teacher_learning_rate: float = 1e-3
    teacher_epochs: int = 45
    jitter_pixels: int = 2
    teacher_heldout: int = 0
    student_hidden: tuple[int, ...] = (800, 800)
    student_epochs: int = 20
    student_learning_rate: float = 1e-3
    student_heldout: int = 0
    temperatures: tuple[float, ...] = (20.0,)
    soft_weight: float = 0.9
    student_jitter: bool = False
    teacher_cache: str | None = None
    small_widths: tuple[int, ...] = (30, 300)
    small_temperatures: tuple[float, ...] = (1.0, 2.5, 4.0, 8.0, 20.0)
    small_soft_weights: tuple[float, ...] | None = None
    small_learning_rates: tuple[float, ...] | None = None
    small_student_epochs: int | None = None
    heldout: int = 5000
    select_epoch: str = "last"
    curve_every: int = 1
    train_subset: int | None = None
    test_subset: int | None = None
    verbose: int = 1
    threads: int | None = None

    def __post_init__(self):
        commands.freeze_lists(self)
        _check(self)


# `--quick`: teacher, scratch and distilled student on 1,000 training images, a
# subset where the unregularized student overfits and soft targets clearly help.
QUICK = {
    "out": "runs/mnist-quick",
    "parts": ("teacher", "baseline", "distilled"),
    "train_subset": 1000,
    "test_subset": 2000,
    "teacher_epochs": 24,
    "student_epochs": 15,
    "batch_size": 50,
    "heldout": 200,
    "verbose": 0,
}


def _check(settings: Settings) -> None:
    """Raises a ValueError naming the first option out of range."""
    commands.check_parts(settings.parts, PARTS)
    rates = {
        "teacher_dropout": settings.teacher_dropout,
        "teacher_input_dropout": settings.teacher_input_dropout,
        "momentum": settings.momentum,
    }
    for name, value in rates.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"{commands.option_flag(name)} must be in [0, 1), got {value!r}."
            )
    weights = (settings.soft_weight, *(settings.small_soft_weights or ()))
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(
            f"Soft weights must be in [0, 1], got {weights}: the soft term gets "
            "the weight, the hard term 1 - weight."
        )
    for name in ("temperatures", "small_temperatures"):
        values = getattr(settings, name)
        if not values or any(not t > 0 for t in values):
            raise ValueError(
                f"{commands.option_flag(name)} must be numbers > 0, got {values}."
            )
    positive = {
        "batch_size": settings.batch_size,
        "teacher_epochs": settings.teacher_epochs,
        "student_epochs": settings.student_epochs,
        "small_student_epochs": settings.small_student_epochs or 1,
        "teacher_learning_rate": settings.teacher_learning_rate,
        "student_learning_rate": settings.student_learning_rate,
        "threads": settings.threads or 1,
        "curve_every": settings.curve_every,
        "train_subset": settings.train_subset or 1,
        "test_subset": settings.test_subset or 1,
    }
    commands.check_positive(positive)
    if settings.small_learning_rates and min(settings.small_learning_rates) <= 0:
        raise ValueError(
            f"--small-learning-rates must be > 0, got {settings.small_learning_rates}."
        )
    counts = {
        "seed": settings.seed,
        "jitter_pixels": settings.jitter_pixels,
        "teacher_heldout": settings.teacher_heldout,
        "student_heldout": settings.student_heldout,
        "heldout": settings.heldout,
    }
    for name, value in counts.items():
        if value < 0:
            raise ValueError(
                f"{commands.option_flag(name)} must be >= 0, got {value!r}."
            )
    if settings.jitter_pixels > 13:
        raise ValueError(
            f"--jitter-pixels must be at most 13 for 28x28 images, got "
            f"{settings.jitter_pixels}; the paper uses 2."
        )
    if any(s < 0 for s in settings.student_seeds):
        raise ValueError(f"--seeds must be integers >= 0, got {settings.seeds}.")
    if settings.max_norm is not None and not settings.max_norm > 0:
        raise ValueError(
            f"--max-norm must be > 0 (or 0 on the command line for none), got "
            f"{settings.max_norm!r}."
        )
    if settings.teacher_optimizer not in OPTIMIZERS:
        raise ValueError(
            f"--teacher-optimizer must be one of {OPTIMIZERS}, got "
            f"{settings.teacher_optimizer!r}."
        )
    if settings.select_epoch not in SELECTIONS:
        raise ValueError(
            f"--select-epoch must be one of {SELECTIONS}, got {settings.select_epoch!r}."
        )
    if not settings.teacher_hidden or not settings.student_hidden:
        raise ValueError(
            "--teacher-hidden and --student-hidden need at least one layer."
        )
    if not settings.small_widths and "small" in settings.parts:
        raise ValueError("--small-widths is empty; give widths such as 30,300.")


def _positive_floats(text: str) -> tuple[float, ...]:
    values = tuple(commands.float_list(text))
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got {text!r}")
    return values


def _fractions(text: str) -> tuple[float, ...]:
    values = tuple(commands.float_list(text))
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers in [0, 1], got {text!r}")
    return values


def _rate(text: str) -> float:
    value = commands.fraction(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _max_norm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(
            f"expected a number > 0, or 0 for no constraint, got {text!r}"
        )
    return value


def build_parser() -> commands.CommandParser:
    """The options of `keras-kd mnist` (see `Settings` for their meaning).

    Options left out keep `Settings`' defaults, or `QUICK`'s with `--quick`.

    Example:

    >>> build_parser().parse_args(["--teacher-hidden", "1200,1200"]).teacher_hidden
    [1200, 1200]
    """
    parser = commands.CommandParser(
        prog="keras-kd mnist",
        description=__doc__.split("\n\n")[0],
        epilog="Run `keras-kd mnist --quick` first: a run of about a minute.",
    )
    add = functools.partial(
        commands.add_setting, parser, defaults=Settings(), quick=QUICK
    )
    positive_int, positive_float = commands.positive(int), commands.positive(float)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: teacher, scratch and distilled student on 1,000 "
        "training images",
    )
    add("--out", "the run folder")
    add("--data-dir", "data root or MNIST folder (default: $KERAS_KD_DATA_DIR)")
    add(
        "--parts",
        f"comma-separated subset of {','.join(PARTS)}",
        type=commands.names(PARTS),
    )
    add("--seed", "seed of the teacher and the data split", type=commands.count)
    add(
        "--seeds",
        "seeds of every student, e.g. 0,1 (the table shows mean and each seed; "
        "default: --seed)",
        type=commands.count_list,
    )
    add("--batch-size", "batch size of every model", type=positive_int)
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of every model (the options below win over it)",
    )
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=None,
        help="starting learning rate of every model (the options below win over it)",
    )
    add("--teacher-hidden", "the teacher's hidden widths", type=commands.int_list)
    add("--teacher-dropout", "dropout after the teacher's hidden layers", type=_rate)
    add("--teacher-input-dropout", "dropout on the teacher's inputs", type=_rate)
    add("--max-norm", "max-norm of the teacher's weights (0: none)", type=_max_norm)
    add("--teacher-optimizer", "the teacher's optimizer", choices=OPTIMIZERS)
    add("--momentum", "momentum of --teacher-optimizer sgd", type=_rate)
    add(
        "--teacher-learning-rate",
        "the teacher's starting learning rate, cosine-decayed to 1%%",
        type=positive_float,
    )
    add("--teacher-epochs", "the teacher's epochs", type=positive_int)
    add(
        "--jitter-pixels",
        "largest shift of the teacher's inputs in pixels (0: none)",
        type=commands.count,
    )
    add(
        "--teacher-heldout",
        "training images kept out of the teacher's training (0: the paper's 60,000)",
        type=commands.count,
    )
    add("--student-hidden", "the 800-800 students' widths", type=commands.int_list)
    add("--student-epochs", "epochs of the 800-800 students", type=positive_int)
    add(
        "--student-learning-rate",
        "starting learning rate of the students (Adam, cosine-decayed to 1%%)",
        type=positive_float,
    )
    add(
        "--student-heldout",
        "training images kept out of the baseline and distilled students' training",
        type=commands.count,
    )
    add(
        "--temperatures",
        "temperatures of the distilled 800-800 students (a list is a sweep)",
        "--temperature",
        type=_positive_floats,
    )
    add(
        "--soft-weight",
        "weight of the soft term; the hard term gets 1 - soft weight",
        type=commands.fraction,
    )
    parser.add_argument(
        "--student-jitter",
        action="store_true",
        default=None,
        help="also jitter the distilled students' inputs (the teacher then runs "
        "on every batch; not the paper's recipe)",
    )
    add(
        "--teacher-cache",
        "folder of a keras_kd.cache teacher-output cache for the soft targets",
    )
    add("--small-widths", "widths of the small students", type=commands.int_list)
    add(
        "--small-temperatures",
        "temperatures of the small students",
        type=_positive_floats,
    )
    add(
        "--small-soft-weights",
        "soft weights tried for the small students, chosen on held-out images "
        "(default: --soft-weight)",
        type=_fractions,
    )
    add(
        "--small-learning-rates",
        "learning rates tried for the small students, chosen on held-out images "
        "(default: --student-learning-rate)",
        type=_positive_floats,
    )
    add(
        "--small-student-epochs",
        "epochs of the small students (default: --student-epochs)",
        type=positive_int,
    )
    add(
        "--heldout",
        "held-out training images for the small students' and the bias choices",
        type=commands.count,
    )
    add(
        "--select-epoch",
        "heldout: keep each model that has held-out images at its best held-out epoch",
        choices=SELECTIONS,
    )
    add(
        "--curve-every",
        "record held-out and test errors after every this many epochs",
        type=positive_int,
    )
    add("--train-subset", "use only this many training images", type=positive_int)
    add("--test-subset", "report on the first this many test images", type=positive_int)
    add(
        "--verbose",
        "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch",
        type=int,
        choices=(0, 1, 2),
    )
    add(
        "--threads",
        "TensorFlow threads (intra- and inter-op), e.g. 2 on a shared machine",
        type=positive_int,
    )
    commands.add_renamed(parser, "--alpha", "--soft-weight")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """`Settings` from parsed options: `QUICK` under `--quick`, given options win.

    `--epochs` and `--learning-rate` set every model's, unless a model's own
    option is given too.

    Raises:
        ValueError: for options out of range.

    Example:

    >>> settings_from_args(build_parser().parse_args(["--epochs", "3"])).teacher_epochs
    3
    """
    given = commands.given_settings(args, Settings)
    if args.max_norm == 0:
        given["max_norm"] = None
    shorthands = {
        "epochs": ("teacher_epochs", "student_epochs"),
        "learning_rate": ("teacher_learning_rate", "student_learning_rate"),
    }
    for shorthand, names in shorthands.items():
        value = getattr(args, shorthand)
        if value is not None:
            for name in names:
                given.setdefault(name, value)
    return Settings(**{**(QUICK if args.quick else {}), **given})


def run(settings: Settings) -> list[dict]:
    """Runs the chosen parts; writes `results.md`, `results.json`, `curves.png`.

    Args:
        settings: What to run.

    Returns:
        The table's rows: model, transfer set, temperature, test errors (mean
        and each seed), held-out errors and the paper's figure.

    Raises:
        ValueError: for invalid data or a run folder holding models trained with
            other settings (`keras_kd.runs.RunSettingsError`).
        FileNotFoundError: when the MNIST files cannot be found.

    Example:

    ```python
    # MNIST from KERAS_KD_DATA_DIR; QUICK is `--quick`, about a minute
    rows = run(Settings(**QUICK))  # writes runs/mnist-quick
    ```
    """
    commands.limit_threads("mnist", settings.threads)
    from keras_kd.experiments._mnist_runner import run_experiment

    return run_experiment(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """`keras-kd mnist ...`: runs the experiment; returns the exit status.

    A user error (bad option, missing data, a run folder made with other
    settings) is one line on stderr and exit status 2; `--help` prints the
    options and returns 0.

    Example:

    ```python
    main(["--quick", "--out", "runs/mnist-quick"])  # 0, after about a minute
    ```

    A user error is one line (on stderr, shown here) and exit status 2:

    >>> import contextlib, sys, tempfile
    >>> with contextlib.redirect_stderr(sys.stdout):
    ...     main(["--data-dir", "no-such-folder", "--out", tempfile.mkdtemp()])
    keras-kd mnist: error: The data folder 'no-such-folder' (from --data-dir) does not exist. ...
    2
    """
    return commands.experiment_main(
        "mnist", build_parser(), argv, lambda args: run(settings_from_args(args))
    )


if __name__ == "__main__":
    raise SystemExit(main())
