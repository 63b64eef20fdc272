"""What every `keras-kd` subcommand shares: one-line errors, quiet start-up, types.

A user's mistake (a bad option, a missing file, invalid data, a run folder with
other settings) is printed as one line, `keras-kd COMMAND: error: ...`, and the
command exits with status 2, never with a traceback. The library raises
`ValueError`, `TypeError`, `FileNotFoundError` or `CommandError` for such mistakes;
`run_reporting_errors` turns them into that line.

TensorFlow 2.21 prints start-up lines (absl's "All log messages before
absl::InitializeLog()", oneDNN, the CUDA stub, the CPU feature guard, cuInit)
through a logger that ignores `TF_CPP_MIN_LOG_LEVEL`. `start_tensorflow` imports
TensorFlow with the process's standard error captured at file-descriptor level
and replays only what the log level lets through: nothing of TensorFlow's by
default, the user's own `TF_CPP_MIN_LOG_LEVEL` when it is set, everything with
`keras-kd --verbose`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from keras_kd._stderr import captured_fd2

USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# The level the command sets for the rest of a run when the user has not: hides
# TensorFlow's INFO and WARNING lines, keeps its errors.
QUIET_LOG_LEVEL = "2"
_NATIVE_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ")
_ABSL_NOTICE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# Lines that continue a native record (the CPU feature guard's second line).
_CONTINUATIONS = ("To enable the following instructions", " ", "\t")


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump) and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_reporting_errors(
    command: str, run: Callable[[], int | None], *, traceback: bool = False
) -> int:
    """Runs a subcommand; a user error becomes one line on stderr and exit 2.

    Args:
        command: The subcommand's name, e.g. `"mnist"`.
        run: The subcommand's body; returns its exit status (None means 0).
        traceback: Also print the error's traceback (`keras-kd --verbose`), for
            an error that is keras-kd's own fault rather than the user's.

    Returns:
        The exit status.
    """
    from keras_kd.runs import RunFolderBusyError

    try:
        return int(run() or 0)
    except (CommandError, RunFolderBusyError, *USER_ERRORS) as error:
        if traceback:
            import traceback as traceback_module

            traceback_module.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"keras-kd {command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"keras-kd {command}: interrupted; rerun the same command to resume "
            "where a run folder allows it",
            file=sys.stderr,
        )
        return 130


def experiment_main(
    command: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run: Callable[[argparse.Namespace], object],
) -> int:
    """The body of an experiment's `main(argv) -> int` (`keras-kd COMMAND`).

    Args:
        command: The subcommand's name in messages, e.g. `"mnist"`.
        parser: The experiment's option parser.
        argv: The options (default: the command line).
        run: Runs the experiment from the parsed options; what it returns is
            ignored.

    Returns:
        0 when the run finishes; argparse's status for `--help` (0) or a bad
        option (2, its one line already printed); 2 with one line on stderr for
        a user error raised by `run` (see `run_reporting_errors`).
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a bad option (already printed)
        return int(stop.code or 0)

    def body() -> int:
        run(args)
        return 0

    return run_reporting_errors(command, body)


def limit_threads(command: str, threads: int | None) -> None:
    """Sets TensorFlow's intra- and inter-op thread pools to `threads`.

    TensorFlow accepts this only before its first operation; later, a
    different count is reported as one line on stderr naming `command`, and
    the run goes on with TensorFlow's pools.

    Args:
        command: The subcommand's name in the message, e.g. `"mnist"`.
        threads: The thread count (`None`: leave TensorFlow's choice).
    """
    if threads is None:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads:
            print(
                f"keras-kd {command}: --threads {threads} not applied: TensorFlow has "
                f"started already in this process (intra-op threads: {current}).",
                file=sys.stderr,
            )


def start_tensorflow(verbose: bool = False) -> None:
    """Imports TensorFlow, Keras and keras-kd's public API for a subcommand.

    TensorFlow's start-up lines are filtered as the module docstring says. When
    neither `verbose` nor the user's `TF_CPP_MIN_LOG_LEVEL` asks for them, the
    rest of the run uses `TF_CPP_MIN_LOG_LEVEL=2` and Python `absl` logging at
    ERROR (tensorflow-datasets logs its warnings there).

    Args:
        verbose: Show every start-up line and leave all logging as configured.

    A fatal TensorFlow error while it starts aborts the process before the
    captured lines are replayed: rerun with `verbose` to see its message.

    Raises:
        CommandError: when Keras runs on another backend than TensorFlow (one
            line naming the backend and the fix).

    Example:

    >>> start_tensorflow()
    >>> import keras
    >>> keras.backend.backend()
    'tensorflow'
    """
    import keras_kd

    problem = keras_kd._backend_problem()
    if problem:
        raise CommandError(problem)
    user_level = os.environ.get(LOG_LEVEL_VARIABLE)
    if verbose:
        threshold = 0
    elif user_level is None:
        os.environ[LOG_LEVEL_VARIABLE] = QUIET_LOG_LEVEL
        threshold = _SEVERITY["F"]  # hide every start-up line but a fatal one
    else:
        threshold = int(user_level) if user_level.strip().isdigit() else 0
    if "tensorflow" in sys.modules:  # started already (e.g. `main` called in-process)
        keras_kd._import_public_api()
        return
    with _native_stderr_filtered(threshold):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe logs here
        keras_kd._import_public_api()
    if not verbose and user_level is None:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def _native_stderr_filtered(threshold: int) -> Iterator[None]:
    """Captures file descriptor 2, then replays it without native log lines
    whose severity is below `threshold` (I=0, W=1, E=2, F=3)."""
    if threshold <= 0:
        yield
        return
    captured: list[str] = []
    try:
        with captured_fd2() as captured:
            yield
    finally:  # replayed also when the import fails, to show why
        lines = "".join(captured).splitlines(keepends=True)
        kept = _filter_native_log(lines, threshold)
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def _filter_native_log(lines: list[str], threshold: int) -> list[str]:
    """`lines` without native log records below `threshold` (and the lines
    that continue them).

    Example:

    >>> _filter_native_log(["I0000 00:00:1795.5  9 cpu_feature_guard.cc:227] ...\\n",
    ...                     "To enable the following instructions: AVX2\\n",
    ...                     "kept\\n"], 1)
    ['kept\\n']
    """
    kept, hiding = [], False
    for line in lines:
        record = _NATIVE_LOG_LINE.match(line)
        if record:
            hiding = _SEVERITY[record.group(1)] < threshold
        elif line.startswith(_ABSL_NOTICE):
            hiding = threshold >= 1
        elif not line.startswith(_CONTINUATIONS):
            hiding = False
        if not hiding:
            kept.append(line)
    return kept


def check_output_dir(path: str | os.PathLike, flag: str = "--output-dir") -> Path:
    """Creates an output folder before any work, or refuses it in one line.

    The writer that fills the folder later claims it (`keras_kd.files.claim_folder`)
    and refuses one holding your files; this check needs only the file system.

    Args:
        path: The folder a subcommand will write.
        flag: The option that named it, for the message.

    Returns:
        The folder as a `Path`.

    Raises:
        CommandError: when `path` is a file, lies under a file, or cannot be
            created or written.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise CommandError(f"{flag} {str(path)!r} is a file, not a folder. Give a new folder.")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CommandError(
            f"{flag} {str(path)!r} cannot be created: a part of that path is a file. "
            "Give a folder under an existing directory."
        ) from None
    except OSError as error:
        raise CommandError(
            f"{flag} {str(path)!r} cannot be created ({error.strerror or error}). "
            "Give a folder you can write to."
        ) from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise CommandError(
            f"{flag} {str(path)!r} is not writable. Give a folder you can write to."
        )
    return target


def require_file(path: str | os.PathLike, flag: str, suffix: str | None = None) -> Path:
    """`path` as a `Path`, or a one-line error when it is not an existing file.

    Raises:
        FileNotFoundError: when `path` does not exist or is a folder.
        CommandError: when `suffix` is given and `path` does not end with it.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} does not exist.")
    if suffix is not None and file.suffix != suffix:
        raise CommandError(
            f"{flag} {str(path)!r} is not a {suffix} file; save the model with "
            f"model.save('name{suffix}')."
        )
    return file


def load_saved_model(path: str | os.PathLike, flag: str):
    """Loads a `.keras` model, or raises a one-line error naming `flag`.

    Raises:
        FileNotFoundError: when the file does not exist.
        CommandError: when it is not a `.keras` file or cannot be loaded.
    """
    import keras

    file = require_file(path, flag, suffix=".keras")
    try:
        return keras.models.load_model(file, compile=False)
    except Exception as error:  # keras raises ValueError, TypeError, OSError, ...
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise CommandError(f"{flag} {str(path)!r} cannot be loaded ({first}).") from None


def load_teacher(paths: list[str], mean: str):
    """One saved teacher, or a `TeacherEnsemble` of several (`--teacher`)."""
    teachers = [load_saved_model(path, "--teacher") for path in paths]
    if len(teachers) == 1:
        return teachers[0]
    from keras_kd.teachers import TeacherEnsemble

    return TeacherEnsemble(teachers, mean=mean)


def check_data_fits(model, splits, *, role: str, source: str) -> None:
    """Checks that the arrays of `splits` fit `model`'s inputs and outputs.

    Args:
        model: A loaded model that outputs one logit per class.
        splits: `(x_train, y_train, x_test, y_test)` from `load_data`.
        role: How to name the model, e.g. `"student"`.
        source: The data set, named in messages.

    Raises:
        ValueError: when the examples do not have the model's input shape, or a
            label is not one of the model's classes.
    """
    from keras_kd.datasets import check_label_range
    from keras_kd.teachers import check_input_shape

    x_train, y_train, x_test, y_test = splits
    check_input_shape(
        model, x_train.shape[1:], model_role=role, data_name=f"{source}: x_train"
    )
    try:
        classes = int(model.output_shape[-1])
    except (AttributeError, TypeError, ValueError):
        return  # a model that does not declare its outputs is checked by Keras
    for name, labels in (("y_train", y_train), ("y_test", y_test)):
        check_label_range(labels, classes, name=name, source=source)


def positive(kind: type) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` that is > 0."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__} > 0, got {text!r}"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(
                f"expected a {kind.__name__} > 0, got {text!r}"
            )
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """An argparse type: comma-separated numbers, e.g. `1,2.5,4`."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 1,2,5,10, got {text!r}"
        )
    return values


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers, e.g. `800,800`."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 800,800, got {text!r}"
        )
    return values


def count(text: str) -> int:
    """An argparse type: an integer >= 0 (a seed, or a limit where 0 means none)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def count_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated integers >= 0, e.g. seeds `0,1,2`."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 0 such as 0,1, got {text!r}"
        )
    return values


def names(choices: Sequence[str] | None = None) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: comma-separated names, with `choices` a subset of them.

    Example:

    >>> names(("teacher", "student"))("student,teacher")
    ('student', 'teacher')
    """

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(part.strip() for part in text.split(",") if part.strip())
        if choices is None and chosen:
            return chosen
        unknown = [name for name in chosen if name not in choices]
        if choices is None or unknown or not chosen:
            expected = (
                "comma-separated names"
                if choices is None
                else f"a comma-separated subset of {','.join(choices)}"
            )
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return chosen

    parse.__name__ = "names"
    return parse


class RenamedOption(argparse.Action):
    """A hidden option of an earlier keras-kd whose use is a one-line error naming
    its replacement (`add_renamed` adds one)."""

    def __init__(
        self, option_strings, dest, replacement: str, note="", version="0.2.0", **kwargs
    ):
        self.replacement = replacement
        self.note = note
        self.version = version
        kwargs.setdefault("nargs", "?")
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        note = f": {self.note}" if self.note else ""
        parser.error(
            f"{option_string} was renamed {self.replacement} in keras-kd {self.version}{note}"
        )


def add_renamed(
    parser, old: str, new: str, note: str = "", version: str = "0.2.0"
) -> None:
    """Makes the old option `old` an error that names `new` (and `note`) and the
    keras-kd `version` that renamed it.

    Example:

    >>> parser = CommandParser(prog="keras-kd demo")
    >>> add_renamed(parser, "--alpha", "--soft-weight")
    >>> import contextlib, sys
    >>> with contextlib.redirect_stderr(sys.stdout), contextlib.suppress(SystemExit):
    ...     parser.parse_args(["--alpha", "0.5"])  # prints one line and exits 2
    keras-kd demo: error: --alpha was renamed --soft-weight in keras-kd 0.2.0 ...
    """
    parser.add_argument(
        old,
        action=RenamedOption,
        replacement=new,
        note=note,
        version=version,
        default=argparse.SUPPRESS,
    )


def shown(value) -> str:
    """A setting as its option would take it: `0.5`, `64,64`, `auto`."""
    if isinstance(value, tuple | list):
        return ",".join(shown(part) for part in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_setting(
    target,
    flag: str,
    help: str,
    *aliases: str,
    defaults: object = None,
    quick: Mapping | None = None,
    **kwargs,
) -> None:
    """Adds an option of a settings dataclass that parses as `None` when left out.

    Its help shows the default from `defaults` and, when `quick` holds it, the
    `--quick` value; `given_settings` then keeps only the options the user gave.

    Args:
        target: A parser or argument group.
        flag: The option, e.g. `"--batch-size"` (its field: `batch_size`).
        help: What the option sets.
        *aliases: Other spellings of the option.
        defaults: The settings shown as defaults: a dataclass instance or a
            mapping (a field it lacks, or `None`, shows no default).
        quick: The `--quick` settings of the command.
        **kwargs: For `add_argument` (`type`, `choices`, `action`, ...).

    Example:

    >>> parser = CommandParser(prog="keras-kd mnist")
    >>> add_setting(parser, "--batch-size", "batch size", type=positive(int),
    ...             defaults={"batch_size": 128}, quick={"batch_size": 32})
    >>> parser.parse_args([]).batch_size is None
    True
    """
    name = flag.removeprefix("--").replace("-", "_")
    if isinstance(defaults, Mapping):
        default = defaults.get(name)
    else:
        default = getattr(defaults, name, None)
    parts = [] if default is None else [f"default {shown(default)}"]
    if quick and name in quick:
        parts.append(f"--quick: {shown(quick[name])}")
    text = f"{help} ({'; '.join(parts)})" if parts else help
    target.add_argument(flag, *aliases, dest=name, default=None, help=text, **kwargs)


def option_flag(field: str) -> str:
    """The option that sets a settings field: `"batch_size"` -> `"--batch-size"`."""
    return "--" + field.replace("_", "-")


class StudentSeeds:
    """Mixin of an experiment's settings dataclass whose fields `seed` (the
    teacher's) and `seeds` (the students', `None` or empty: `seed`'s) name
    the seeds its students are trained with."""

    @property
    def student_seeds(self) -> tuple[int, ...]:
        """The students' seeds (`seeds`, or `(seed,)`)."""
        return self.seeds if self.seeds else (self.seed,)


def freeze_lists(settings: object) -> None:
    """Turns the list fields of a frozen settings dataclass into tuples (argparse
    gives lists), so that the settings stay hashable and compare as recorded."""
    for name, value in vars(settings).items():
        if isinstance(value, list):
            object.__setattr__(settings, name, tuple(value))


def check_parts(parts: Sequence[str], known: Sequence[str]) -> None:
    """Raises a ValueError unless `parts` is a non-empty subset of `known` (`--parts`)."""
    unknown = sorted(set(parts) - set(known))
    if unknown or not parts:
        raise ValueError(
            f"--parts has unknown part(s) {unknown or parts}; choose from "
            f"{', '.join(known)}."
        )


def check_positive(values: Mapping[str, float]) -> None:
    """Raises a ValueError naming the first option whose value is not > 0.

    Args:
        values: Settings field names and their values.

    Example:

    >>> check_positive({"batch_size": 0})
    Traceback (most recent call last):
    ValueError: --batch-size must be > 0, got 0.
    """
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{option_flag(name)} must be > 0, got {value!r}.")


def given_settings(args: argparse.Namespace, settings_class: type) -> dict:
    """The fields of the dataclass `settings_class` given on the command line
    (options that parsed to something other than `None`)."""
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(settings_class)
        if getattr(args, field.name, None) is not None
    }
