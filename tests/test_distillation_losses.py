"""Distillation losses as objects: the built-ins, user losses, several with weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_two_replicas_train_as_one

from keras_kd import Distiller, losses
from keras_kd.batch import make_batch
from keras_kd.teachers import TeacherEnsemble

FEATURES, CLASSES = 6, 4


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _mlp(hidden, seed, name):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(CLASSES),
        ],
        name=name,
    )


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=n).astype("int32")
    return x, y


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class SoftmaxMSE(losses.DistillationLoss):
    """Squared distance of the two softmax distributions, scaled by `scale`."""

    def __init__(self, scale=1.0, name=None):
        super().__init__(name=name)
        self.scale = scale

    def call(self, teacher_logits, student_logits):
        p = keras.ops.softmax(teacher_logits, axis=-1)
        q = keras.ops.softmax(student_logits, axis=-1)
        return self.scale * keras.ops.sum(keras.ops.square(p - q), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class BatchMean(losses.DistillationLoss):
    """A wrong loss: reduces the batch too."""

    def call(self, teacher_logits, student_logits):
        return keras.ops.mean(keras.ops.square(teacher_logits - student_logits))


def _numpy_parts(teacher, student, x, y, temperature=3.0):
    t = keras.ops.convert_to_numpy(teacher(x)).astype("float64")
    s = keras.ops.convert_to_numpy(student(x)).astype("float64")
    p, q = _softmax(t / temperature), _softmax(s / temperature)
    kl = temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)
    mse = 2.0 * np.sum((_softmax(t) - _softmax(s)) ** 2, axis=-1)
    tc, sc = t - t.mean(-1, keepdims=True), s - s.mean(-1, keepdims=True)
    matching = 0.5 * np.mean((sc - tc) ** 2, axis=-1)
    hard = -np.log(_softmax(s)[np.arange(len(y)), y])
    return {"tempered_kl": kl, "softmax_mse": mse, "logit_matching": matching, "hard": hard}


def _fit(distiller, *args, lr=0.1, **kwargs):
    distiller.compile(optimizer=keras.optimizers.SGD(lr))
    return distiller.fit(*args, epochs=1, verbose=0, **kwargs).history


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0, 100.0])
def test_tempered_kl_object_equals_the_function(temperature):
    rng = np.random.default_rng(0)
    t = rng.normal(scale=3.0, size=(8, 10)).astype("float32")
    s = rng.normal(scale=3.0, size=(8, 10)).astype("float32")
    got = losses.TemperedKL(temperature)(t, s).numpy()
    np.testing.assert_array_equal(got, losses.tempered_kl(t, s, temperature).numpy())


def test_logit_matching_object_equals_the_function():
    rng = np.random.default_rng(1)
    t, s = rng.normal(size=(2, 8, 10)).astype("float32")
    got = losses.LogitMatching()(t, s).numpy()
    np.testing.assert_array_equal(got, losses.logit_matching(t, s).numpy())


@pytest.mark.parametrize("temperature", [0.5, 2.0, 20.0])
def test_tempered_kl_gradient_is_T_times_q_minus_p(temperature):
    rng = np.random.default_rng(2)
    t = rng.normal(scale=3.0, size=(8, 10)).astype("float32")
    s = tf.Variable(rng.normal(scale=3.0, size=(8, 10)).astype("float32"))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(losses.TemperedKL(temperature)(t, s))
    expected = temperature * (_softmax(s.numpy() / temperature) - _softmax(t / temperature))
    np.testing.assert_allclose(tape.gradient(value, s).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 100.0])
def test_tempered_kl_object_is_finite_for_extreme_mixed_precision_logits(temperature):
    t = tf.constant([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], tf.float16)
    s = tf.Variable(tf.constant([[-1e4, 1e4, 0.0], [1e4, -1e4, -5e3]], tf.float16))
    with tf.GradientTape() as tape:
        values = losses.TemperedKL(temperature)(t, s)
        total = tf.reduce_sum(values)
    assert values.dtype == tf.float32
    assert np.all(np.isfinite(values.numpy())) and np.all(values.numpy() > 0)
    assert np.all(np.isfinite(tape.gradient(total, s).numpy()))


def test_names_and_config_round_trip():
    assert losses.TemperedKL().name == "tempered_kl"
    assert losses.LogitMatching().name == "logit_matching"
    assert SoftmaxMSE().name == "softmax_mse"
    loss = SoftmaxMSE(scale=2.0, name="mse")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, SoftmaxMSE) and (clone.scale, clone.name) == (2.0, "mse")
    kl = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(losses.TemperedKL(2.5))
    )
    assert isinstance(kl, losses.TemperedKL) and kl.temperature == 2.5


def test_a_user_loss_trains_through_fit_with_logs_of_a_hand_computation():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    parts = _numpy_parts(teacher, student, x, y)
    distiller = Distiller(
        student=student, teacher=teacher, soft_weight=0.7,
        distillation_loss=SoftmaxMSE(scale=2.0),
    )
    before = student.get_weights()
    logs = _fit(distiller, x, y, batch_size=32)
    assert set(logs) == {"loss", "soft_loss", "hard_loss"}
    assert logs["soft_loss"][0] == pytest.approx(parts["softmax_mse"].mean(), rel=1e-4)
    expected = 0.7 * parts["softmax_mse"].mean() + 0.3 * parts["hard"].mean()
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert any(not np.allclose(a, b) for a, b in zip(before, student.get_weights()))


def test_the_update_is_the_gradient_of_a_user_loss():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    reference = _mlp(8, 2, "reference")
    reference.set_weights(student.get_weights())
    x, y = _data(32)
    distiller = Distiller(
        student=student, teacher=teacher, soft_weight=1.0, distillation_loss=SoftmaxMSE()
    )
    _fit(distiller, x, y, batch_size=32, lr=0.5)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(SoftmaxMSE()(teacher(x), reference(x)))
    gradients = tape.gradient(loss, reference.trainable_variables)
    for variable, gradient, trained in zip(
        reference.trainable_variables, gradients, student.trainable_variables
    ):
        np.testing.assert_allclose(trained.numpy(), variable.numpy() - 0.5 * gradient.numpy(), atol=1e-6)


def test_two_weighted_losses_are_logged_separately_and_summed():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    w = np.linspace(0.0, 2.0, 32).astype("float32")
    parts = _numpy_parts(teacher, student, x, y, temperature=3.0)
    distiller = Distiller(
        student=student, teacher=teacher, soft_weight=0.6,
        distillation_loss=[(losses.TemperedKL(3.0), 0.8), (losses.LogitMatching(), 0.2)],
    )
    assert distiller.temperature == 3.0
    logs = _fit(distiller, x, y, sample_weight=w, batch_size=32)
    kl, matching = w * parts["tempered_kl"], w * parts["logit_matching"]
    assert logs["tempered_kl_loss"][0] == pytest.approx(kl.mean(), rel=1e-4)
    assert logs["logit_matching_loss"][0] == pytest.approx(matching.mean(), rel=1e-4)
    soft = 0.8 * kl + 0.2 * matching
    assert logs["soft_loss"][0] == pytest.approx(soft.mean(), rel=1e-4)
    expected = np.mean(0.6 * soft + 0.4 * w * parts["hard"])
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-4)


def test_a_loss_of_weight_zero_is_logged_but_not_trained_on():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    parts = _numpy_parts(teacher, student, x, y)
    distiller = Distiller(
        student=student, teacher=teacher, soft_weight=1.0,
        distillation_loss=[losses.LogitMatching(), (SoftmaxMSE(2.0), 0.0)],
    )
    logs = _fit(distiller, x, y, batch_size=32)
    assert logs["softmax_mse_loss"][0] == pytest.approx(parts["softmax_mse"].mean(), rel=1e-4)
    assert logs["soft_loss"][0] == pytest.approx(parts["logit_matching"].mean(), rel=1e-4)
    assert logs["loss"][0] == pytest.approx(parts["logit_matching"].mean(), rel=1e-4)


def test_evaluate_logs_each_loss_and_resets_per_call():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    parts = _numpy_parts(teacher, student, x, y)
    distiller = Distiller(
        student=student, teacher=teacher,
        distillation_loss=["tempered_kl", (SoftmaxMSE(2.0), 0.5)], temperature=3.0,
    )
    distiller.compile(optimizer="sgd")
    for _ in range(2):
        logs = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        assert logs["tempered_kl_loss"] == pytest.approx(parts["tempered_kl"].mean(), rel=1e-4)
        assert logs["softmax_mse_loss"] == pytest.approx(parts["softmax_mse"].mean(), rel=1e-4)


def test_mirrored_strategy_gives_the_single_device_update_for_a_user_loss():
    x, y = _data(64, seed=3)
    w = np.linspace(0.5, 1.5, 64).astype("float32")

    def distiller(teacher, student):
        model = Distiller(
            student=student, teacher=teacher, soft_weight=0.6,
            distillation_loss=[(SoftmaxMSE(4.0), 0.5), (losses.TemperedKL(3.0), 0.5)],
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        return model

    assert_two_replicas_train_as_one(
        lambda: (_mlp(16, 1, "teacher"), _mlp(8, 2, "student")), distiller, (x, y, w),
        log_keys=("loss", "soft_loss", "hard_loss", "softmax_mse_loss", "tempered_kl_loss"),
        epochs=2,
    )


def test_keras_file_round_trip_with_a_custom_loss(tmp_path):
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    distiller = Distiller(
        student=student, teacher=teacher, soft_weight=0.5,
        distillation_loss=[(SoftmaxMSE(3.0, name="mse"), 0.25), losses.TemperedKL(2.0)],
    )
    _fit(distiller, x, y, batch_size=16)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.models.load_model(path)
    (mse, mse_weight), (kl, kl_weight) = loaded.distillation_losses
    assert isinstance(mse, SoftmaxMSE) and (mse.scale, mse.name, mse_weight) == (3.0, "mse", 0.25)
    assert isinstance(kl, losses.TemperedKL) and (kl.temperature, kl_weight) == (2.0, 1.0)
    assert loaded.temperature == 2.0
    expected = distiller.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    for key in ("loss", "soft_loss", "mse_loss", "tempered_kl_loss"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5)


def test_a_tempered_kl_object_sets_the_distillers_temperature():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    distiller = Distiller(student=student, teacher=teacher, distillation_loss=losses.TemperedKL(2.0))
    assert distiller.temperature == 2.0
    same = Distiller(student=student, teacher=teacher, temperature=2.0,
                     distillation_loss=losses.TemperedKL(2.0))
    assert same.temperature == 2.0
    assert Distiller(student=student, teacher=teacher).temperature == 4.0
    with pytest.raises(ValueError, match=r"temperature=3` differs.*own temperature 2"):
        Distiller(student=student, teacher=teacher, temperature=3.0,
                  distillation_loss=losses.TemperedKL(2.0))
    with pytest.raises(ValueError, match="different temperatures"):
        Distiller(student=student, teacher=teacher, distillation_loss=[
            losses.TemperedKL(2.0), losses.TemperedKL(4.0, name="kl4")])


def test_an_ensemble_teacher_is_combined_at_the_losss_temperature():
    members = [_mlp(16, seed, f"member_{seed}") for seed in (1, 2)]
    ensemble = TeacherEnsemble(members, mean="arithmetic")
    student = _mlp(8, 3, "student")
    x, y = _data(32)
    distiller = Distiller(
        student=student, teacher=ensemble, soft_weight=1.0,
        distillation_loss=losses.TemperedKL(2.0),
    )
    t = ensemble.logits_at_temperature(x, 2.0)
    expected = losses.tempered_kl(t, student(x), 2.0).numpy().mean()
    assert not np.isclose(expected, losses.tempered_kl(ensemble(x), student(x), 2.0).numpy().mean())
    logs = _fit(distiller, x, y, batch_size=32)
    assert logs["soft_loss"][0] == pytest.approx(expected, rel=1e-4)


def test_cached_ensemble_logits_are_checked_against_the_losss_temperature():
    student = _mlp(8, 3, "student")
    x, y = _data(16)
    logits = np.random.default_rng(0).normal(size=(16, CLASSES)).astype("float32")
    distiller = Distiller(student=student, teacher=None, distillation_loss=losses.TemperedKL(2.0))
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="temperature=2"):
        distiller.fit(make_batch(x, logits, temperature=4.0), y, epochs=1, verbose=0)
    distiller.fit(make_batch(x, logits, temperature=2.0), y, epochs=1, verbose=0)
    # A loss without a temperature does not depend on it: no check.
    matching = Distiller(student=student, teacher=None, distillation_loss=SoftmaxMSE())
    matching.compile(optimizer="sgd")
    matching.fit(make_batch(x, logits, temperature=4.0), y, epochs=1, verbose=0)


def test_probability_teacher_gives_user_losses_log_probabilities():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    parts = _numpy_parts(teacher, student, x, y)
    probabilities = keras.Sequential([teacher, keras.layers.Softmax()])
    distiller = Distiller(
        student=student, teacher=probabilities, teacher_outputs="probabilities",
        soft_weight=1.0, distillation_loss=SoftmaxMSE(2.0),
    )
    logs = _fit(distiller, x, y, batch_size=32)
    assert logs["soft_loss"][0] == pytest.approx(parts["softmax_mse"].mean(), rel=1e-4)


def test_a_loss_that_reduces_the_batch_is_a_clear_error():
    teacher, student = _mlp(16, 1, "teacher"), _mlp(8, 2, "student")
    x, y = _data(32)
    distiller = Distiller(student=student, teacher=teacher, distillation_loss=BatchMean())
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"'batch_mean'.*returned shape \(\).*\(batch,\)"):
        distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"one value per example"):
        BatchMean()(x[:, :4], x[:, :4])


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (keras.losses.KLDivergence(), TypeError, r"not a distillation loss.*DistillationLoss"),
        (losses.tempered_kl, TypeError, r"not a distillation loss"),
        ("kl", ValueError, r"must be one of \('tempered_kl', 'logit_matching'\)"),
        ([], ValueError, r"empty list"),
        ([(losses.LogitMatching(), 0.5, 1.0)], ValueError, r"\(loss, weight\) pair.*length 3"),
        ([(losses.LogitMatching(), -1.0)], ValueError, r"'logit_matching' must be a finite number >= 0"),
        ([(losses.LogitMatching(), 0.0)], ValueError, r"Every distillation loss has weight 0"),
        ([losses.LogitMatching(), losses.LogitMatching()], ValueError, r"named \['logit_matching'\].*distinct"),
    ],
)
def test_bad_distillation_losses_are_clear_errors(bad, error, message):
    with pytest.raises(error, match=message):
        Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), distillation_loss=bad)


def test_reserved_or_empty_names_are_refused():
    for name in ("soft", "hard", "", 3):
        with pytest.raises(ValueError, match="name"):
            losses.LogitMatching(name=name)


@pytest.mark.parametrize(
    "argument, hint",
    [
        ("distillation_losses", r"distillation_loss=\[\(TemperedKL\(4.0\), 0.7\)"),
        ("distillation_loss_weights", r"\(loss, weight\) pair"),
    ],
)
def test_keras_distillation_keywords_say_how_to_write_them(argument, hint):
    with pytest.raises(ValueError, match=hint):
        Distiller(student=_mlp(8, 2, "s"), teacher=_mlp(16, 1, "t"), **{argument: [1.0]})


def test_strings_keep_their_meaning_and_config():
    student, teacher = _mlp(8, 2, "s"), _mlp(16, 1, "t")
    matching = Distiller(student=student, teacher=teacher, temperature=7.0,
                         distillation_loss="logit_matching")
    # No loss temperature: `temperature` still combines ensembles, as in 0.1.
    assert matching.temperature == 7.0
    ((loss, weight),) = matching.distillation_losses
    assert isinstance(loss, losses.LogitMatching) and weight == 1.0
    config = matching.get_config()
    assert config["distillation_loss"] == "logit_matching"
    assert Distiller.from_config(config).temperature == 7.0
    ((kl, _),) = Distiller(student=student, teacher=teacher, temperature=5.0).distillation_losses
    assert isinstance(kl, losses.TemperedKL) and kl.temperature == 5.0
