"""What `keras-kd distill`, `tune` and `export` do with models saved as files.

Each job takes the paths and settings the command's options give, checks them
before any expensive work, and returns what the command prints.

`distill_saved_models` distils a saved, untrained student from one or more saved
teachers on a data set that `keras_kd.datasets.load_data` reads, inside a
`keras_kd.runs.RunFolder`:

- **Checked before anything is trained.** The model files must exist, the output
  folder must be new, empty or an earlier run folder (never a folder of yours),
  the data must pass `check_split`, and the examples and labels must fit the
  student's inputs and outputs.
- **Resumes after an interruption.** Training goes through
  `keras_kd.training.fit_resumable` with its backup in the run folder, over a
  data stream whose order is a function of the seed and the step; rerunning the
  same command after a kill continues at the last backup (at most
  `BACKUP_STEPS` steps, or the current epoch, are repeated).
- **Refuses other settings.** The run is fingerprinted by every setting that
  shapes the student (the content of each model file, the data: an `.npz` by
  its content, an image folder or `tfds:` set by its name; temperature, soft
  weight, schedule, seed); a rerun into the same folder with another value is
  refused with a message naming it.
- **Writes** `student.keras`, `results.md`, `results.json` (the rows and the
  per-epoch history), `curves.png` and TensorBoard logs in `logs/`, each file
  whole or not at all.

`tune_saved_models` runs `keras_kd.tuning.search_temperature` for a saved student
template; `export_saved_student` runs `keras_kd.export.export_student` for a saved
student.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_kd import commands, evaluation, files, runs
from keras_kd.datasets import load_data, locate_data
from keras_kd.datasets.location import resolve_data_dir
from keras_kd.distiller import Distiller
from keras_kd.distribute import make_strategy
from keras_kd.training import fit_resumable

RUN_NAME = "student"
BACKUP_STEPS = 500
HISTORY_FILE = "history.json"
STRATEGY_NAMES = {"auto": "auto", "one": "default", "mirrored": "mirrored"}
RESULT_COLUMNS = (
    "model",
    "test_accuracy",
    "params",
    "temperature",
    "soft_weight",
    "epochs",
    "train_seconds",
)


def distill_saved_models(
    *,
    teachers: Sequence[str | os.PathLike],
    student: str | os.PathLike,
    data: str,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    image_size: Sequence[int] = (128, 128),
    temperature: float = 4.0,
    soft_weight: float = 0.9,
    teacher_outputs: str = "logits",
    ensemble_mean: str = "geometric",
    epochs: int = 5,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    strategy: str = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
    verbose: int | str = 2,
) -> list[dict]:
    """Distils a saved student from saved teacher(s), resumably (module docstring).

    Args:
        teachers: Saved teachers (`.keras`) that output logits (or
            probabilities, see `teacher_outputs`); several form an ensemble.
        student: The saved, untrained student (`.keras`) that outputs logits.
        data: A `load_data` spec: `.npz` file, image folder or `tfds:NAME`.
        output_dir: The run folder (created; an earlier run folder is resumed).
        data_dir: Data folder for `tfds:` and relative paths.
        image_size: `(height, width)` for images from a folder.
        temperature: Distillation temperature.
        soft_weight: Weight of the soft term; the hard term gets `1 - soft_weight`.
        teacher_outputs: `"logits"` or `"probabilities"`.
        ensemble_mean: `"geometric"` or `"arithmetic"` for several teachers.
        epochs: Training epochs.
        batch_size: Global batch size.
        learning_rate: Adam learning rate.
        strategy: `"auto"`, `"one"` or `"mirrored"` (`keras_kd.distribute`).
        seed: Seed of the initial order, the data order and dropout.
        log: Where progress lines go.
        verbose: Keras verbosity of the training (`fit`'s `verbose`): 2 one
            line per epoch (default), 1 a progress bar, 0 silent.

    Returns:
        The results rows (teacher, distilled student).

    Raises:
        FileNotFoundError: for a missing model or data file.
        ValueError: for bad data, an output folder that is not a run folder,
            other settings than the folder's (`RunSettingsError`), or a
            training run that diverged to NaN.

    Example:

    >>> import tempfile
    >>> work = Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    >>> np.savez(work / "blobs.npz", x_train=x[:48], y_train=y[:48],
    ...          x_test=x[48:], y_test=y[48:])
    >>> for name in ("teacher", "student"):
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    ...     model.save(work / f"{name}.keras")
    >>> rows = distill_saved_models(teachers=[work / "teacher.keras"],
    ...     student=work / "student.keras", data=str(work / "blobs.npz"),
    ...     output_dir=work / "run", epochs=1, verbose=0)
    >>> [row["model"] for row in rows]
    ['teacher', 'distilled student']
    >>> sorted(p.name for p in (work / "run").iterdir() if p.is_file())
    ['.keras-kd.json', 'curves.png', 'results.json', 'results.md', 'student.keras']
    """
    teacher_files = [commands.require_file(p, "--teacher", ".keras") for p in teachers]
    student_file = commands.require_file(student, "--student", ".keras")
    with runs.RunFolder(output_dir) as folder:
        settings = {
            "teachers": [_model_identity(p) for p in teacher_files],
            "student": _model_identity(student_file),
            "data": _data_identity(data, data_dir),
            "image_size": [int(side) for side in image_size],
            "temperature": float(temperature),
            "soft_weight": float(soft_weight),
            "teacher_outputs": teacher_outputs,
            "ensemble_mean": ensemble_mean if len(teacher_files) > 1 else None,
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "seed": int(seed),
        }
        if folder.has_model(RUN_NAME):
            # Refuse other settings before loading anything; a new run's settings
            # are recorded only once its data and models have passed the checks.
            run = folder.model(RUN_NAME, settings)
            if run.finished:
                log(f"{folder.root} holds this finished run already; its results:")
                return run.record["rows"]
        keras.utils.set_random_seed(seed)
        splits = load_data(data, data_dir, image_size)
        with make_strategy(STRATEGY_NAMES[strategy]).scope():
            teacher = commands.load_teacher([str(p) for p in teacher_files], ensemble_mean)
            student_model = commands.load_saved_model(student_file, "--student")
            commands.check_data_fits(student_model, splits, role="student", source=data)
            commands.check_data_fits(teacher, splits, role="teacher", source=data)
            distiller = Distiller(
                student=student_model,
                teacher=teacher,
                temperature=temperature,
                soft_weight=soft_weight,
                teacher_outputs=teacher_outputs,
            )
            distiller.compile(
                optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"]
            )
        run = folder.model(RUN_NAME, settings)
        history = _train(distiller, splits, run, folder.root, settings, verbose)
        _refuse_nan_weights(student_model, learning_rate)
        rows = _results_rows(teacher, student_model, splits, settings, history)
        _write_results(folder, run, student_model, rows, history, settings)
        return rows


def tune_saved_models(
    *,
    teachers: Sequence[str | os.PathLike],
    student: str | os.PathLike,
    data: str,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    image_size: Sequence[int] = (128, 128),
    ensemble_mean: str = "geometric",
    tuner: str = "random",
    max_trials: int = 6,
    temperatures: Sequence[float] = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0),
    soft_weights: Sequence[float] = (0.9,),
    validation_fraction: float = 0.1,
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    strategy: str = "auto",
    seed: int = 0,
):
    """Searches temperature and soft weight for a saved student template.

    The teacher(s) run once over the training split; each trial trains a fresh
    copy of `student` on the stored teacher logits and is scored on a held-out
    part of the training split (`keras_kd.tuning.search_temperature`).

    Args:
        teachers: As for `distill_saved_models`.
        student: As for `distill_saved_models`.
        data: As for `distill_saved_models`.
        data_dir: As for `distill_saved_models`.
        image_size: As for `distill_saved_models`.
        ensemble_mean: As for `distill_saved_models`.
        epochs: As for `distill_saved_models`.
        batch_size: As for `distill_saved_models`.
        learning_rate: As for `distill_saved_models`.
        strategy: As for `distill_saved_models`.
        seed: As for `distill_saved_models`.
        output_dir: Folder for the tuner state, `trials.md`, `trials.json` and
            `best_student.keras` (new, empty or an earlier tune folder).
        tuner: `"random"`, `"bayesian"` or `"hyperband"`.
        max_trials: Trials for random and bayesian search.
        temperatures: Temperatures to try.
        soft_weights: Soft-term weights to try.
        validation_fraction: Part of the training split held out for scoring.

    Returns:
        `(result, test_accuracy)`: the `keras_kd.tuning` search result and the
        best student's accuracy on the test split.

    Raises:
        FileNotFoundError, ValueError: as `distill_saved_models`, and when
            `validation_fraction` leaves no training data.

    Example:

    >>> import tempfile
    >>> work = Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    >>> np.savez(work / "blobs.npz", x_train=x[:48], y_train=y[:48],
    ...          x_test=x[48:], y_test=y[48:])
    >>> for name in ("teacher", "student"):
    ...     model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    ...     model.save(work / f"{name}.keras")
    >>> result, accuracy = tune_saved_models(teachers=[work / "teacher.keras"],
    ...     student=work / "student.keras", data=str(work / "blobs.npz"),
    ...     output_dir=work / "tune", max_trials=1, temperatures=[2.0], epochs=1)
    >>> result.best_hyperparameters, 0 <= accuracy <= 1
    ({'temperature': 2.0, 'soft_weight': 0.9}, True)
    """
    from keras_kd import tuning

    commands.check_output_dir(output_dir)
    files.claim_folder(output_dir, kind="tune")
    keras.utils.set_random_seed(seed)
    splits = load_data(data, data_dir, image_size)
    x_train, y_train, x_test, y_test = splits
    held = max(1, int(round(validation_fraction * len(x_train))))
    if held >= len(x_train):
        raise ValueError(
            f"--validation-fraction {validation_fraction} leaves no training data out "
            f"of {len(x_train)} examples; use a smaller fraction."
        )
    order = np.random.default_rng(seed).permutation(len(x_train))
    fit_rows, val_rows = order[held:], order[:held]
    teacher = commands.load_teacher([os.fspath(p) for p in teachers], ensemble_mean)
    template = commands.load_saved_model(student, "--student")
    commands.check_data_fits(template, splits, role="student", source=data)
    commands.check_data_fits(teacher, splits, role="teacher", source=data)
    hypermodel = tuning.DistillationHyperModel(
        lambda width: keras.models.clone_model(template),
        temperatures=list(temperatures),
        soft_weights=list(soft_weights),
        optimizer=lambda: keras.optimizers.Adam(learning_rate),
    )
    search = tuning.make_tuner(
        tuner,
        hypermodel,
        max_trials=max_trials,
        max_epochs=epochs,
        directory=Path(output_dir) / "tuner",
        strategy=make_strategy(STRATEGY_NAMES[strategy]),
        seed=seed,
    )
    result = tuning.search_temperature(
        search,
        teacher,
        x_train[fit_rows],
        y_train[fit_rows],
        validation_data=(x_train[val_rows], y_train[val_rows]),
        epochs=epochs,
        batch_size=batch_size,
        output_dir=output_dir,
    )
    test_accuracy = evaluation.accuracy(
        evaluation.predict_logits(result.best_student, x_test, batch_size=batch_size),
        y_test,
    )
    return result, test_accuracy


def export_saved_student(
    *,
    student: str | os.PathLike,
    data: str,
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    image_size: Sequence[int] = (128, 128),
    formats: Sequence[str] | None = None,
    calibration_examples: int = 500,
    latency_examples: int = 200,
) -> dict:
    """Exports a saved student with parity reports on the data's test split.

    Args:
        student: The trained student (`.keras`).
        data: As for `distill_saved_models`; the training split calibrates
            int8, the test split measures parity.
        data_dir: As for `distill_saved_models`.
        image_size: As for `distill_saved_models`.
        output_dir: Folder for the exports (`keras_kd.export.export_student`).
        formats: Export formats (default: all of `keras_kd.export.FORMATS`).
        calibration_examples: Training examples for int8 calibration.
        latency_examples: Single-example calls timed for latency.

    Returns:
        What `keras_kd.export.export_student` returns, by format.

    Raises:
        FileNotFoundError, ValueError: for missing files, bad data, an output
            folder that cannot be used, or a model TFLite cannot convert.

    Example:

    >>> import tempfile
    >>> work = Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    >>> np.savez(work / "blobs.npz", x_train=x[:48], y_train=y[:48],
    ...          x_test=x[48:], y_test=y[48:])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student.save(work / "student.keras")
    >>> results = export_saved_student(student=work / "student.keras",
    ...     data=str(work / "blobs.npz"), output_dir=work / "export",
    ...     formats=["saved_model", "tflite_float32"])
    >>> results["tflite_float32"]["top1_agreement"]
    1.0
    """
    from keras_kd import export

    commands.check_output_dir(output_dir)
    model = commands.load_saved_model(student, "--student")
    splits = load_data(data, data_dir, image_size)
    commands.check_data_fits(model, splits, role="student", source=data)
    return export.export_student(
        model,
        output_dir,
        x_test=splits.x_test,
        y_test=splits.y_test,
        representative_data=splits.x_train,
        formats=list(formats or export.FORMATS),
        calibration_examples=calibration_examples,
        latency_examples=latency_examples,
    )


def _write_results(folder, run, student, rows, history, settings) -> None:
    """The student, the results and, last, the record that marks the run finished."""
    files.atomic_save_model(student, folder.root / "student.keras")
    curves = {
        name: [epoch[name] for epoch in history if name in epoch]
        for name in ("accuracy", "val_accuracy")
    }
    folder.write_results(
        rows,
        title="keras-kd distill",
        columns=RESULT_COLUMNS,
        curves={name: values for name, values in curves.items() if values},
        curve_label="accuracy",
        extra={"history": history, "settings": settings},
    )
    run.finish(None, {"rows": rows, "history": history})


def _model_identity(path: Path) -> dict:
    """A `.keras` file's content: its architecture and weights, not where it lives.

    `model.save` stamps the save time into the archive's `metadata.json`; that
    member is left out, so the same model saved again (or moved) is the same.
    """
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                if name == "metadata.json":
                    continue
                digest.update(name.encode() + b"\0")
                digest.update(archive.read(name))
    except zipfile.BadZipFile:
        return {"sha256": files.sha256_file(path)}  # loading it will explain
    return {"sha256": digest.hexdigest()}


def _data_identity(spec: str, data_dir) -> dict:
    """What the data is, independent of where it was found.

    An `.npz` file by its content; an image folder by its resolved location and
    the name, size and modification time of every file in it; a `tfds:` set by
    its name and the data folder it is read from.
    """
    if spec.startswith("tfds:"):
        root = resolve_data_dir(data_dir)
        return {"tfds": spec[len("tfds:"):], "data_dir": str(root) if root else None}
    path = locate_data(spec, data_dir).resolve()
    if path.is_file():
        return {"sha256": files.sha256_file(path)}
    listing = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        listing.update(
            f"{file.relative_to(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
        )
    return {"folder": str(path), "files": listing.hexdigest()}


def _train(distiller, splits, run, root: Path, settings: dict, verbose) -> list[dict]:
    x_train, y_train, x_test, y_test = splits
    epochs, batch_size, seed = settings["epochs"], settings["batch_size"], settings["seed"]
    steps_per_epoch = -(-len(x_train) // batch_size)
    dtype = distiller.student.inputs[0].dtype if distiller.student.inputs else "float32"
    history = _EpochHistory(run.folder / HISTORY_FILE)
    validation = (
        tf.data.Dataset.from_tensor_slices((x_test, y_test))
        .batch(batch_size)
        .map(lambda x, y: (tf.cast(x, dtype), y))
    )
    fit_resumable(
        distiller,
        lambda step: _training_stream(
            x_train, y_train, batch_size, seed, steps_per_epoch, epochs, step, dtype
        ),
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        backup_dir=run.backup_dir,
        save_freq=BACKUP_STEPS,
        callbacks=[history, keras.callbacks.TensorBoard(str(root / "logs"))],
        validation_data=validation,
        verbose=verbose,
    )
    return history.records


def _training_stream(x, y, batch_size, seed, steps_per_epoch, epochs, start_step, dtype):
    """Batches from global step `start_step` on; each epoch's order depends only on
    `(seed, epoch)`, so a resumed run sees the batches an uninterrupted one saw."""
    inputs, labels = tf.constant(x), tf.constant(y)
    first_epoch, offset = divmod(start_step, steps_per_epoch)

    def epoch_batches(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(x), dtype=tf.int64),
            seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    return (
        tf.data.Dataset.range(first_epoch, epochs)
        .flat_map(epoch_batches)
        .skip(offset)
        .map(
            lambda rows: (tf.cast(tf.gather(inputs, rows), dtype), tf.gather(labels, rows)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


class _EpochHistory(keras.callbacks.Callback):
    """Keeps every epoch's logs and seconds in a file, so a resumed run's history
    and training time include the epochs of earlier sessions."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.records = json.loads(path.read_text()) if path.exists() else []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - self._started}
        record.update({name: float(value) for name, value in (logs or {}).items()})
        earlier = [r for r in self.records if r["epoch"] != epoch + 1]
        self.records = sorted([*earlier, record], key=lambda r: r["epoch"])
        files.atomic_write_json(self.path, self.records)


def _refuse_nan_weights(student, learning_rate: float) -> None:
    if all(np.isfinite(weights).all() for weights in student.get_weights()):
        return
    raise ValueError(
        "Training diverged: the student's weights became NaN or infinite, so it "
        f"was not saved. Lower --learning-rate (now {learning_rate}) and run again "
        "in a new output folder."
    )


def _results_rows(teacher, student, splits, settings, history) -> list[dict]:
    _, _, x_test, y_test = splits
    teacher_count = len(settings["teachers"])
    teacher_name = (
        "teacher"
        if teacher_count == 1
        else f"teacher ensemble ({teacher_count}, {settings['ensemble_mean']})"
    )
    score = lambda model: evaluation.accuracy(  # noqa: E731
        evaluation.predict_logits(model, x_test, batch_size=settings["batch_size"]),
        y_test,
    )
    return [
        {
            "model": teacher_name,
            "test_accuracy": score(teacher),
            "params": int(teacher.count_params()),
        },
        {
            "model": "distilled student",
            "test_accuracy": score(student),
            "params": int(student.count_params()),
            "temperature": settings["temperature"],
            "soft_weight": settings["soft_weight"],
            "epochs": settings["epochs"],
            "train_seconds": round(sum(r["seconds"] for r in history), 1),
        },
    ]
