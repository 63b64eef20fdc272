"""Searching the temperature, soft weight and student width with KerasTuner.

The teacher is evaluated once on the transfer set before the search; every trial
then trains a fresh student on the stored teacher logits (batches of
`({"inputs": x, "teacher_logits": t}, y)`, which the `Distiller` trains from without
running a teacher). The objective is the student's validation accuracy at `T = 1`.

```python
hypermodel = DistillationHyperModel(build_student, temperatures=(1, 2, 5, 10, 20))
tuner = make_tuner("random", hypermodel, max_trials=6, directory="runs/tune")
result = search_temperature(tuner, teacher, x_train, y_train,
                            validation_data=(x_val, y_val), epochs=3,
                            output_dir="runs/tune")
print(result.table)
```

Files: the tuner's `directory` and the search's `output_dir` are keras-kd
folders of kind `"tune"` (`keras_kd.files.claim_folder`): a new or empty folder,
or one keras-kd claimed for tuning before; a folder holding files keras-kd did
not write is refused, so KerasTuner's `overwrite` can only ever remove a project
inside a folder keras-kd owns. `trials.md`, `trials.json` and
`best_student.keras` appear whole or not at all.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from keras_kd import files, reports
from keras_kd import losses as kd_losses
from keras_kd.batch import make_batch
from keras_kd.distiller import Distiller, NonFiniteLossError

DEFAULT_TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
DEFAULT_SOFT_WEIGHTS = (0.9,)
OBJECTIVE = "val_accuracy"
TUNERS = ("random", "bayesian", "hyperband")
KIND = "tune"


def _tune_folder(path: str | os.PathLike, argument: str, *, create: bool) -> Path:
    """Checks (or, with `create`, claims) a `"tune"` folder, naming the argument.

    Sub-folders that keras-kd claimed for tuning (a tuner's `directory` inside
    the search's `output_dir`) are adopted.
    """
    path = Path(path)
    claim = files.claim_folder if create else files.check_claimable
    try:
        return claim(path, kind=KIND, allowed=lambda name: files.owns(path / name, KIND))
    except files.FolderNotOwnedError as error:
        raise files.FolderNotOwnedError(f"`{argument}`: {error}") from None


def _choices(name: str, values, cast, check: Callable[[float], bool], rule: str):
    """Validates a non-empty sequence of hyperparameter choices; returns a tuple."""
    if values is None or isinstance(values, str | bytes) or not len(values):
        raise ValueError(
            f"`{name}` must be a non-empty sequence of {rule}, got {values!r}."
        )
    try:
        cleaned = tuple(dict.fromkeys(cast(v) for v in values))
    except (TypeError, ValueError):
        raise ValueError(
            f"`{name}` must hold numbers ({rule}), got {values!r}."
        ) from None
    bad = [v for v in cleaned if not check(v)]
    if bad:
        raise ValueError(f"`{name}` must hold {rule}; {bad} are not.")
    return cleaned


class DistillationHyperModel(keras_tuner.HyperModel):
    """A KerasTuner hypermodel: a `Distiller` over temperature, soft weight and width.

    Each trial builds a fresh student with `build_student(width)`, wraps it in a
    teacher-less `Distiller` with the trial's temperature and soft weight, and trains it
    on stored teacher logits (see `search_temperature`, which computes them once).
    The objective is `val_accuracy`: the student's accuracy at `T = 1` on the
    validation data.

    Args:
        build_student: Callable returning a new, untrained student `keras.Model`
            that outputs logits. It receives the trial's width, or `None` when
            `widths` is not searched.
        temperatures: Temperatures to try (floats > 0).
        soft_weights: Weights of the soft term to try (floats in [0, 1]).
        widths: Optional student widths (ints > 0) passed to `build_student`.
        optimizer: Callable returning a new optimizer for each trial; default
            Adam with learning rate 1e-3.
        teacher_outputs: `"logits"` (default) or `"probabilities"` for a
            teacher that ends in a softmax, as for `Distiller`.
        name: Name of the hypermodel.

    Raises:
        ValueError: for a non-callable `build_student`, an invalid choice list
            or `teacher_outputs`.

    Example:

    >>> def build_student(width):
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> hypermodel = DistillationHyperModel(build_student, temperatures=(1, 4))
    >>> hypermodel.get_config()["temperatures"]
    [1.0, 4.0]
    """

    def __init__(
        self,
        build_student: Callable[[int | None], keras.Model],
        *,
        temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
        soft_weights: Sequence[float] = DEFAULT_SOFT_WEIGHTS,
        widths: Sequence[int] | None = None,
        optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
        teacher_outputs: str = "logits",
        name: str = "distillation_hypermodel",
    ):
        super().__init__(name=name, tunable=True)
        if not callable(build_student):
            raise ValueError(
                "`build_student` must be a callable that returns a new student "
                f"keras.Model for a width (or None), got {build_student!r}."
            )
        self.build_student = build_student
        self.temperatures = _choices(
            "temperatures", temperatures, float,
            lambda t: math.isfinite(t) and t > 0, "floats > 0",
        )
        self.soft_weights = _choices(
            "soft_weights", soft_weights, float, lambda a: 0.0 <= a <= 1.0, "floats in [0, 1]"
        )
        self.widths = None
        if widths is not None:
            self.widths = _choices("widths", widths, int, lambda w: w > 0, "ints > 0")
        self.optimizer = optimizer or (lambda: keras.optimizers.Adam(1e-3))
        self.teacher_outputs = kd_losses.validate_teacher_outputs(teacher_outputs)

    def get_config(self) -> dict:
        """The searched choices (the callables are not serialised)."""
        return {
            "name": self.name,
            "temperatures": list(self.temperatures),
            "soft_weights": list(self.soft_weights),
            "widths": None if self.widths is None else list(self.widths),
            "teacher_outputs": self.teacher_outputs,
        }

    def build(self, hp: keras_tuner.HyperParameters) -> Distiller:
        """Builds and compiles the trial's `Distiller` (teacher `None`).

        Args:
            hp: The trial's hyperparameters.

        Returns:
            A compiled `Distiller` whose batches must carry teacher logits.

        Raises:
            ValueError: if `build_student` does not return a Keras model.
        """
        temperature = hp.Choice("temperature", list(self.temperatures))
        soft_weight = hp.Choice("soft_weight", list(self.soft_weights))
        width = None
        if self.widths is not None:
            width = hp.Choice("width", list(self.widths))
        student = self.build_student(width)
        if not isinstance(student, keras.Model):
            raise ValueError(
                "`build_student` must return a keras.Model, got "
                f"{type(student).__name__} for width={width!r}."
            )
        distiller = Distiller(
            student=student,
            teacher=None,
            temperature=float(temperature),
            soft_weight=float(soft_weight),
            teacher_outputs=self.teacher_outputs,
        )
        distiller.compile(optimizer=self.optimizer(), metrics=["accuracy"])
        return distiller

    def fit(
        self,
        hp: keras_tuner.HyperParameters,
        model: Distiller,
        x,
        y=None,
        *,
        teacher_logits: TeacherLogits,
        batch_size: int = 128,
        shuffle_seed: int = 0,
        **kwargs,
    ):
        """Trains the trial's distiller on stored teacher logits.

        Called by the tuner with the arguments of `tuner.search`.

        Args:
            hp: The trial's hyperparameters.
            model: The `Distiller` from `build`.
            x: Student inputs of the transfer set (array).
            y: Labels (array) or `None` for an unlabeled transfer set.
            teacher_logits: The `TeacherLogits` computed before the search.
            batch_size: Batch size.
            shuffle_seed: Seed of the per-epoch shuffle.
            **kwargs: Passed to `Distiller.fit` (epochs, validation_data,
                callbacks, ...).

        Returns:
            The `History` of `Distiller.fit`.

        Raises:
            keras_tuner.errors.FatalValueError, keras_tuner.errors.FatalTypeError:
                for the Distiller's errors about the data or the models, which
                every trial would repeat, so the search stops at once with the
                message (they are `ValueError` and `TypeError`).
            NonFiniteLossError: when this trial's training diverged (the search
                goes on with the next trial).
        """
        logits = teacher_logits.for_temperature(model.temperature)
        dataset = replay_dataset(x, logits, y, batch_size=batch_size, seed=shuffle_seed)
        kwargs.setdefault("verbose", 0)
        try:
            return model.fit(dataset, **kwargs)
        except NonFiniteLossError:
            raise  # this trial's hyperparameters: the next trial may do fine
        except ValueError as error:
            raise keras_tuner.errors.FatalValueError(str(error)) from error
        except TypeError as error:
            raise keras_tuner.errors.FatalTypeError(str(error)) from error


def replay_dataset(x, teacher_logits, y=None, *, batch_size: int = 128, seed=0):
    """A shuffled `tf.data` dataset of `({"inputs": x, "teacher_logits": t}, y)`.

    Args:
        x: Student inputs, an array with one row per example.
        teacher_logits: Array `(examples, classes)` of teacher outputs for `x`.
        y: Labels, or `None` (then batches are `({"inputs", "teacher_logits"},)`).
        batch_size: Batch size (int > 0).
        seed: Shuffle seed; the order changes every epoch.

    Returns:
        A batched, prefetched `tf.data.Dataset`.

    Raises:
        ValueError: if the lengths of `x`, `teacher_logits` and `y` differ.

    Example:

    >>> ds = replay_dataset(np.zeros((4, 2)), np.zeros((4, 3)), np.zeros(4), batch_size=2)
    >>> len(list(ds))
    2
    """
    lengths = {"x": len(x), "teacher_logits": len(teacher_logits)}
    if y is not None:
        lengths["y"] = len(y)
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"`x`, `teacher_logits` and `y` must have one row per example; got "
            f"lengths {lengths}."
        )
    features = make_batch(x, np.asarray(teacher_logits, np.float32))
    elements = features if y is None else (features, y)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    dataset = dataset.shuffle(lengths["x"], seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class TeacherLogits:
    """Teacher outputs on the transfer set, computed once and then reused.

    - A plain Keras teacher runs once, in one `predict` pass.
    - A `keras_kd.TeacherEnsemble` also runs once: its members' logits are stored
      and combined at each trial's temperature in memory (an arithmetic mean of
      probabilities depends on the temperature, a geometric one does not).
    - Any other teacher with `logits_at_temperature(x, temperature,
      training=False)` runs once per distinct temperature, the first time that
      temperature is asked for, never once per trial.

    Args:
        teacher: A trained `keras.Model` outputting logits, a `TeacherEnsemble`,
            or an object with `logits_at_temperature`.
        x: The transfer set's inputs (array).
        batch_size: Batch size of the teacher pass.

    Raises:
        ValueError: if `teacher` is none of these.

    Example:

    >>> teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> store = TeacherLogits(teacher, np.zeros((5, 2), "float32"))
    >>> store.for_temperature(4.0).shape, store.passes
    ((5, 3), 1)
    """

    def __init__(self, teacher, x, batch_size: int = 256):
        self._ensemble = hasattr(teacher, "member_logits") and hasattr(teacher, "mean")
        self._tempered = hasattr(teacher, "logits_at_temperature")
        if not self._tempered and not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a trained keras.Model (or a teacher with "
                f"`logits_at_temperature`), got {type(teacher).__name__}."
            )
        self.teacher = teacher
        self.x = x
        self.batch_size = int(batch_size)
        self.passes = 0
        self._store: dict[float | None, np.ndarray] = {}
        self._members = None
        if self._ensemble:
            self._members = self._batched(lambda batch: teacher.member_logits(batch))
        elif not self._tempered:
            self.passes += 1
            outputs = teacher.predict(x, batch_size=self.batch_size, verbose=0)
            self._store[None] = np.asarray(outputs, np.float32)

    def _batched(self, call) -> np.ndarray:
        """One pass of `call` over `x` in batches; counts it in `passes`."""
        self.passes += 1
        batches = tf.data.Dataset.from_tensor_slices(self.x).batch(self.batch_size)
        return np.concatenate([np.asarray(call(batch), np.float32) for batch in batches])

    def for_temperature(self, temperature: float) -> np.ndarray:
        """The stored teacher outputs to use at `temperature`.

        Args:
            temperature: The trial's temperature.

        Returns:
            Float32 array `(examples, classes)`.
        """
        key = float(temperature) if self._tempered else None
        if key not in self._store:
            if self._ensemble:
                from keras_kd.teachers import combine_logits

                combined = combine_logits(self._members, key, self.teacher.mean)
                self._store[key] = np.asarray(combined, np.float32)
            else:
                self._store[key] = self._batched(
                    lambda batch: self.teacher.logits_at_temperature(
                        batch, key, training=False
                    )
                )
        return self._store[key]


@keras.saving.register_keras_serializable(package="keras_kd")
class ExampleCounter(keras.layers.Layer):
    """Identity layer that counts the examples passing through it.

    Put it in front of the teacher to check that a search runs the teacher
    once: after `search_temperature`, `seen` equals the transfer set's size.
    The count is a non-trainable int64 variable `seen` (in the layer's
    weights), updated inside `tf.function` too. Under a `tf.distribute`
    strategy it counts every replica's examples: each call sums the replicas'
    batch sizes, so `seen` is the global count on every device. Set it back
    with `counter.seen.assign(0)`. It takes `keras.layers.Layer`'s arguments
    (`name`, ...).

    Example:

    >>> counter = ExampleCounter()
    >>> inputs = keras.Input((4,))
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> counted_teacher = keras.Model(inputs, teacher(counter(inputs)))
    >>> x = np.zeros((10, 4), "float32")
    >>> _ = counted_teacher.predict(x, batch_size=4, verbose=0)
    >>> int(counter.seen.numpy())
    10
    """

    def build(self, input_shape):
        self.seen = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            aggregation="only_first_replica",  # `call` adds the global count
            name="seen",
        )

    def call(self, inputs):
        first = keras.tree.flatten(inputs)[0]
        count = tf.cast(tf.shape(first)[0], "int64")
        # A "sum" aggregation would sum the replicas' updated values, not their
        # increments; summing the increments first keeps the count exact.
        replica = tf.distribute.get_replica_context()
        if replica is not None:  # None when called outside `strategy.run`
            count = replica.all_reduce(tf.distribute.ReduceOp.SUM, count)
        self.seen.assign_add(count)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def make_tuner(
    kind: str,
    hypermodel: DistillationHyperModel,
    *,
    max_trials: int = 10,
    max_epochs: int = 10,
    directory: str | os.PathLike = "tuning",
    project_name: str = "distillation",
    strategy: tf.distribute.Strategy | None = None,
    seed: int | None = 0,
    overwrite: bool = True,
) -> keras_tuner.Tuner:
    """A KerasTuner tuner maximising the student's validation accuracy.

    Args:
        kind: `"random"`, `"bayesian"` or `"hyperband"`.
        hypermodel: The `DistillationHyperModel` to search.
        max_trials: Trials for random and Bayesian search.
        max_epochs: Largest epoch budget of a Hyperband trial.
        directory: Folder for the tuner's trial records and checkpoints: a
            new or empty folder, or one keras-kd claimed for tuning before
            (it is claimed with `keras_kd.files.claim_folder`, kind `"tune"`).
        project_name: Sub-folder name inside `directory` (a plain name).
        strategy: Optional `tf.distribute.Strategy`; models are built and trained
            in its scope.
        seed: Random seed of the search.
        overwrite: Start afresh (KerasTuner removes `directory/project_name`)
            instead of resuming from it.

    Returns:
        A `keras_tuner.Tuner`.

    Raises:
        ValueError: for an unknown `kind`, `max_trials` < 1 or a
            `project_name` that is not a plain folder name.
        keras_kd.files.FolderNotOwnedError: (a `ValueError`) for a `directory`
            that is a file, cannot be written, belongs to another keras-kd
            writer or holds files keras-kd did not write.

    Example:

    >>> import tempfile
    >>> def build_student(width):
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> hypermodel = DistillationHyperModel(build_student, temperatures=(1, 4))
    >>> tuner = make_tuner("random", hypermodel, max_trials=3,
    ...                    directory=tempfile.mkdtemp())
    >>> type(tuner).__name__, tuner.oracle.max_trials
    ('RandomSearch', 3)
    """
    if kind not in TUNERS:
        raise ValueError(f"`kind` must be one of {TUNERS}, got {kind!r}.")
    if int(max_trials) < 1:
        raise ValueError(f"`max_trials` must be at least 1, got {max_trials!r}.")
    if Path(project_name).name != project_name or project_name in ("", ".", ".."):
        raise ValueError(
            f"`project_name` must be a plain folder name inside `directory`, got "
            f"{project_name!r}."
        )
    directory = _tune_folder(directory, "directory", create=True)
    common = {
        "objective": keras_tuner.Objective(OBJECTIVE, direction="max"),
        "directory": str(directory),
        "project_name": project_name,
        "distribution_strategy": strategy,
        "seed": seed,
        "overwrite": overwrite,
    }
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(
            hypermodel, max_trials=max_trials, **common
        )
    return keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, **common)


@dataclass
class SearchResult:
    """What `search_temperature` found.

    Attributes:
        best_hyperparameters: The best trial's values (temperature, soft_weight, ...).
        best_score: The best trial's validation accuracy.
        best_student: The best trial's trained student (`keras.Model`).
        trials: One dict per trial: id, hyperparameters, score, status.
        table: `trials` as a Markdown table, best first.
        teacher_passes: How many passes the teacher made over the transfer set.
        paths: Files written (`table`, `json`, `student`), when `output_dir` was
            given.
    """

    best_hyperparameters: dict
    best_score: float
    best_student: keras.Model
    trials: list[dict]
    table: str
    teacher_passes: int
    paths: dict[str, Path] = field(default_factory=dict)


def _trial_rows(tuner) -> list[dict]:
    trials = tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials))
    rows = []
    for trial in trials:
        row = {"trial": trial.trial_id}
        row.update(trial.hyperparameters.values)
        row = {k: v for k, v in row.items() if not k.startswith("tuner/")}
        row[OBJECTIVE] = float("nan") if trial.score is None else float(trial.score)
        row["status"] = str(trial.status).lower()
        rows.append(row)
    return rows


def _trial_distiller(hypermodel: DistillationHyperModel, teacher) -> Distiller:
    """The first trial's Distiller, after checking the teacher against its student.

    Building a `Distiller` with the teacher runs its static checks (a softmax
    at the end of the teacher, different class counts); the returned
    Distiller (teacher `None`, like every trial's) then checks the data.
    """
    distiller = hypermodel.build(keras_tuner.HyperParameters())
    if isinstance(teacher, keras.Model):
        trainable = teacher.trainable  # a Distiller freezes its teacher; trials do not
        try:
            Distiller(
                student=distiller.student,
                teacher=teacher,
                temperature=distiller.temperature,
                teacher_outputs=hypermodel.teacher_outputs,
            )
        finally:
            teacher.trainable = trainable
    return distiller


def _first_failure(tuner) -> str:
    """The last line of the first failed trial's error, as KerasTuner recorded it."""
    for trial in tuner.oracle.trials.values():
        lines = [line for line in (trial.message or "").splitlines() if line.strip()]
        if lines:
            # "keras_kd.distiller.NonFiniteLossError: ..." -> "NonFiniteLossError: ..."
            return re.sub(r"^(?:\w+\.)+(?=\w+: )", "", lines[-1].strip())
    return "no error was recorded"


def search_temperature(
    tuner: keras_tuner.Tuner,
    teacher,
    x,
    y=None,
    *,
    validation_data: tuple,
    epochs: int = 3,
    batch_size: int = 128,
    teacher_batch_size: int = 256,
    output_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> SearchResult:
    """Runs `tuner`'s search with the teacher's outputs computed once.

    Works with any KerasTuner tuner built on a `DistillationHyperModel` (see
    `make_tuner`), and under the tuner's `distribution_strategy`.

    Args:
        tuner: The tuner; its hypermodel must be a `DistillationHyperModel`.
        teacher: The trained teacher (see `TeacherLogits`).
        x: Transfer-set inputs (array).
        y: Transfer-set labels (array), or `None` for soft targets only.
        validation_data: `(x_val, y_val)`: held-out labelled data for the
            objective (the student's accuracy at `T = 1`).
        epochs: Epochs per trial (Hyperband chooses its own).
        batch_size: Training batch size.
        teacher_batch_size: Batch size of the teacher pass.
        output_dir: If given, `trials.md`, `trials.json` and `best_student.keras`
            are written there: a new or empty folder, or one keras-kd claimed
            for tuning (it may be the tuner's `directory`). It is checked
            before the first trial.
        callbacks: Extra Keras callbacks for every trial.
        verbose: Keras verbosity of each trial's `fit`.

    Returns:
        A `SearchResult`.

    Before the first trial the data and models are checked as
    `Distiller.fit` checks them (a teacher ending in a softmax, different class
    counts, labels out of range, NaN/Inf, probabilities given as logits ...),
    so such a problem is reported as the Distiller's error instead of as failed
    trials; a trial that still fails for such a reason stops the search with its
    error.

    Raises:
        ValueError: for a tuner over another hypermodel, bad `validation_data`,
            `epochs` < 1, the Distiller's errors about the data or models, or
            when no trial completed (naming the first failure).
        keras_kd.files.FolderNotOwnedError: (a `ValueError`) for an
            `output_dir` that is a file, cannot be written, belongs to another
            keras-kd writer or holds files keras-kd did not write.
        TypeError: for labels that are strings.

    Example:

    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, size=64)
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> def build_student(width):
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> hypermodel = DistillationHyperModel(build_student, temperatures=(2, 5))
    >>> tuner = make_tuner("random", hypermodel, max_trials=2,
    ...                    directory=tempfile.mkdtemp())
    >>> result = search_temperature(tuner, teacher, x[:48], y[:48],
    ...                             validation_data=(x[48:], y[48:]), epochs=1)
    >>> sorted(trial["temperature"] for trial in result.trials)
    [2.0, 5.0]
    >>> result.best_hyperparameters["temperature"] in (2.0, 5.0), result.teacher_passes
    (True, 1)
    """
    if not isinstance(tuner.hypermodel, DistillationHyperModel):
        raise ValueError(
            "`tuner` must be built on a DistillationHyperModel (see make_tuner), got "
            f"a tuner over {type(tuner.hypermodel).__name__}."
        )
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise ValueError(
            "`validation_data` must be (x_val, y_val) with labels, since the "
            f"objective is validation accuracy; got {type(validation_data).__name__}."
        )
    if int(epochs) < 1:
        raise ValueError(f"`epochs` must be at least 1, got {epochs!r}.")
    if output_dir is not None:
        _tune_folder(output_dir, "output_dir", create=False)
    checker = _trial_distiller(tuner.hypermodel, teacher)
    checker.check_data(x, y, batch_size=batch_size, training=False)
    try:
        checker.check_data(*validation_data, batch_size=batch_size, training=False)
    except (ValueError, TypeError) as error:
        raise type(error)(f"In `validation_data`: {error}") from None
    teacher_logits = TeacherLogits(teacher, x, batch_size=teacher_batch_size)
    checker.check_data(
        make_batch(x, teacher_logits.for_temperature(checker.temperature)),
        y,
        batch_size=batch_size,
    )
    try:
        tuner.search(
            x,
            y,
            teacher_logits=teacher_logits,
            batch_size=batch_size,
            epochs=int(epochs),
            validation_data=tuple(validation_data),
            callbacks=list(callbacks),
            verbose=verbose,
        )
    except RuntimeError as error:  # KerasTuner: too many failed trials in a row
        if "consecutive failures" not in str(error):
            raise
        raise ValueError(
            f"The search stopped after {tuner.oracle.max_consecutive_failed_trials} "
            f"failed trials in a row; the first: {_first_failure(tuner)}"
        ) from None
    rows = _trial_rows(tuner)
    completed = [row for row in rows if not math.isnan(row[OBJECTIVE])]
    if not completed:
        raise ValueError(
            f"No trial completed (statuses: {[r['status'] for r in rows]}); the "
            f"first failure: {_first_failure(tuner)} (the tuner's records are in "
            f"{tuner.project_dir})."
        )
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_student = tuner.load_model(best_trial).student
    table = reports.markdown_table(rows)
    paths = {}
    if output_dir is not None:
        output_dir = _tune_folder(output_dir, "output_dir", create=True)
        paths["table"] = files.atomic_write_text(output_dir / "trials.md", table)
        paths["json"] = files.atomic_write_json(
            output_dir / "trials.json",
            {"trials": rows, "teacher_passes": teacher_logits.passes},
        )
        paths["student"] = files.atomic_save_model(
            best_student, output_dir / "best_student.keras"
        )
    best = {k: v for k, v in best_trial.hyperparameters.values.items()
            if not k.startswith("tuner/")}
    return SearchResult(
        best_hyperparameters=best,
        best_score=float(best_trial.score),
        best_student=best_student,
        trials=rows,
        table=table,
        teacher_passes=teacher_logits.passes,
        paths=paths,
    )
