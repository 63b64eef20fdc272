"""The Distiller: its updates, its logs, distribution, saving and errors."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_two_replicas_train_as_one

from keras_kd import Distiller, losses

FEATURES, CLASSES = 6, 4


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _mlp(hidden, seed, name, final_activation=None, regularizer=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(hidden, activation="tanh", kernel_regularizer=regularizer),
            keras.layers.Dense(CLASSES, activation=final_activation),
        ],
        name=name,
    )


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=n).astype("int32")
    return x, y


def _numpy_terms(teacher, student, x, y, temperature):
    t = keras.ops.convert_to_numpy(teacher(x)).astype("float64")
    s = keras.ops.convert_to_numpy(student(x)).astype("float64")
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    soft = temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    hard = -np.log(_softmax(s)[np.arange(len(y)), y])
    accuracy = np.mean(np.argmax(s, axis=-1) == y)
    return soft, hard, accuracy


def _distiller(teacher, student, temperature=3.0, alpha=0.7, lr=0.1, **kwargs):
    distiller = Distiller(student=student, teacher=teacher, temperature=temperature, soft_weight=alpha, **kwargs)
    distiller.compile(optimizer=keras.optimizers.SGD(lr), metrics=["accuracy"])
    return distiller


def test_logged_losses_and_metrics_match_a_hand_computation():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    soft, hard, accuracy = _numpy_terms(teacher, student, x, y, 3.0)
    distiller = _distiller(teacher, student, temperature=3.0, alpha=0.7)
    # One batch: the logs are computed from the logits before the update.
    logs = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert logs["soft_loss"][0] == pytest.approx(soft.mean(), rel=1e-4)
    assert logs["hard_loss"][0] == pytest.approx(hard.mean(), rel=1e-4)
    assert logs["loss"][0] == pytest.approx(0.7 * soft.mean() + 0.3 * hard.mean(), rel=1e-4)
    assert logs["accuracy"][0] == pytest.approx(accuracy)


def test_sample_weight_is_honoured_in_update_and_logs():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    w = np.linspace(0.0, 2.0, 32).astype("float32")
    soft, hard, _ = _numpy_terms(teacher, student, x, y, 2.0)
    distiller = _distiller(teacher, student, temperature=2.0, alpha=0.5)
    logs = distiller.fit(x, y, sample_weight=w, batch_size=32, epochs=1, verbose=0).history
    # Keras' convention: mean over the batch of weight * loss.
    expected = np.mean(w * (0.5 * soft + 0.5 * hard))
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert logs["soft_loss"][0] == pytest.approx(np.mean(w * soft), rel=1e-4)


def test_update_is_the_gradient_of_the_paper_loss():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    reference = _mlp(8, 2, "reference")
    reference.set_weights(student.get_weights())
    x, y = _data(32)
    temperature, alpha, lr = 4.0, 0.8, 0.5
    with tf.GradientTape() as tape:
        s = reference(x, training=True)
        t = teacher(x, training=False)
        p = tf.nn.softmax(t / temperature)
        log_q = tf.nn.log_softmax(s / temperature)
        soft = temperature**2 * tf.reduce_sum(p * (tf.math.log(p) - log_q), axis=-1)
        hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=s)
        loss = tf.reduce_mean(alpha * soft + (1 - alpha) * hard)
    grads = tape.gradient(loss, reference.trainable_variables)
    expected = [v.numpy() - lr * g.numpy() for v, g in zip(reference.trainable_variables, grads)]
    distiller = _distiller(teacher, student, temperature=temperature, alpha=alpha, lr=lr)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    for got, want in zip(student.get_weights(), expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_teacher_is_unchanged_by_fit():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    before = [w.copy() for w in teacher.get_weights()]
    x, y = _data(64)
    distiller = _distiller(teacher, student)
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for got, want in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    assert not distiller.teacher.trainable
    assert len(distiller.trainable_variables) == len(student.trainable_variables)


def test_teacher_runs_in_inference_mode():
    keras.utils.set_random_seed(5)
    teacher = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dropout(0.99), keras.layers.Dense(CLASSES)]
    )
    student = _mlp(8, 2, "student")
    x, y = _data(32)
    t = keras.ops.convert_to_numpy(teacher(x, training=False))
    s = keras.ops.convert_to_numpy(student(x))
    p, q = _softmax(t / 2.0), _softmax(s / 2.0)
    soft = 4.0 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    logs = _distiller(teacher, student, 2.0, 1.0).fit(x, y, batch_size=32, verbose=0).history
    assert logs["soft_loss"][0] == pytest.approx(soft.mean(), rel=1e-4)


def test_unlabeled_batches_train_on_the_soft_term_alone():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    reference = _mlp(8, 2, "reference")
    reference.set_weights(student.get_weights())
    x, _ = _data(32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(losses.tempered_kl(teacher(x), reference(x), 2.0))
    grads = tape.gradient(loss, reference.trainable_variables)
    distiller = _distiller(teacher, student, temperature=2.0, alpha=0.3, lr=0.2)
    logs = distiller.fit(x, batch_size=32, epochs=1, verbose=0).history
    assert set(logs) == {"loss", "soft_loss"}
    assert logs["loss"][0] == pytest.approx(float(loss), rel=1e-4)
    for got, var, grad in zip(student.get_weights(), reference.trainable_variables, grads):
        np.testing.assert_allclose(got, var.numpy() - 0.2 * grad.numpy(), atol=1e-5)


def test_precomputed_teacher_logits_replace_the_teacher():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    twin = _mlp(8, 2, "twin")
    twin.set_weights(student.get_weights())
    x, y = _data(32)
    logits = keras.ops.convert_to_numpy(teacher(x))
    online = _distiller(teacher, student)
    online.fit(x, y, batch_size=32, verbose=0, shuffle=False)
    cached = _distiller(None, twin)
    cached.fit({"inputs": x, "teacher_logits": logits}, y, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(student.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_evaluate_reports_the_students_metrics():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(40)
    soft, hard, accuracy = _numpy_terms(teacher, student, x, y, 3.0)
    distiller = _distiller(teacher, student, temperature=3.0, alpha=0.7)
    result = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["hard_loss"] == pytest.approx(hard.mean(), rel=1e-4)
    assert result["soft_loss"] == pytest.approx(soft.mean(), rel=1e-4)
    assert result["loss"] == pytest.approx(0.7 * soft.mean() + 0.3 * hard.mean(), rel=1e-4)


def test_call_is_the_student_at_temperature_one():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, _ = _data(8)
    distiller = _distiller(teacher, student, temperature=10.0)
    np.testing.assert_allclose(distiller(x), student(x), atol=1e-6)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student(x), atol=1e-6)


def test_regularisation_losses_are_minimised_and_logged():
    teacher = _mlp(16, 1, "teacher")
    student = _mlp(8, 2, "student", regularizer=keras.regularizers.L2(0.1))
    x, y = _data(32)
    soft, hard, _ = _numpy_terms(teacher, student, x, y, 2.0)
    penalty = 0.1 * np.sum(np.square(student.layers[0].kernel.numpy()))
    logs = _distiller(teacher, student, 2.0, 0.5).fit(x, y, batch_size=32, verbose=0).history
    assert logs["loss"][0] == pytest.approx(np.mean(0.5 * soft + 0.5 * hard) + penalty, rel=1e-4)


def test_probability_teacher_matches_logit_teacher():
    teacher = _mlp(16, 1, "teacher")
    soft_teacher = keras.Sequential([teacher, keras.layers.Softmax()])
    s1, s2 = _mlp(8, 2, "s1"), _mlp(8, 2, "s2")
    x, y = _data(32)
    _distiller(teacher, s1).fit(x, y, batch_size=32, verbose=0, shuffle=False)
    d2 = _distiller(soft_teacher, s2, teacher_outputs="probabilities")
    d2.fit(x, y, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(s1.get_weights(), s2.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_logit_matching_mode_minimises_logit_matching():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    expected = losses.logit_matching(teacher(x), student(x)).numpy().mean()
    distiller = _distiller(teacher, student, alpha=1.0, distillation_loss="logit_matching")
    logs = distiller.fit(x, y, batch_size=32, verbose=0).history
    assert logs["soft_loss"][0] == pytest.approx(expected, rel=1e-4)


def test_mirrored_strategy_gives_the_single_device_update():
    """Two replicas, same global batch: same weights and same logged losses."""
    x, y = _data(64, seed=3)
    w = np.linspace(0.5, 1.5, 64).astype("float32")

    def distiller(teacher, student):
        model = Distiller(student=student, teacher=teacher, temperature=3.0, soft_weight=0.6)
        model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
        return model

    assert_two_replicas_train_as_one(
        lambda: (_mlp(16, 1, "teacher"), _mlp(8, 2, "student")), distiller, (x, y, w),
        log_keys=("loss", "soft_loss", "hard_loss", "accuracy"), epochs=3,
    )


def test_config_round_trip_and_keras_file(tmp_path):
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    distiller = _distiller(teacher, student, temperature=5.0, alpha=0.25)
    distiller.fit(x, y, batch_size=16, verbose=0)
    clone = Distiller.from_config(distiller.get_config())
    assert (clone.temperature, clone.soft_weight) == (5.0, 0.25)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Distiller)
    assert (loaded.temperature, loaded.soft_weight, loaded.teacher_outputs) == (5.0, 0.25, "logits")
    np.testing.assert_allclose(loaded(x), distiller(x), atol=1e-6)
    np.testing.assert_allclose(loaded.teacher(x), teacher(x), atol=1e-6)
    before = loaded.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(before["loss"], distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"], rtol=1e-5)
    loaded.fit(x, y, batch_size=16, verbose=0)  # compiled state came back too


def test_a_distiller_with_a_trained_compiled_teacher_reloads_quietly(tmp_path):
    """The teacher's own compile settings are not saved: reloading used to warn
    that Keras skipped the teacher's optimizer variables."""
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, verbose=0)
    distiller = _distiller(teacher, student)
    distiller.fit(x, y, batch_size=16, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.models.load_model(tmp_path / "distiller.keras")
    np.testing.assert_allclose(loaded.teacher(x), teacher(x), atol=1e-6)
    for mine, saved in zip(loaded.optimizer.variables, distiller.optimizer.variables, strict=True):
        np.testing.assert_array_equal(mine, saved)  # the student's optimizer state is back
    # A file of keras-kd 0.2 holds the teacher's compile settings: they are dropped.
    old = {**distiller.get_config(), "teacher": keras.saving.serialize_keras_object(teacher)}
    assert "compile_config" in old["teacher"]
    assert getattr(Distiller.from_config(old).teacher, "optimizer", None) is None


def test_student_saves_alone_without_the_teacher(tmp_path):
    teacher, student = _mlp(64, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    distiller = _distiller(teacher, student)
    distiller.fit(x, y, batch_size=16, verbose=0)
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.count_params() == student.count_params()
    np.testing.assert_allclose(loaded(x), distiller(x), atol=1e-6)


# ----------------------------------------------------------------- errors


def test_output_shape_mismatch_at_construction():
    teacher = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES + 1)])
    with pytest.raises(ValueError, match="output shapes differ"):
        Distiller(student=_mlp(8, 2, "student"), teacher=teacher)


def test_output_shape_mismatch_on_first_batch():
    class Subclassed(keras.Model):
        def __init__(self, classes):
            super().__init__()
            self.dense = keras.layers.Dense(classes)

        def call(self, x):
            return self.dense(x)

    x, y = _data(8)
    distiller = _distiller(Subclassed(CLASSES + 2), Subclassed(CLASSES))
    with pytest.raises(ValueError, match="output shapes differ"):
        distiller.fit(x, y, verbose=0)


@pytest.mark.parametrize("temperature", [0.0, -2.0])
def test_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), temperature=temperature)


@pytest.mark.parametrize("soft_weight", [-0.1, 1.5, "high"])
def test_bad_soft_weight(soft_weight):
    with pytest.raises(ValueError, match="soft_weight"):
        Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), soft_weight=soft_weight)


def test_softmax_teacher_when_logits_expected():
    teacher = _mlp(16, 1, "teacher", final_activation="softmax")
    with pytest.raises(ValueError, match="teacher_outputs='probabilities'"):
        Distiller(student=_mlp(8, 2, "s"), teacher=teacher)
    wrapped = keras.Sequential([_mlp(16, 1, "inner"), keras.layers.Softmax()])
    with pytest.raises(ValueError, match="softmax"):
        Distiller(student=_mlp(8, 2, "s"), teacher=wrapped)


def test_softmax_student_is_refused():
    with pytest.raises(ValueError, match="student` ends in a softmax"):
        Distiller(student=_mlp(8, 2, "s", final_activation="softmax"), teacher=_mlp(16, 1, "t"))


def test_backend_other_than_tensorflow(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend"):
        Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"))


def test_non_finite_teacher_outputs():
    x, y = _data(16)
    bad = np.full((16, CLASSES), np.nan, "float32")
    distiller = _distiller(None, _mlp(8, 2, "s"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        distiller.fit({"inputs": x, "teacher_logits": bad}, y, verbose=0)
    teacher = keras.Sequential(
        [_mlp(16, 1, "t"), keras.layers.Lambda(lambda z: z * float("inf"))]
    )
    with pytest.raises(ValueError, match="NaN or Inf"):
        _distiller(teacher, _mlp(8, 2, "s")).fit(x, y, verbose=0)


def test_probabilities_passed_as_logits():
    x, y = _data(16)
    probabilities = _softmax(np.random.default_rng(0).normal(size=(16, CLASSES))).astype("float32")
    distiller = _distiller(None, _mlp(8, 2, "s"))
    with pytest.raises(ValueError, match="look like probabilities"):
        distiller.fit({"inputs": x, "teacher_logits": probabilities}, y, verbose=0)


def test_loss_expecting_probabilities_is_refused():
    distiller = Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"))
    with pytest.raises(ValueError, match="from_logits=True"):
        distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy())


def test_one_hot_labels_with_sparse_loss():
    x, y = _data(16)
    distiller = _distiller(_mlp(16, 1, "t"), _mlp(8, 2, "s"))
    with pytest.raises(ValueError, match="look one-hot"):
        distiller.fit(x, keras.utils.to_categorical(y, CLASSES), verbose=0)


def test_missing_teacher_and_cache():
    x, y = _data(16)
    with pytest.raises(ValueError, match="no teacher"):
        _distiller(None, _mlp(8, 2, "s")).fit(x, y, verbose=0)


def test_mixed_precision_keeps_the_losses_in_float32():
    x, y = _data(32)
    teacher = _mlp(16, 1, "teacher")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        student = _mlp(8, 2, "student")
        assert student(x).dtype == "float16"
        # Teacher logits of 300 overflow float16 arithmetic if divided and
        # exponentiated there; the soft term must stay finite.
        big_teacher = keras.Sequential([teacher, keras.layers.Rescaling(300.0)])
        distiller = Distiller(student=student, teacher=big_teacher, temperature=0.5, soft_weight=0.5)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
        logs = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(v).all() for v in logs.values())
    assert logs["soft_loss"][0] > 0


def test_evaluate_loss_includes_regularisation_like_fit():
    teacher = _mlp(16, 1, "teacher")
    student = _mlp(8, 2, "student", regularizer=keras.regularizers.L2(0.1))
    x, y = _data(32)
    soft, hard, _ = _numpy_terms(teacher, student, x, y, 2.0)
    penalty = 0.1 * np.sum(np.square(student.layers[0].kernel.numpy()))
    logs = _distiller(teacher, student, 2.0, 0.5).evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(np.mean(0.5 * soft + 0.5 * hard) + penalty, rel=1e-4)
    assert logs["hard_loss"] == pytest.approx(np.mean(hard), rel=1e-4)


def test_a_loss_name_means_its_from_logits_form():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    one_hot = keras.utils.to_categorical(y, CLASSES)
    distiller = Distiller(student=student, teacher=teacher, soft_weight=0.0)
    distiller.compile(loss="binary_crossentropy")
    logs = distiller.evaluate(x, one_hot, verbose=0, return_dict=True)
    s = keras.ops.convert_to_numpy(student(x)).astype("float64")
    bce = np.mean(np.logaddexp(0.0, s) - one_hot * s, axis=-1)  # from logits
    assert logs["hard_loss"] == pytest.approx(np.mean(bce), rel=1e-4)


def test_a_loss_function_expecting_probabilities_is_refused():
    distiller = Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"))
    with pytest.raises(ValueError, match="from_logits=True"):
        distiller.compile(loss=keras.losses.categorical_crossentropy)


def test_integer_one_hot_labels_with_categorical_loss():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    distiller = Distiller(student=student, teacher=teacher, temperature=3.0, soft_weight=0.7)
    distiller.compile(loss="categorical_crossentropy")
    as_ints = distiller.evaluate(x, np.eye(CLASSES, dtype="int32")[y], verbose=0)
    as_floats = distiller.evaluate(x, np.eye(CLASSES, dtype="float32")[y], verbose=0)
    assert as_ints == pytest.approx(as_floats, rel=1e-6)


def test_alpha_one_leaves_the_hard_term_out_of_the_loss():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    soft, _, _ = _numpy_terms(teacher, student, x, y, 3.0)

    def undefined_hard_loss(labels, logits):  # 0 * NaN would spoil the loss
        return tf.fill(tf.shape(logits)[:1], np.float32("nan"))

    distiller = Distiller(student=student, teacher=teacher, temperature=3.0, soft_weight=1.0)
    distiller.compile(loss=undefined_hard_loss)
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(np.mean(soft), rel=1e-4)
    assert np.isnan(logs["hard_loss"])  # still logged, as it is


def test_config_keeps_the_dtype_policy():
    distiller = Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), dtype="mixed_float16")
    clone = Distiller.from_config(distiller.get_config())
    assert clone.dtype_policy.name == "mixed_float16"
    clone.compile(optimizer="adam")
    assert isinstance(clone.optimizer, keras.optimizers.LossScaleOptimizer)


def test_models_by_position_are_refused():
    student, teacher = _mlp(8, 2, "s"), _mlp(16, 1, "t")
    with pytest.raises(TypeError, match=r"by keyword.*Distiller\(student=student"):
        Distiller(student, teacher)


@pytest.mark.parametrize(
    "argument, hint",
    [
        ("alpha", r"soft_weight=1 - alpha"),
        ("student_loss_weight", r"soft_weight=1 - student_loss_weight"),
        ("distillation_losses", r"distillation_loss='tempered_kl'"),
    ],
)
def test_arguments_of_other_distillers_are_refused(argument, hint):
    with pytest.raises(ValueError, match=hint):
        Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), **{argument: 0.1})


def test_keras_io_compile_arguments_name_their_keras_kd_equivalent():
    distiller = Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"))
    with pytest.raises(ValueError) as error:
        distiller.compile(
            optimizer="adam",
            metrics=["accuracy"],
            student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            distillation_loss_fn=keras.losses.KLDivergence(),
            alpha=0.1,
            temperature=10,
        )
    message = str(error.value)
    for expected in (
        "student_loss_fn -> compile(loss=",
        "distillation_loss_fn -> Distiller(distillation_loss='tempered_kl')",
        "soft_weight = 1 - alpha",
        "temperature -> Distiller(temperature=",
    ):
        assert expected in message


def test_a_distiller_saved_by_version_0_1_reloads_with_its_weight():
    config = Distiller(
        student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), soft_weight=0.3
    ).get_config()
    config["alpha"] = config.pop("soft_weight")  # the 0.1 key
    assert Distiller.from_config(config).soft_weight == 0.3


def test_the_cached_logits_batch_format_is_defined_once():
    from keras_kd import batch, distiller

    # The 0.1 names stay importable from keras_kd.distiller.
    assert distiller.INPUTS == batch.INPUTS == "inputs"
    assert distiller.TEACHER_LOGITS == batch.TEACHER_LOGITS == "teacher_logits"
    assert distiller.TEACHER_TEMPERATURE == batch.TEACHER_TEMPERATURE
    x, logits = np.zeros((3, FEATURES), "float32"), np.ones((3, CLASSES), "float32")
    inputs, teacher_logits, temperature = batch.split_batch(batch.make_batch(x, logits, 2.0))
    assert inputs is x and teacher_logits is logits
    np.testing.assert_array_equal(temperature, [2.0, 2.0, 2.0])
    for student_input in ({"inputs": x}, {"input": x}):  # a student's named input
        assert batch.split_batch(student_input) == (student_input, None, None)


@pytest.mark.parametrize(
    "keys, message",
    [
        (("inputs", "teacher_logits", "labels"), r"nothing but \['inputs'"),
        (("teacher_logits",), "must hold the student's inputs under 'inputs'"),
        (("inputs", "teacher_temperature"), "has 'teacher_temperature' but no 'teacher_logits'"),
        (("input", "teacher_logits"), r"'input' \(did you mean 'inputs'\?\)"),
    ],
)
def test_malformed_cached_logits_batches_name_their_keys(keys, message):
    from keras_kd.batch import split_batch

    with pytest.raises(ValueError, match=message):
        split_batch({key: np.zeros((2, CLASSES)) for key in keys})
