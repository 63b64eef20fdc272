"""keras_kd.distribute: strategy choice, scaling, mixed precision, replicas and workers."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from _imagenet_folder import write_image_folder

import keras_kd
from keras_kd import distribute
from keras_kd.datasets import imagenet

WORKER_SCRIPT = Path(__file__).with_name("_multiworker_train.py")


def tf_config(workers, index=0):
    return json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    )


def test_auto_picks_multi_worker_from_tf_config_and_default_otherwise():
    two = {"TF_CONFIG": tf_config(["127.0.0.1:1", "127.0.0.1:2"])}
    assert distribute.tf_config_workers(two) == 2
    assert distribute.resolve_strategy_name("auto", two) == "multi_worker"
    one = {"TF_CONFIG": tf_config(["127.0.0.1:1"])}
    # No GPU on the test machines: one worker means the default strategy.
    assert distribute.resolve_strategy_name("auto", one) == "default"
    assert distribute.resolve_strategy_name("auto", {}) == "default"
    assert distribute.resolve_strategy_name("mirrored", two) == "mirrored"


def test_bad_names_and_settings_are_explained(monkeypatch):
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        distribute.resolve_strategy_name("tpu", {})
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.tf_config_workers({"TF_CONFIG": "{cluster"})
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="`precision` must be one of"):
        distribute.set_precision("float8")
    with pytest.raises(ValueError, match="`global_batch_size` must be > 0"):
        distribute.scaled_learning_rate(0.1, 0)


def test_batch_and_learning_rate_scale_linearly_with_replicas():
    one = distribute.configure("default", per_replica_batch_size=64, base_lr=0.1)
    two = distribute.configure("mirrored", per_replica_batch_size=64, base_lr=0.1)
    assert (one.replicas, one.global_batch_size) == (1, 64)
    assert (two.replicas, two.global_batch_size) == (2, 128)  # 2 logical CPUs
    assert two.learning_rate == pytest.approx(2 * one.learning_rate)
    assert one.learning_rate == pytest.approx(0.1 * 64 / 256)
    assert "replicas=2" in two.describe() and "128 global" in two.describe()


def tiny_model(width, classes, name):
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(width, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes),
        ],
        name=name,
    )


def distil_a_few_steps(setup, data, steps=3):
    keras.utils.set_random_seed(0)
    with setup.strategy.scope():
        student = tiny_model(4, data.num_classes, "student")
        distiller = keras_kd.Distiller(
            student=student,
            teacher=tiny_model(6, data.num_classes, "teacher"),
            temperature=2.0,
            soft_weight=0.7,
        )
        distiller.compile(
            optimizer=keras.optimizers.SGD(setup.learning_rate, momentum=0.9)
        )
    train = distribute.distributed_dataset(
        setup.strategy,
        lambda context: imagenet.train_dataset(
            data,
            image_size=12,
            global_batch_size=setup.global_batch_size,
            seed=3,
            input_context=context,
        ),
    )
    history = distiller.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    return student.get_weights(), history.history


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root, train_per_class=4, val_per_class=1, corrupt=None)
    return root


def test_mirrored_on_two_cpus_equals_one_device_at_the_same_global_batch(folder):
    data = imagenet.load_imagenet(folder)
    single = distribute.configure(
        "default", per_replica_batch_size=8, base_lr=0.4, base_batch_size=8
    )
    mirrored = distribute.configure(
        "mirrored", per_replica_batch_size=4, base_lr=0.4, base_batch_size=8
    )
    assert single.learning_rate == mirrored.learning_rate == 0.4
    weights_1, logs_1 = distil_a_few_steps(single, data)
    weights_2, logs_2 = distil_a_few_steps(mirrored, data)
    for a, b in zip(weights_1, weights_2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert logs_2["loss"][0] == pytest.approx(logs_1["loss"][0], rel=1e-5)
    keras.utils.set_random_seed(0)
    initial = tiny_model(4, data.num_classes, "student").get_weights()
    assert not np.allclose(weights_1[0], initial[0])  # the steps did change them


@pytest.fixture
def float32_afterwards():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_soft_loss_stays_float32_and_finite_under_mixed_precision(
    precision, float32_afterwards
):
    assert distribute.set_precision(precision) == precision
    keras.utils.set_random_seed(1)
    student = tiny_model(4, 5, "student")
    teacher = tiny_model(4, 5, "teacher")
    half = student(tf.zeros([1, 12, 12, 3])).dtype
    assert half == precision.split("_")[1]
    # Logits of +-60 overflow exp() in float16 / lose precision in bfloat16.
    big = tf.cast(tf.linspace(-60.0, 60.0, 5)[None, :], half)
    soft = keras_kd.tempered_kl(big, tf.reverse(big, [1]), temperature=0.5)
    assert soft.dtype == tf.float32 and bool(tf.reduce_all(tf.math.is_finite(soft)))
    distiller = keras_kd.Distiller(student=student, teacher=teacher, temperature=4.0, soft_weight=0.9)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    x = np.random.default_rng(0).uniform(0, 255, (8, 12, 12, 3)).astype("float32")
    y = np.arange(8) % 5
    logs = distiller.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(logs["soft_loss"][0]) and logs["soft_loss"][0] > 0
    assert all(w.dtype == np.float32 for w in student.get_weights())


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_match_a_single_worker(folder, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    base = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    base["PYTHONPATH"] = os.pathsep.join(sys.path)

    def launch(name, per_replica, config):
        env = dict(base, **({"TF_CONFIG": config} if config else {}))
        return subprocess.Popen(
            [
                sys.executable,
                str(WORKER_SCRIPT),
                "--data",
                str(folder),
                "--out",
                str(tmp_path / f"{name}.npz"),
                "--per-replica-batch",
                str(per_replica),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    processes = {
        f"worker{i}": launch(f"worker{i}", 4, tf_config(workers, i)) for i in range(2)
    }
    processes["single"] = launch("single", 8, None)
    outputs = {}
    for name, process in processes.items():
        try:
            outputs[name] = process.communicate(timeout=240)[0]
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            pytest.fail(f"{name} did not finish in 240 s")
        assert process.returncode == 0, f"{name} failed:\n{outputs[name][-3000:]}"
    assert "strategy=multi_worker replicas=2 workers=2" in outputs["worker0"]
    assert "(this is worker 1)" in outputs["worker1"]
    assert "strategy=default replicas=1" in outputs["single"]
    loaded = {name: np.load(tmp_path / f"{name}.npz") for name in processes}
    for key in loaded["single"].files:
        np.testing.assert_array_equal(loaded["worker0"][key], loaded["worker1"][key])
        np.testing.assert_allclose(
            loaded["worker0"][key], loaded["single"][key], rtol=1e-5, atol=1e-6
        )
