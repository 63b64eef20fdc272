"""Test set-up: TensorFlow backend, quiet logs, two logical CPUs for MirroredStrategy.

The suite runs under pytest-xdist (`make test`): every worker is its own process
with its own `tmp_path_factory` folder, so fixtures write only below `tmp_path`
and subprocesses get their own folders and ports.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices let tests compare MirroredStrategy with one device. This
# must run before TensorFlow initialises its devices, hence at import time.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture
def data_dir():
    """The shared real-data folder (KERAS_KD_DATA_DIR); skips when it is not set."""
    root = os.environ.get("KERAS_KD_DATA_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("KERAS_KD_DATA_DIR is not set to the shared data folder")
    return Path(root)


def blobs(count: int, rng: np.random.Generator, features: int = 8):
    """Three well-separated Gaussian classes: `(x float32, y int32)`."""
    y = rng.integers(0, 3, count).astype("int32")
    centres = np.eye(3, features, dtype="float32") * 3.0
    return centres[y] + rng.normal(size=(count, features)).astype("float32"), y


def small_mlp(width: int, seed: int, features: int = 8) -> keras.Model:
    """`features` -> `width` ReLU -> 3 logits, initialised from `seed`."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def two_replicas() -> tf.distribute.MirroredStrategy:
    """A `MirroredStrategy` over the two logical CPUs set up above."""
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    assert strategy.num_replicas_in_sync == 2
    return strategy


def assert_two_replicas_train_as_one(
    models, distiller, data, *, log_keys, epochs, steps_per_epoch=4, batch_size=16
):
    """Trains the same distiller on one device and on `two_replicas()`, with the
    same global batch, and asserts the same student weights and logs.

    Args:
        models: `models()` -> `(teacher, student)`, new models (both runs
            start from the weights of a first call).
        distiller: `distiller(teacher, student)` -> the compiled model to fit;
            called inside each strategy's scope.
        data: A tuple of arrays, `(x, y)` or `(x, y, sample_weight)`.
        log_keys: The logged values that must agree.
        epochs, steps_per_epoch, batch_size: The schedule of both runs.
    """
    initial_teacher, initial_student = (model.get_weights() for model in models())

    def train(strategy):
        with strategy.scope():
            teacher_model, student_model = models()
            teacher_model.set_weights(initial_teacher)
            student_model.set_weights(initial_student)
            model = distiller(teacher_model, student_model)
        # A repeated dataset with a step count: an epoch that ended on the end of
        # the data would leave a collective op of one replica pending, and a
        # later strategy in the same process could collide with its key.
        batches = tf.data.Dataset.from_tensor_slices(data).batch(batch_size).repeat()
        history = model.fit(batches, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0)
        return student_model.get_weights(), history.history

    single_weights, single_logs = train(tf.distribute.get_strategy())
    mirrored_weights, mirrored_logs = train(two_replicas())
    for a, b in zip(single_weights, mirrored_weights, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)
    for key in log_keys:
        np.testing.assert_allclose(single_logs[key], mirrored_logs[key], rtol=1e-4)


TINY_FEATURES = 5


@pytest.fixture(scope="module")
def tiny_student() -> keras.Model:
    """An untrained `TINY_FEATURES` -> 8 ReLU -> 3 logits student (for exports)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((TINY_FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


@pytest.fixture
def no_conversion(monkeypatch):
    """Fails the test if an export's SavedModel or TFLite conversion starts."""
    from keras_kd import export

    def refuse(*args, **kwargs):
        raise AssertionError("a conversion ran before the bad argument was refused")

    monkeypatch.setattr(export, "convert_to_tflite", refuse)
    monkeypatch.setattr(export, "export_saved_model", refuse)


@pytest.fixture(scope="session")
def cli_files(tmp_path_factory):
    """An .npz data set, two trained teachers and an untrained student on disk."""
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    x_train, y_train = blobs(240, rng)
    x_test, y_test = blobs(90, rng)
    np.savez(
        folder / "data.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
    )
    for index in (1, 2):
        teacher = small_mlp(32, index)
        teacher.compile(
            keras.optimizers.Adam(0.02),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
        teacher.save(folder / f"teacher{index}.keras")
    small_mlp(16, 3).save(folder / "student.keras")
    return folder


def command_env(**changes) -> dict:
    """The environment for a `keras-kd` subprocess: this one without the test
    set-up's `TF_CPP_MIN_LOG_LEVEL` (so the command's own default shows), with
    `changes` applied (a value of `None` removes the variable)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONPATH")}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_command(args, *, env=None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """Runs `keras-kd ARGS` (as `python -m keras_kd.cli`) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "keras_kd.cli", *[str(a) for a in args]],
        env=command_env() if env is None else env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class NumpyIdentity(keras.layers.Layer):
    """An identity XLA cannot compile (a Python function in the graph)."""

    def call(self, x):
        y = tf.numpy_function(lambda a: a, [x], tf.float32, stateful=False)
        return tf.ensure_shape(y, x.shape)


def conv_teacher(seed=1, xla_proof=True):
    """A small 1-D convolutional teacher on 8 features."""
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((8,)),
        keras.layers.Reshape((8, 1)),
        keras.layers.Conv1D(4, 3, activation="relu"),
        keras.layers.Flatten(),
    ]
    if not xla_proof:
        layers.append(NumpyIdentity())
    return keras.Sequential([*layers, keras.layers.Dense(3)])
