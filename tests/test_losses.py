"""keras_kd.losses against the paper's equations and a NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from keras_kd import losses


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_tempered_kl(t, s, temperature):
    t, s = np.float64(t), np.float64(s)
    p = _softmax(t / temperature)
    q = _softmax(s / temperature)
    return temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def _gradient(fn, student_logits):
    s = tf.Variable(student_logits)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(fn(s))
    return tape.gradient(value, s).numpy()


def test_values_match_numpy_reference():
    t = np.array([[2.0, -1.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0]], "float32")
    s = np.array([[1.0, 1.0, -2.0, 0.5], [4.0, -4.0, 1.0, 0.0]], "float32")
    for temperature in (0.5, 1.0, 4.0, 20.0):
        got = losses.tempered_kl(t, s, temperature).numpy()
        np.testing.assert_allclose(got, _numpy_tempered_kl(t, s, temperature), rtol=5e-5, atol=1e-6)


def test_hand_computed_value():
    # T = 1, two classes: p = softmax([0, 0]) = (1/2, 1/2); q = softmax([0, ln 3]) = (1/4, 3/4).
    # KL = 1/2 ln(2) + 1/2 ln(2/3).
    got = losses.tempered_kl([[0.0, 0.0]], [[0.0, np.log(3.0)]], 1.0).numpy()[0]
    assert got == pytest.approx(0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 5.0, 20.0])
def test_gradient_is_T_times_q_minus_p(temperature):
    """Paper eq. 2 times the T^2 factor: dC/dz_i = T (q_i - p_i)."""
    rng = np.random.default_rng(1)
    t = rng.normal(scale=3.0, size=(8, 10)).astype("float32")
    s = rng.normal(scale=3.0, size=(8, 10)).astype("float32")
    grad = _gradient(lambda v: losses.tempered_kl(t, v, temperature), s)
    expected = temperature * (_softmax(s / temperature) - _softmax(t / temperature))
    np.testing.assert_allclose(grad, expected, atol=1e-5)


def test_high_temperature_gradient_approaches_logit_matching():
    """Paper eq. 4: at high T with zero-meaned logits, dC/dz_i -> (z_i - v_i) / N."""
    rng = np.random.default_rng(2)
    n = 10
    v = rng.normal(size=(16, n)).astype("float32")
    z = rng.normal(size=(16, n)).astype("float32")
    v -= v.mean(axis=-1, keepdims=True)
    z -= z.mean(axis=-1, keepdims=True)
    limit = (z - v) / n
    grad_100 = _gradient(lambda s: losses.tempered_kl(v, s, 100.0), z)
    grad_10 = _gradient(lambda s: losses.tempered_kl(v, s, 10.0), z)
    error_100 = np.abs(grad_100 - limit).max()
    # Stated tolerance: within 2% of the largest limit component at T = 100, and the
    # error shrinks as T grows (the approximation is first order in 1/T).
    assert error_100 < 0.02 * np.abs(limit).max()
    assert error_100 < np.abs(grad_10 - limit).max() / 5
    # logit_matching has exactly the limit gradient.
    grad_lm = _gradient(lambda s: losses.logit_matching(v, s), z)
    np.testing.assert_allclose(grad_lm, limit, atol=1e-6)


def test_logit_matching_ignores_logit_offsets():
    v = np.array([[1.0, 2.0, 3.0]], "float32")
    z = np.array([[11.0, 12.0, 13.0]], "float32")
    assert losses.logit_matching(v, z).numpy()[0] == pytest.approx(0.0, abs=1e-6)
    # 0.5 * mean of squared differences of centred logits, by hand: centred v = (-1, 0, 1),
    # centred z2 = (0, 0, 0) -> 0.5 * (1 + 0 + 1) / 3.
    z2 = np.array([[5.0, 5.0, 5.0]], "float32")
    assert losses.logit_matching(v, z2).numpy()[0] == pytest.approx(1.0 / 3.0, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 100.0])
def test_finite_for_extreme_logits(temperature):
    t = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], "float32")
    s = np.array([[-1e4, 1e4, 0.0], [1e4, -1e4, -5e3]], "float32")
    values = losses.tempered_kl(t, s, temperature).numpy()
    grad = _gradient(lambda v: losses.tempered_kl(t, v, temperature), s)
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert np.all(np.isfinite(grad))


def test_probability_outputs_equal_logit_outputs():
    rng = np.random.default_rng(3)
    t = rng.normal(size=(4, 6)).astype("float32")
    s = rng.normal(size=(4, 6)).astype("float32")
    from_logits = losses.tempered_kl(t, s, 3.0).numpy()
    from_probs = losses.tempered_kl(_softmax(t), s, 3.0, teacher_outputs="probabilities").numpy()
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-4, atol=1e-6)


def test_loss_class_reduces_and_serialises():
    import keras

    rng = np.random.default_rng(4)
    t = rng.normal(size=(5, 3)).astype("float32")
    s = rng.normal(size=(5, 3)).astype("float32")
    loss = losses.TemperedKLDivergence(temperature=2.0)
    assert float(loss(t, s)) == pytest.approx(_numpy_tempered_kl(t, s, 2.0).mean(), rel=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, losses.TemperedKLDivergence) and clone.temperature == 2.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "hot", None])
def test_bad_temperature_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="temperature"):
        losses.tempered_kl([[0.0, 1.0]], [[0.0, 1.0]], bad)


def test_unknown_teacher_outputs_is_a_clear_error():
    with pytest.raises(ValueError, match="teacher_outputs"):
        losses.tempered_kl([[0.0, 1.0]], [[0.0, 1.0]], 2.0, teacher_outputs="softmax")
