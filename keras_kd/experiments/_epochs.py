"""Epoch-by-epoch training that resumes exactly and records a learning curve.

The experiments' long runs (an MNIST teacher of hundreds of epochs on two CPU
cores) need three things that `keras.Model.fit` does not give together:

- **Exact resume.** After each epoch every variable of the trained model is
  saved: weights, optimizer slots and step, and the state of the layers' random
  seed generators, which draw the Dropout masks. Neither
  `keras.callbacks.BackupAndRestore` nor `keras_kd.training.ResumableBackup`
  keeps the seed generators, so a resumed dropout net draws the masks of its
  first steps again and ends elsewhere. The data pipeline is then advanced to
  where the finished epochs left it (`_ITERATORS_PER_EPOCH`), so a rerun after
  a kill continues from the last finished epoch and ends with the weights of an
  uninterrupted run (checked against a plain `fit` by the tests).
- **Whole or nothing.** Each backup is one `.npz` file named by its epoch and
  written through `keras_kd.files.atomic_path`: a kill leaves the previous
  epoch's file or the new one, never weights of one epoch with the step of
  another.
- **A learning curve while it runs.** After each epoch the caller's
  `evaluate()` (e.g. held-out and test errors) and the epoch's logs are added
  to `curve.json`, rewritten whole, *before* that epoch's backup: a kill
  between the two reruns the epoch, which writes the same entry again.

Selection on held-out data: `select="heldout_errors"` keeps the backup of the
epoch with the fewest held-out errors (the earliest on ties) and restores it at
the end, so the saved model is the one the held-out curve chose.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_kd import files
from keras_kd.training import build_before_fit

BACKUP_KIND = "epoch-backup"
CURVE_FILE = "curve.json"
_BACKUP_NAME = re.compile(r"^epoch-(\d{6})\.npz$")
# Keras 3 `fit` makes two iterators of a finite dataset per epoch: one for the
# epoch and one made as soon as it runs out (keras/src/trainers/epoch_iterator.py).
# Every new iterator of a reshuffling pipeline draws the next shuffle and random
# seeds, so resuming after k epochs first makes 2k iterators.
_ITERATORS_PER_EPOCH = 2


@dataclasses.dataclass(frozen=True)
class EpochsResult:
    """What `fit_epochs` did.

    Attributes:
        curve: One entry per finished epoch (`epoch`, `seconds`, the epoch's
            training logs and what `evaluate` returned), including epochs run
            by earlier, interrupted invocations.
        resumed_from: Epochs that a backup already covered (0: a fresh start).
        selected_epoch: The epoch whose weights the model holds now.
    """

    curve: list[dict]
    resumed_from: int
    selected_epoch: int


def _state_variables(model: keras.Model) -> list:
    """Every variable that shapes the rest of a run: the model's (weights and
    seed generators) and its optimizer's (slots and step), each once."""
    seen, variables = set(), []
    optimizer = [] if model.optimizer is None else list(model.optimizer.variables)
    for variable in [*model.variables, *optimizer]:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


class EpochBackup:
    """A folder of per-epoch `.npz` backups of a model's full training state.

    Args:
        folder: The backup folder (created; a folder holding other files is
            refused, see `keras_kd.files.claim_folder`).

    Example:

    >>> import tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> backup = EpochBackup(Path(tempfile.mkdtemp(), "backup"))
    >>> backup.save(model, epoch=3)
    >>> backup.epochs()
    [3]
    >>> backup.load(model, 3)
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = files.claim_folder(folder, kind=BACKUP_KIND)

    def _path(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:06d}.npz"

    def epochs(self) -> list[int]:
        """The epochs that have a complete backup, in increasing order."""
        found = (_BACKUP_NAME.match(path.name) for path in self.folder.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def save(self, model: keras.Model, epoch: int, keep: Sequence[int] = ()) -> None:
        """Backs up `model` after `epoch`; removes older backups not in `keep`."""
        arrays = [keras.ops.convert_to_numpy(v) for v in _state_variables(model)]
        with files.atomic_path(self._path(epoch)) as partial:
            np.savez(partial, *arrays)
        stale = [e for e in self.epochs() if e != epoch and e not in keep]
        files.remove_owned(
            self.folder, BACKUP_KIND, [self._path(e).name for e in stale]
        )

    def load(self, model: keras.Model, epoch: int) -> None:
        """Loads the backup of `epoch` into `model` (built, with its optimizer).

        Raises:
            ValueError: when the backup holds another model's variables.
        """
        variables = _state_variables(model)
        with np.load(self._path(epoch)) as stored:
            arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
        shapes = [tuple(v.shape) for v in variables]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(
                f"The backup {self._path(epoch)} holds {len(arrays)} arrays that do not "
                f"match the {len(variables)} variables of the model being trained. "
                "Delete that backup folder to start this model again."
            )
        for variable, array in zip(variables, arrays):
            variable.assign(array)

    def clear(self) -> None:
        """Removes every backup (call once the finished model is saved)."""
        names = [self._path(e).name for e in self.epochs()]
        files.remove_owned(self.folder, BACKUP_KIND, names)


def read_curve(path: str | os.PathLike) -> list[dict]:
    """The entries of a `curve.json` (empty when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return list(json.loads(path.read_text())["entries"])


def _write_curve(path: Path, entries: list[dict], epochs: int, info: Mapping) -> None:
    files.atomic_write_json(path, {**info, "epochs": epochs, "entries": entries})


def best_epoch(curve: Sequence[Mapping], key: str) -> int:
    """The epoch with the lowest `key` in `curve`, the earliest on ties.

    Entries without `key` (epochs that were not evaluated) are skipped.

    Example:

    >>> best_epoch([{"epoch": 1, "e": 5}, {"epoch": 2, "e": 3}, {"epoch": 3, "e": 3}], "e")
    2
    """
    scored = [entry for entry in curve if key in entry]
    if not scored:
        raise ValueError(f"No epoch of the curve records {key!r}.")
    best = min(scored, key=lambda entry: (entry[key], entry["epoch"]))
    return int(best["epoch"])


def _skip_epochs(dataset: tf.data.Dataset, epochs: int) -> None:
    """Advances a reshuffling dataset's seeds past `epochs` epochs of `fit`."""
    for _ in range(_ITERATORS_PER_EPOCH * epochs):
        iterator = iter(dataset)
        del iterator


class _EpochRecorder(keras.callbacks.Callback):
    """Writes the curve entry, then the backup, at the end of every epoch."""

    def __init__(self, backup, curve, curve_path, info, epochs, options):
        super().__init__()
        self.backup, self.curve, self.curve_path = backup, curve, curve_path
        self.info, self.epochs = info, epochs
        self.evaluate, self.every, self.select, self.label = options
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        entry = {
            "epoch": number,
            "seconds": round(time.perf_counter() - self.started, 2),
            **{name: float(value) for name, value in (logs or {}).items()},
        }
        if self.evaluate and (number % self.every == 0 or number == self.epochs):
            started = time.perf_counter()
            entry.update(self.evaluate())
            entry["evaluation_seconds"] = round(time.perf_counter() - started, 2)
        self.curve.append(entry)
        _write_curve(self.curve_path, self.curve, self.epochs, self.info)
        keep = [best_epoch(self.curve, self.select)] if self.select != "last" else []
        self.backup.save(self.model, number, keep=keep)
        if self.label:
            shown = ", ".join(
                f"{name} {value:g}"
                for name, value in entry.items()
                if "epoch" not in name and "seconds" not in name
            )
            print(
                f"[{self.label}] epoch {number}/{self.epochs}: {shown} "
                f"({entry['seconds']:.0f} s)",
                flush=True,
            )


def fit_epochs(
    trainer: keras.Model,
    dataset: tf.data.Dataset,
    *,
    epochs: int,
    backup_dir: str | os.PathLike,
    curve_path: str | os.PathLike,
    curve_info: Mapping | None = None,
    evaluate: Callable[[], Mapping[str, float]] | None = None,
    evaluate_every: int = 1,
    select: str = "last",
    label: str = "",
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> EpochsResult:
    """`trainer.fit(dataset, epochs=epochs)`, resumable epoch by epoch.

    Build `trainer` and `dataset` the same way on every invocation (same seeds):
    the latest backup in `backup_dir` is loaded, the dataset's shuffling is
    advanced past the finished epochs, and training continues from there. The
    result equals one uninterrupted `fit` of the same compiled model on the
    same dataset.

    Args:
        trainer: A compiled model (a `Distiller` or a plain model).
        dataset: A finite, batched `tf.data.Dataset`, reshuffled every epoch
            by its own seeded ops (as `keras_kd.datasets.mnist.mnist_dataset`).
        epochs: Epochs of the whole run.
        backup_dir: Folder of the per-epoch backups (e.g. `ModelRun.backup_dir`).
        curve_path: The `curve.json` to write after every epoch.
        curve_info: More JSON values for `curve.json` (e.g. the size of the
            evaluation sets).
        evaluate: Called after every `evaluate_every`-th epoch and the last;
            returns figures to record, e.g. `{"heldout_errors": 41,
            "test_errors": 80}`.
        evaluate_every: See `evaluate`.
        select: `"last"`, or a key of `evaluate`'s figures (lower is better)
            whose best epoch is restored at the end.
        label: Prints one line per epoch with this prefix (empty: none).
        verbose: Keras' `fit` verbosity.
        callbacks: More callbacks for `fit`.

    Returns:
        An `EpochsResult`.

    Raises:
        ValueError: for `epochs < 1`, a dataset of unknown or infinite length,
            or a backup of another model.

    Example:

    >>> import tempfile
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, size=32)
    >>> dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=0).batch(8)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile(optimizer="adam",
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> run = Path(tempfile.mkdtemp())
    >>> result = fit_epochs(model, dataset, epochs=2, backup_dir=run / "backup",
    ...                     curve_path=run / "curve.json", verbose=0)
    >>> [entry["epoch"] for entry in result.curve], result.resumed_from
    ([1, 2], 0)

    Called again (after a kill, or here with more epochs), it continues from the
    last backup instead of starting over:

    >>> result = fit_epochs(model, dataset, epochs=3, backup_dir=run / "backup",
    ...                     curve_path=run / "curve.json", verbose=0)
    >>> [entry["epoch"] for entry in result.curve], result.resumed_from
    ([1, 2, 3], 2)
    """
    if epochs < 1 or evaluate_every < 1:
        raise ValueError(
            f"`epochs` and `evaluate_every` must be >= 1, got {epochs} and "
            f"{evaluate_every}."
        )
    if int(dataset.cardinality()) < 1:
        raise ValueError(
            "fit_epochs needs a finite dataset of known length (a batched "
            "from_tensor_slices pipeline without filter or repeat)."
        )
    backup = EpochBackup(backup_dir)
    curve_path = Path(curve_path)
    build_before_fit(trainer, dataset)
    done = min(backup.epochs()[-1] if backup.epochs() else 0, epochs)
    if done:
        backup.load(trainer, done)
    curve = [entry for entry in read_curve(curve_path) if entry["epoch"] <= done]
    if done < epochs:
        _skip_epochs(dataset, done)
        recorder = _EpochRecorder(
            backup,
            curve,
            curve_path,
            dict(curve_info or {}),
            epochs,
            (evaluate, evaluate_every, select, label),
        )
        trainer.fit(
            dataset,
            initial_epoch=done,
            epochs=epochs,
            callbacks=[*callbacks, recorder],
            shuffle=False,  # the dataset shuffles itself; Keras would warn
            verbose=verbose,
        )
    selected = epochs
    if select != "last" and curve:
        selected = best_epoch(curve, select)
        if selected != epochs:
            backup.load(trainer, selected)
    return EpochsResult(curve=curve, resumed_from=done, selected_epoch=selected)
