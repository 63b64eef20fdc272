"""Training-recipe helpers: warm-up + cosine schedule, BatchNorm momentum, resuming.

- `warmup_cosine`: the learning-rate schedule of MMRazor's ImageNet recipes (linear
  warm-up, then cosine decay to zero), driven by the optimizer's step counter, so it
  continues correctly after a restore.
- `set_batchnorm_momentum`: Keras' MobileNetV2 builds its BatchNormalization layers
  with momentum 0.999; on short schedules their moving statistics lag the weights and
  evaluation-mode accuracy stays near chance. This sets another momentum and says how
  many layers it changed.
- `ResumableBackup` and `fit_resumable`: `keras.callbacks.BackupAndRestore` restarts
  an interrupted epoch from its first batch (Keras 3.15 restores the weights and the
  epoch number only), so a run killed mid-epoch takes extra steps and ends with other
  weights than an uninterrupted one. `fit_resumable` restores the step too and feeds
  the data stream from that step, so the resumed run ends with the same weights as
  an uninterrupted run with the same seed and deterministic data.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence

import h5py
import keras
import tensorflow as tf

# The HDF5 attribute of a backup's weights file that holds its optimizer step.
_STEP_ATTRIBUTE = "keras_kd_step"


def warmup_cosine(
    peak_lr: float, total_steps: int, warmup_steps: int = 0
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to `peak_lr`, then cosine decay to 0.

    During the warm-up step `s` (from 0) uses `peak_lr * (s + 1) / (warmup_steps
    + 1)`, so the first step already learns and step `warmup_steps` is at the
    peak; the cosine decay then runs over the remaining steps.

    Args:
        peak_lr: Learning rate at the end of the warm-up.
        total_steps: Steps of the whole run (warm-up included).
        warmup_steps: Steps of the linear warm-up (0 for none).

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Raises:
        ValueError: when `peak_lr <= 0`, `total_steps < 1` or `warmup_steps` is
            not in `[0, total_steps)`.

    Example:

    >>> schedule = warmup_cosine(0.1, total_steps=100, warmup_steps=10)
    >>> round(float(schedule(10)), 4), round(float(schedule(100)), 4)
    (0.1, 0.0)
    """
    if not peak_lr > 0:
        raise ValueError(f"`peak_lr` must be > 0, got {peak_lr!r}.")
    if not total_steps >= 1:
        raise ValueError(f"`total_steps` must be >= 1, got {total_steps!r}.")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"`warmup_steps` must be in [0, total_steps={total_steps}), got "
            f"{warmup_steps!r}. Shorten the warm-up or train longer."
        )
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(peak_lr, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak_lr / (warmup_steps + 1),
        decay_steps=total_steps - warmup_steps,
        warmup_target=peak_lr,
        warmup_steps=warmup_steps,
    )


def _all_layers(model):
    """Every layer inside `model` once: nested models and wrappers included."""
    # `_flatten_layers` also walks wrappers (TimeDistributed, Bidirectional)
    # and custom layers holding layers, which `.layers` does not.
    return model._flatten_layers(include_self=False, recursive=True)


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Sets the momentum of every `BatchNormalization` layer inside `model`.

    Call it before the first `fit` (the value is read when the step is traced).

    Args:
        model: Any Keras model; nested models are searched too.
        momentum: The moving-average momentum in `(0, 1)`. 0.99 suits runs of a
            few thousand steps; Keras' MobileNetV2 default 0.999 needs far more.

    Returns:
        How many layers were changed.

    Raises:
        ValueError: when `momentum` is not in `(0, 1)`.

    Example:

    >>> student = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    >>> set_batchnorm_momentum(student, 0.99)
    52
    """
    if not 0.0 < momentum < 1.0:
        raise ValueError(
            f"`momentum` must be in (0, 1), got {momentum!r}; 0.99 suits short "
            "schedules."
        )
    changed = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            changed += 1
    return changed


def batchnorm_momenta(model: keras.Model) -> list[float]:
    """The distinct BatchNormalization momenta inside `model`, sorted.

    Args:
        model: Any Keras model.

    Returns:
        Sorted distinct momenta (empty when the model has no BatchNormalization).

    Example:

    >>> batchnorm_momenta(keras.applications.MobileNetV2(weights=None))
    [0.999]
    """
    return sorted(
        {
            float(layer.momentum)
            for layer in _all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)
        }
    )


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that also records the global step and saves at epoch ends.

    Use it through `fit_resumable`, which restores before building the data
    stream. Files in `backup_dir`: `latest.weights.h5` (model and optimizer
    variables, and the number of optimizer steps they include as the HDF5
    attribute `keras_kd_step`), `training_metadata.json` (`epoch`, `batch` and
    `step`, for people and for Keras) and, with `double_checkpoint`, the
    previous pair as `.bkp` files. The step lives inside the weights file, so
    weights and step are replaced together by one rename: a kill between the
    two writes leaves a metadata file one backup behind, and `restore` trusts
    the weights file's step.

    Args:
        backup_dir: Folder for the backup (per worker in multi-worker runs).
        save_freq: Save every this many steps (and at each epoch end).
        double_checkpoint: Keep the previous backup too, used when the latest
            one cannot be read.

    Raises:
        ValueError: when `save_freq` is not a positive integer.

    Example:

    >>> backup = ResumableBackup("/tmp/run/backup", save_freq=100)
    """

    def __init__(
        self, backup_dir: str | os.PathLike, save_freq: int, double_checkpoint=True
    ):
        if not isinstance(save_freq, int) or save_freq < 1:
            raise ValueError(
                f"`save_freq` must be a positive number of steps, got {save_freq!r}."
            )
        super().__init__(
            os.fspath(backup_dir),
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=False,
        )
        self.step = 0
        self._epoch_start_step = 0

    def restore(self, model: keras.Model) -> int:
        """Loads the latest backup into `model` (when there is one).

        Args:
            model: A built and compiled model (its optimizer state is restored
                too).

        Returns:
            The number of optimizer steps the restored weights include (0 when
            there is no backup), read from the weights file itself.

        Raises:
            ValueError: when `model` is not built, or the backup's metadata
                does not record a step (a plain `BackupAndRestore` wrote it) or
                names a step without a weights file.
            OSError: when neither the latest nor the previous backup can be read.
        """
        self.set_model(model)
        super().on_train_begin()
        # BackupAndRestore pins the model's initial epoch; fit_resumable passes
        # it explicitly instead.
        model._initial_epoch = None
        metadata = None
        if os.path.exists(self._training_metadata_path):
            with open(self._training_metadata_path) as handle:
                metadata = json.load(handle)
            if "step" not in metadata:
                raise ValueError(
                    f"The backup in {self.backup_dir} does not record its step (a "
                    "plain keras BackupAndRestore wrote it), so the data stream "
                    "cannot resume where the weights are. Delete that folder to "
                    "start again."
                )
        weights_step = None
        if os.path.exists(self._weights_path):
            weights_step = _stored_step(self._weights_path)
        elif metadata is not None and int(metadata["step"]) > 0:
            raise ValueError(
                f"The backup in {self.backup_dir} records step {metadata['step']} but "
                "holds no weights file, so training cannot resume there. Delete that "
                "folder to start again."
            )
        if weights_step is not None:
            self.step = weights_step  # authoritative: written with the weights
        else:  # no backup, or one written by keras_kd 0.1 (step in metadata only)
            self.step = 0 if metadata is None else int(metadata["step"])
        return self.step

    def on_train_begin(self, logs=None):
        """Nothing: `restore` ran before the data stream was built."""

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch
        self._epoch_start_step = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start_step + batch + 1
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._save_model()

    def _save_model(self):
        # Keras' own save writes the files in place; here each file is written
        # under a temporary name and renamed, so a kill leaves the previous
        # backup or the new one, never a truncated file or one without `step`.
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for path, previous in (
                (self._weights_path, self._prev_weights_path),
                (self._training_metadata_path, self._prev_training_metadata_path),
            ):
                if os.path.exists(path):
                    shutil.copyfile(path, previous + ".tmp")
                    os.replace(previous + ".tmp", previous)
        incoming = os.path.join(self.backup_dir, "incoming.weights.h5")
        self.model.save_weights(incoming, overwrite=True)
        with h5py.File(incoming, "r+") as weights:
            weights.attrs[_STEP_ATTRIBUTE] = self.step
        os.replace(incoming, self._weights_path)  # weights and step, at once
        self._write_metadata()

    def _write_metadata(self):
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "step": self.step,
        }
        temporary = self._training_metadata_path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(metadata, handle)
        os.replace(temporary, self._training_metadata_path)


def _stored_step(weights_path: str) -> int | None:
    """The step recorded inside a weights file, or `None` (keras_kd 0.1, Keras)."""
    with h5py.File(weights_path, "r") as weights:
        value = weights.attrs.get(_STEP_ATTRIBUTE)
    return None if value is None else int(value)


def build_before_fit(model: keras.Model, dataset: tf.data.Dataset) -> None:
    """Creates the optimizer's and compiled metrics' variables before `fit`.

    Without a distribution strategy Keras creates them while tracing the first
    train step, and `tf.function` then traces the step a second time; for a
    MobileNetV2 `Distiller` that doubles about ten seconds of tracing. Building
    from the dataset's element spec (no data is read) avoids the second trace.

    Args:
        model: A compiled model.
        dataset: The `tf.data.Dataset` that `fit` will read.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> train_batches = tf.data.Dataset.from_tensor_slices(
    ...     (tf.zeros([8, 4]), tf.zeros([8, 3]))).batch(4)
    >>> build_before_fit(model, train_batches)
    >>> model.optimizer.built
    True
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    # Keras' own pre-build (it runs it itself under a distribution strategy).
    model._symbolic_build(data_batch=dataset.element_spec)


def fit_resumable(
    model: keras.Model,
    make_dataset: Callable[[int], tf.data.Dataset],
    *,
    epochs: int,
    steps_per_epoch: int,
    backup_dir: str | os.PathLike,
    save_freq: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    validation_data=None,
    verbose="auto",
) -> list[dict]:
    """`model.fit` that resumes mid-epoch, at the step where a backup was taken.

    Restores the latest backup in `backup_dir`, asks `make_dataset(step)` for
    the data stream from that global step on, finishes the interrupted epoch
    (shorter, with the remaining steps) and runs the rest. A rerun of the same
    command after a kill therefore repeats at most `save_freq` steps and, with a
    deterministic `make_dataset`, ends with the weights of an uninterrupted run.

    Args:
        model: A built, compiled model.
        make_dataset: `start_step -> dataset` of training batches from global
            step `start_step` on (endless, or at least long enough).
        epochs: Total epochs of the run.
        steps_per_epoch: Steps in each epoch.
        backup_dir: Folder of the backup; use one per worker in multi-worker
            runs (all workers hold the same weights).
        save_freq: Back up every this many steps, and at every epoch end.
        callbacks: Further callbacks (TensorBoard, logging, ...).
        validation_data: Passed to `fit`, evaluated at each epoch end.
        verbose: Passed to `fit` (progress bars by default).

    Returns:
        The logs of the epochs run by this call, one dict per epoch (with an
        `epoch` key), empty when the backup already covers the whole run.

    Raises:
        ValueError: when `epochs` or `steps_per_epoch` is below 1, or from
            `ResumableBackup`.

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(32, 4)), rng.normal(size=(32, 1))
    >>> def make_stream(step):  # the batches from global step `step` on
    ...     return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(8).skip(step)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> backup_dir = tempfile.mkdtemp()
    >>> logs = fit_resumable(model, make_stream, epochs=2, steps_per_epoch=4,
    ...                      backup_dir=backup_dir, save_freq=2, verbose=0)
    >>> [log["epoch"] for log in logs]
    [1, 2]
    >>> fit_resumable(model, make_stream, epochs=2, steps_per_epoch=4,
    ...               backup_dir=backup_dir, save_freq=2, verbose=0)  # already done
    []
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"`epochs` and `steps_per_epoch` must be >= 1, got {epochs} and "
            f"{steps_per_epoch}."
        )
    backup = ResumableBackup(backup_dir, save_freq)
    step = backup.restore(model)
    epoch, offset = divmod(step, steps_per_epoch)
    records: list[dict] = []
    phases = []
    if epoch < epochs and offset:
        phases.append((epoch, epoch + 1, steps_per_epoch - offset))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    for first, last, steps in phases:
        if model.stop_training:
            break
        dataset = make_dataset(backup.step)
        if isinstance(dataset, tf.data.Dataset):
            build_before_fit(model, dataset)
        history = model.fit(
            dataset,
            initial_epoch=first,
            epochs=last,
            steps_per_epoch=steps,
            callbacks=[backup, *callbacks],
            validation_data=validation_data,
            shuffle=False,  # the stream shuffles itself; Keras would warn
            verbose=verbose,
        )
        for index, number in enumerate(history.epoch):
            record = {
                name: float(values[index]) for name, values in history.history.items()
            }
            records.append({"epoch": number + 1, **record})
    return records
