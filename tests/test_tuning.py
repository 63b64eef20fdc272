"""Tests of keras_kd.tuning: a tiny search that must run the teacher once."""

import json

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from conftest import two_replicas

from keras_kd import tuning


def blobs(n, seed):
    """Three separable Gaussian blobs in 4 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, 4, dtype="float32") * 3.0
    x = centres[y] + rng.normal(size=(n, 4)).astype("float32")
    return x, y.astype("int32")


def counting_teacher(x, y):
    counter = tuning.ExampleCounter()
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(16, activation="relu")(counter(inputs))
    teacher = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    teacher.compile(keras.optimizers.Adam(0.03), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=5, batch_size=32, verbose=0)
    counter.seen.assign(0)
    return teacher, counter


def build_student(width):
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(width or 8, activation="relu"),
         keras.layers.Dense(3)]
    )


def test_search_runs_teacher_once_and_saves_best(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = blobs(256, 0)
    x_val, y_val = blobs(128, 1)
    teacher, counter = counting_teacher(x, y)
    hypermodel = tuning.DistillationHyperModel(
        build_student, temperatures=(1, 4, 20), soft_weights=(0.5, 0.9), widths=(4, 8),
        optimizer=lambda: keras.optimizers.Adam(0.05),
    )
    tuner = tuning.make_tuner(
        "random", hypermodel, max_trials=3, directory=tmp_path / "tuner"
    )
    result = tuning.search_temperature(
        tuner, teacher, x, y, validation_data=(x_val, y_val), epochs=2,
        batch_size=64, output_dir=tmp_path / "out",
    )
    # 3 trials x 2 epochs, yet the teacher saw each transfer example exactly once.
    assert int(counter.seen.numpy()) == len(x)
    assert result.teacher_passes == 1
    assert len(result.trials) == 3
    assert {row["status"] for row in result.trials} == {"completed"}
    assert {row["temperature"] for row in result.trials} <= {1.0, 4.0, 20.0}
    scores = [row["val_accuracy"] for row in result.trials]
    assert scores == sorted(scores, reverse=True)
    assert result.best_score == pytest.approx(scores[0])
    assert set(result.best_hyperparameters) == {"temperature", "soft_weight", "width"}
    # The saved best student reloads and reaches the recorded best accuracy.
    student = keras.models.load_model(result.paths["student"])
    predictions = student.predict(x_val, verbose=0).argmax(-1)
    assert np.mean(predictions == y_val) == pytest.approx(result.best_score, abs=1e-6)
    assert result.best_score > 0.75  # chance is 1/3
    table = result.paths["table"].read_text()
    assert table.startswith("| trial | temperature | soft_weight | width | val_accuracy |")
    assert json.loads(result.paths["json"].read_text())["teacher_passes"] == 1


def test_tempered_teacher_runs_once_per_temperature():
    class Tempered:
        calls = []

        def logits_at_temperature(self, x, temperature, training=False):
            self.calls.append(temperature)
            return tf.ones((tf.shape(x)[0], 3)) * temperature

    store = tuning.TeacherLogits(Tempered(), np.zeros((10, 4), "float32"), batch_size=10)
    assert store.passes == 0
    np.testing.assert_allclose(store.for_temperature(2.0), 2.0)
    store.for_temperature(2.0)
    store.for_temperature(5.0)
    assert store.passes == 2 and Tempered.calls == [2.0, 5.0]


def test_search_under_mirrored_strategy(tmp_path):
    x, y = blobs(128, 2)
    teacher, counter = counting_teacher(x, y)
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    hypermodel = tuning.DistillationHyperModel(build_student, temperatures=(2, 5))
    tuner = tuning.make_tuner(
        "bayesian", hypermodel, max_trials=1, directory=tmp_path, strategy=strategy
    )
    result = tuning.search_temperature(
        tuner, teacher, x, y, validation_data=blobs(64, 3), epochs=1, batch_size=32
    )
    assert int(counter.seen.numpy()) == len(x)
    assert len(result.trials) == 1 and result.trials[0]["status"] == "completed"
    assert isinstance(result.best_student, keras.Model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperatures": (1, 0)}, "`temperatures` must hold floats > 0"),
        ({"temperatures": ()}, "`temperatures` must be a non-empty sequence"),
        ({"soft_weights": (1.5,)}, "`soft_weights` must hold floats in [0, 1]"),
        ({"widths": ("wide",)}, "`widths` must hold numbers"),
    ],
)
def test_bad_choices_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("`", "`")):
        tuning.DistillationHyperModel(build_student, **kwargs)


def test_search_refuses_other_hypermodels(tmp_path):
    tuner = keras_tuner.RandomSearch(
        lambda hp: build_student(None), objective="val_accuracy", max_trials=1,
        directory=tmp_path,
    )
    with pytest.raises(ValueError, match="must be built on a DistillationHyperModel"):
        tuning.search_temperature(tuner, None, None, validation_data=(None, None))
    with pytest.raises(ValueError, match="`kind` must be one of"):
        tuning.make_tuner("grid", tuning.DistillationHyperModel(build_student))


def test_arithmetic_ensemble_runs_once_for_all_temperatures():
    from keras_kd.teachers import TeacherEnsemble, combine_logits

    x, y = blobs(40, 4)
    members = [counting_teacher(x, y) for _ in range(2)]
    ensemble = TeacherEnsemble([m for m, _ in members], mean="arithmetic")
    store = tuning.TeacherLogits(ensemble, x, batch_size=16)
    at_2, at_5 = store.for_temperature(2.0), store.for_temperature(5.0)
    assert store.passes == 1
    assert [int(c.seen.numpy()) for _, c in members] == [len(x), len(x)]
    stacked = ensemble.member_logits(x).numpy()
    np.testing.assert_allclose(at_2, combine_logits(stacked, 2.0, "arithmetic"), atol=1e-5)
    np.testing.assert_allclose(at_5, combine_logits(stacked, 5.0, "arithmetic"), atol=1e-5)
    assert not np.allclose(at_2, at_5)  # arithmetic means depend on T


def counted_model(features=4):
    """A Dense model behind an `ExampleCounter`; returns `(model, counter)`."""
    counter = tuning.ExampleCounter(name="counter")
    inputs = keras.Input((features,))
    model = keras.Model(inputs, keras.layers.Dense(3)(counter(inputs)))
    return model, counter


def test_example_counter_counts_each_example_once_over_two_replicas():
    x, y = blobs(40, 5)  # batches of 16, 16, 8; each split over two replicas
    with two_replicas().scope():
        model, counter = counted_model()
        model.compile(
            keras.optimizers.SGD(0.1),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert int(counter.seen.numpy()) == 2 * len(x)
    counter.seen.assign(0)
    model.predict(x, batch_size=16, verbose=0)
    assert int(counter.seen.numpy()) == len(x)


def test_example_counter_counts_in_tf_function_and_is_saved_with_the_model(tmp_path):
    model, counter = counted_model()
    call = tf.function(lambda batch: model(batch))
    for size in (5, 7):
        call(tf.zeros((size, 4)))
    assert int(counter.seen.numpy()) == 12
    assert not counter.trainable_weights
    assert [w.name for w in counter.non_trainable_weights] == ["seen"]
    model.save(tmp_path / "counted.keras")
    loaded = keras.models.load_model(tmp_path / "counted.keras")  # no custom_objects
    again = loaded.get_layer("counter")
    assert type(again) is tuning.ExampleCounter and int(again.seen.numpy()) == 12
    ones = np.ones((2, 4), "float32")
    np.testing.assert_allclose(loaded(ones), model(ones), atol=1e-6)
