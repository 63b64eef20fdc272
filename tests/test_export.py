"""Tests of keras_kd.export: SavedModel / TFLite parity and refusals."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import export


@pytest.fixture(scope="module")
def problem():
    """A small trained student on 3 Gaussian blobs in 6 dimensions, inputs in [0, 1]."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600).astype("int32")
    centres = rng.uniform(0.2, 0.8, (3, 6)).astype("float32")
    x = np.clip(centres[y] + 0.08 * rng.normal(size=(600, 6)), 0, 1).astype("float32")
    keras.utils.set_random_seed(0)
    student = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),  # > 1024 weights: quantised
            keras.layers.Dense(3),
        ]
    )
    student.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    student.fit(x[:400], y[:400], epochs=15, batch_size=32, verbose=0)
    return student, x[:400], x[400:], y[400:]


@pytest.fixture(scope="module")
def exported(problem, tmp_path_factory):
    student, x_train, x_test, y_test = problem
    folder = tmp_path_factory.mktemp("export")
    results = export.export_student(
        student, folder, x_test=x_test, y_test=y_test,
        representative_data=x_train, latency_examples=20,
    )
    return folder, results


def test_saved_model_and_float32_match_keras(problem, exported):
    student, _, x_test, y_test = problem
    folder, results = exported
    reference = student.predict(x_test, verbose=0)
    serve = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    (name,) = serve.structured_input_signature[1]
    (served,) = serve(**{name: tf.constant(x_test)}).values()
    np.testing.assert_allclose(served.numpy(), reference, atol=1e-4)
    lite = export.TFLiteRunner(folder / "student_float32.tflite").predict(x_test)
    np.testing.assert_allclose(lite, reference, atol=1e-4)
    for name in ("saved_model", "tflite_float32"):
        report = results[name]
        assert report["max_abs_logit_diff"] < 1e-4
        assert report["top1_agreement"] == 1.0
        assert report["accuracy"] == pytest.approx(report["keras_accuracy"])
        assert report["keras_accuracy"] > 0.9
        assert report["examples"] == len(x_test)


def test_int8_exports_run_and_report(problem, exported):
    _, _, x_test, _ = problem
    folder, results = exported
    for name, file in (
        ("tflite_dynamic_int8", "student_dynamic_int8.tflite"),
        ("tflite_int8", "student_int8.tflite"),
    ):
        report = results[name]
        assert report["path"].endswith(file)
        assert report["size_bytes"] == (folder / file).stat().st_size
        assert report["size_bytes"] < results["tflite_float32"]["size_bytes"]
        assert report["size_ratio_vs_float32_tflite"] > 1.0
        assert report["latency_ms_per_example"] > 0
        # Quantised, so not bit-exact, but close and almost always the same class.
        assert 0 < report["max_abs_logit_diff"] < 0.5
        assert report["top1_agreement"] >= 0.95
        saved = json.loads((folder / f"{file[:-7]}.parity.json").read_text())
        assert saved["top1_agreement"] == report["top1_agreement"]
    runner = export.TFLiteRunner(folder / "student_int8.tflite")
    details = runner.interpreter.get_input_details()[0]
    assert details["dtype"] == np.int8  # full-integer: int8 input and output
    assert runner.predict(x_test[:3]).dtype == np.float32
    table = (folder / "parity.md").read_text().splitlines()
    assert table[0].startswith("| format | top1_agreement | max_abs_logit_diff")
    assert len(table) == 2 + 4


class BesselLayer(keras.layers.Layer):
    """Uses an op (BesselI0e) that has no TFLite builtin kernel."""

    def call(self, x):
        return tf.math.bessel_i0e(x)


def test_unconvertible_model_is_refused_without_writing(tmp_path, problem):
    _, _, x_test, _ = problem
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(BesselLayer()(inputs)))
    with pytest.raises(ValueError, match=r"no builtin kernel for the op\(s\) BesselI0e"):
        export.export_student(model, tmp_path / "out", x_test=x_test)
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused(problem, tmp_path):
    student, _, x_test, _ = problem
    with pytest.raises(ValueError, match="`formats` must be a non-empty list"):
        export.export_student(student, tmp_path, x_test=x_test, formats=["onnx"])
    with pytest.raises(ValueError, match="`representative_data` is required"):
        export.convert_to_tflite(student, "int8")
    with pytest.raises(ValueError, match="`quantization` must be one of"):
        export.convert_to_tflite(student, "float16")
    with pytest.raises(ValueError, match="must match"):
        export.parity_metrics(np.zeros((2, 3)), np.zeros((2, 4)))


def test_float64_inputs_and_one_hot_labels_are_accepted(problem, tmp_path):
    student, _, x_test, y_test = problem
    one_hot = np.eye(3, dtype="float32")[y_test]
    results = export.export_student(
        student, tmp_path, x_test=x_test.astype("float64"), y_test=one_hot,
        formats=["saved_model", "tflite_float32"], latency_examples=5,
    )  # fmt: skip
    accuracy = np.mean(student.predict(x_test, verbose=0).argmax(-1) == y_test)
    for name in ("saved_model", "tflite_float32"):
        assert results[name]["top1_agreement"] == 1.0
        assert results[name]["accuracy"] == pytest.approx(accuracy)
    with pytest.raises(ValueError, match="labels for"):
        export.parity_metrics(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros(5))


def test_dynamic_input_length_exports_and_runs(tmp_path):
    inputs = keras.Input((None, 2))
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    x = np.random.default_rng(0).normal(size=(6, 5, 2)).astype("float32")
    results = export.export_student(
        model, tmp_path, x_test=x, formats=["tflite_float32"], latency_examples=3
    )
    assert results["tflite_float32"]["max_abs_logit_diff"] < 1e-4


def test_subclassed_student_gets_the_functional_hint():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="wrap it in a functional keras.Model"):
        export.export_student(Subclassed(), "unused", x_test=np.zeros((1, 2)))
