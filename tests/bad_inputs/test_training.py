"""Bad inputs to the training core: each gets a clear error, none a silent result.

Every test here failed before its fix: the run trained silently (NaN weights,
truncated labels, an empty history) or stopped with TensorFlow's error from
inside the graph.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd import Distiller, tuning
from keras_kd.batch import make_batch
from keras_kd.distiller import NonFiniteLossError

FEATURES, CLASSES = 6, 4


def _mlp(seed, classes=CLASSES, activation=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(classes, activation=activation),
        ]
    )


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    return x, rng.integers(0, CLASSES, n).astype("int32")


def _distiller(teacher="mlp", jit_compile=False, **kwargs):
    teacher = _mlp(1) if teacher == "mlp" else teacher
    distiller = Distiller(student=_mlp(2), teacher=teacher, **kwargs)
    distiller.compile(optimizer="sgd", metrics=["accuracy"], jit_compile=jit_compile)
    return distiller


def _batches(x, y, size=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)


def test_fractional_labels_with_a_sparse_loss():
    x, y = _data()
    labels = y.astype("float32")
    labels[3] = 3.5  # was truncated to class 3
    with pytest.raises(ValueError, match=r"labels hold 3\.5 \(first at example 3\).*whole class ids"):
        _distiller().fit(x, labels, verbose=0)


@pytest.mark.parametrize("bad", [CLASSES, -1])
def test_labels_outside_the_classes(bad):
    x, y = _data()
    y[5] = bad  # was TensorFlow's InvalidArgumentError from inside the graph
    with pytest.raises(ValueError, match=rf"class id {bad} \(first at example 5\) outside \[0, 4\)"):
        _distiller().fit(x, y, verbose=0)


def test_labels_outside_the_classes_in_a_later_batch_of_a_dataset():
    x, y = _data()
    y[40] = CLASSES  # batch 6: TensorFlow's error in the compiled step, translated
    with pytest.raises(ValueError, match=r"class id 4 outside \[0, 4\)"):
        _distiller().fit(_batches(x, y), verbose=0)


def test_labels_outside_the_classes_in_evaluate():
    x, y = _data()
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        _distiller().evaluate(x, y + 1, verbose=0)


def test_ignored_class_is_allowed():
    x, y = _data()
    y[:4] = -1
    distiller = Distiller(student=_mlp(2), teacher=_mlp(1))
    distiller.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    )
    distiller.fit(x, y, verbose=0)


def test_string_labels():
    x, y = _data()
    names = np.array(["cat", "dog", "owl", "ant"])[y]  # was "Invalid dtype: str32"
    with pytest.raises(TypeError, match=r"labels `y` are strings.*np\.unique"):
        _distiller().fit(x, names, verbose=0)
    with pytest.raises(TypeError, match="labels are strings"):
        _distiller().fit(_batches(x, names), verbose=0)


def test_nan_labels():
    x, y = _data()
    labels = y.astype("float32")
    labels[9] = np.nan
    with pytest.raises(ValueError, match=r"labels `y` hold NaN or Inf \(first at example 9\)"):
        _distiller().fit(x, labels, verbose=0)


def test_inputs_and_labels_of_different_lengths():
    x, y = _data()  # was "Dimensions 64 and 50 are not compatible"
    with pytest.raises(ValueError, match=r"`x` has 64, `y` has 50"):
        _distiller().fit(x, y[:50], verbose=0)
    with pytest.raises(ValueError, match=r"`sample_weight` has 10"):
        _distiller().fit(x, y, sample_weight=np.ones(10), verbose=0)
    batch = make_batch(x, np.zeros((60, CLASSES), "float32"))
    with pytest.raises(ValueError, match=r"`x\['inputs'\]` has 64, `x\['teacher_logits'\]` has 60"):
        _distiller(teacher=None).fit(batch, y, verbose=0)


def test_a_single_class_warns():
    x, _ = _data()
    with pytest.warns(UserWarning, match=r"Every label is class 2 \(64 examples\)"):
        _distiller().fit(x, np.full(64, 2), verbose=0)


def test_empty_arrays():
    x, y = _data()  # was an empty history
    with pytest.raises(ValueError, match="hold no examples"):
        _distiller().fit(x[:0], y[:0], verbose=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda x, y: _batches(x, y).take(0),
        lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b > 9).batch(8),
    ],
    ids=["take-0", "filtered-to-nothing"],
)
def test_empty_dataset(make):
    x, y = _data()
    with pytest.raises(ValueError, match="dataset yields no batches"):
        _distiller().fit(make(x, y), verbose=0)


def test_nan_input_with_an_online_teacher():
    x, y = _data()
    x[10, 2] = np.nan  # trained the student to NaN weights without an error
    distiller = _distiller()
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match=r"inputs `x` hold NaN or Inf \(first at example 10\)") as error:
        distiller.fit(x, y, verbose=0)
    assert "teacher" not in str(error.value)
    for a, b in zip(before, distiller.student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # refused before the first step


def test_nan_input_with_cached_teacher_logits():
    x, y = _data()
    x[0, 0] = np.inf
    logits = np.random.default_rng(1).normal(size=(64, CLASSES)).astype("float32")
    with pytest.raises(ValueError, match=r"inputs `x\['inputs'\]` hold NaN or Inf \(first at example 0\)"):
        _distiller(teacher=None).fit(make_batch(x, logits), y, verbose=0)
    logits[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"teacher's outputs contain NaN or Inf \(first at example 6\)"):
        _distiller(teacher=None).fit(make_batch(x[1:], logits[1:]), y[1:], verbose=0)


def test_nan_input_in_a_later_batch_of_a_dataset():
    x, y = _data()
    x[30, 1] = np.nan
    with pytest.raises(ValueError, match="The inputs hold NaN or Inf") as error:
        _distiller().fit(_batches(x, y), verbose=0)
    assert "teacher" not in str(error.value)


def test_nan_input_in_a_later_batch_under_xla_stops_fit():
    x, y = _data()
    x[30, 1] = np.nan  # XLA drops the per-batch assertions; the epoch loss is NaN
    saved = []
    checkpoint = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: saved.append(1))
    with pytest.raises(NonFiniteLossError, match=r"`loss` is nan at the end of epoch 1.*jit_compile=False"):
        _distiller(jit_compile=True).fit(_batches(x, y), callbacks=[checkpoint], verbose=0)
    assert not saved  # stopped before the user's callbacks saw the epoch


def test_hidden_softmax_teacher_under_xla():
    x, y = _data()
    hidden = keras.Sequential([_mlp(1), keras.layers.Softmax(), keras.layers.Activation("linear")])
    for data in ((x, y), (_batches(x, y),)):
        with pytest.raises(ValueError, match="look like probabilities"):
            _distiller(teacher=hidden, jit_compile=True).fit(*data, verbose=0)


def test_misspelt_teacher_logits_key():
    x, y = _data()
    batch = {"inputs": x, "teacher_logit": np.zeros((64, CLASSES), "float32")}
    with pytest.raises(ValueError, match=r"'teacher_logit' \(did you mean 'teacher_logits'\?\)"):
        _distiller(teacher=None).fit(batch, y, verbose=0)


def test_validation_data_is_checked_before_training():
    x, y = _data()
    distiller = _distiller()
    before = distiller.student.get_weights()
    with pytest.raises(ValueError, match=r"In `validation_data`: .*outside \[0, 4\)"):
        distiller.fit(x, y, validation_data=(x, y + CLASSES), epochs=2, verbose=0)
    for a, b in zip(before, distiller.student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("epochs", [0, -1, 2.5])
def test_epochs_below_one(epochs):
    x, y = _data()
    with pytest.raises(ValueError, match="`epochs` must be a whole number >= 1"):
        _distiller().fit(x, y, epochs=epochs, verbose=0)


def test_check_data_checks_without_training():
    x, y = _data()
    distiller = _distiller()
    distiller.check_data(x, y)
    x[3, 3] = np.nan
    with pytest.raises(ValueError, match="first at example 3"):
        distiller.check_data(x, y)
    assert int(distiller.optimizer.iterations) == 0


def _blobs(n, seed, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n).astype("int32")
    return (np.eye(classes, 4, dtype="float32") * 3)[y] + rng.normal(size=(n, 4)).astype("float32"), y


def _student(width):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(width or 8, activation="relu"), keras.layers.Dense(3)])


def _tuner(tmp_path, **kwargs):
    hypermodel = tuning.DistillationHyperModel(_student, temperatures=(2, 4), **kwargs)
    return tuning.make_tuner("random", hypermodel, max_trials=2, directory=tmp_path)


def _teacher(classes=3, activation=None):
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(classes, activation=activation)]
    )


@pytest.mark.parametrize(
    "teacher, labels, message",
    [
        (lambda: _teacher(activation="softmax"), lambda y: y, "`teacher` ends in a softmax"),
        (
            lambda: keras.Sequential([_teacher(), keras.layers.Softmax(), keras.layers.Activation("linear")]),
            lambda y: y,
            "look like probabilities",
        ),
        (lambda: _teacher(classes=5), lambda y: y, "output shapes differ"),
        (_teacher, lambda y: y + 1, r"outside \[0, 3\)"),
    ],
    ids=["softmax-teacher", "hidden-softmax-teacher", "class-counts", "labels-out-of-range"],
)
def test_search_reports_the_distillers_error_before_any_trial(tmp_path, teacher, labels, message):
    x, y = _blobs(64, 0)  # was "No trial completed" or KerasTuner's RuntimeError
    tuner = _tuner(tmp_path)
    with pytest.raises(ValueError, match=message):
        tuning.search_temperature(
            tuner, teacher(), x, labels(y), validation_data=_blobs(32, 1), epochs=1
        )
    assert not tuner.oracle.trials


def test_a_trials_data_error_stops_the_search_with_its_message(tmp_path):
    x, y = _blobs(64, 0)
    tuner = _tuner(tmp_path)
    logits = tuning.TeacherLogits(_teacher(), x)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        tuner.search(
            x, y + 3, teacher_logits=logits, epochs=1, validation_data=_blobs(32, 1)
        )
    assert len(tuner.oracle.trials) == 1  # not three failed trials in a row


def test_probability_teacher_can_be_searched(tmp_path):
    x, y = _blobs(64, 0)
    tuner = _tuner(tmp_path, teacher_outputs="probabilities")
    result = tuning.search_temperature(
        tuner, _teacher(activation="softmax"), x, y, validation_data=_blobs(32, 1), epochs=1
    )
    assert {row["status"] for row in result.trials} == {"completed"}


def test_a_search_whose_trials_all_diverge_names_the_cause(tmp_path):
    x, y = _blobs(64, 0)
    hypermodel = tuning.DistillationHyperModel(
        _student, temperatures=(2, 4, 8), optimizer=lambda: keras.optimizers.SGD(1e30)
    )
    tuner = tuning.make_tuner("random", hypermodel, max_trials=3, directory=tmp_path)
    with pytest.raises(ValueError, match=r"3 failed trials in a row; the first: NonFiniteLossError: `(val_)?loss` is (nan|inf)"):
        tuning.search_temperature(tuner, _teacher(), x, y, validation_data=_blobs(32, 1), epochs=1)
