"""Test set-up: TensorFlow backend, quiet logs, two logical CPUs for MirroredStrategy."""

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
